"""Transactional outbox: an event is written in the same transaction as the change it
announces, and :class:`OutboxPublisher` publishes it afterwards.

A crash between commit and publish loses nothing (the row is still unpublished) and a crash
between publish and marking it published repeats the publish with the same key, which
JetStream drops as a duplicate (deterministic ``Nats-Msg-Id``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.orm import Session

from tunewright.core.bus import decode_event
from tunewright.registry.db import Database
from tunewright.registry.models import OutboxEvent

log = logging.getLogger(__name__)

# publish(subject, message, *, key, correlation_id, workspace)
Publish = Callable[..., Awaitable[object]]


def enqueue(
    session: Session,
    subject: str,
    message: Message,
    *,
    key: str,
    workspace: str = "",
    correlation_id: str = "",
) -> None:
    session.add(
        OutboxEvent(
            subject=subject,
            key=key,
            message_type=message.DESCRIPTOR.full_name,
            payload=message.SerializeToString(deterministic=True),
            workspace=workspace,
            correlation_id=correlation_id,
        )
    )


class OutboxPublisher:
    def __init__(self, db: Database, publish: Publish, *, poll_s: float = 0.2) -> None:
        self.db = db
        self.publish = publish
        self.poll_s = poll_s
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Publish pending events forever (until cancelled); wakes early on :attr:`wake`."""
        while True:
            try:
                sent = await self.publish_pending()
            except Exception:
                log.warning("outbox publish failed; retrying", exc_info=True)
                sent = 0
            if sent == 0:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.poll_s)
                except TimeoutError:
                    pass

    async def publish_pending(self, limit: int = 100) -> int:
        rows = await asyncio.to_thread(self._pending, limit)
        for row in rows:
            await self.publish(
                row.subject,
                decode_event(row.message_type, row.payload),
                key=row.key,
                correlation_id=row.correlation_id or None,
                workspace=row.workspace or None,
            )
            await asyncio.to_thread(self._mark, row.seq)
        return len(rows)

    def _pending(self, limit: int) -> list[OutboxEvent]:
        with self.db.transaction() as session:
            query = (
                select(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.seq)
                .limit(limit)
            )
            return list(session.scalars(query))

    def _mark(self, seq: int) -> None:
        with self.db.transaction() as session:
            row = session.get(OutboxEvent, seq)
            if row is not None:
                row.published_at = datetime.now(UTC)
