"""Answered requests on their way to the monitor, waiting a moment for their feedback.

The monitor takes an interaction once (its event's message id derives from the interaction
id), so the feedback a user gives right after an answer (thumbs, escalated, resolved) has to
travel with it. Every answer therefore waits here for ``grace_s`` before it is published as a
``tw.traffic.interaction.logged`` event; feedback that arrives in that time is attached, and
feedback for an interaction already published is refused with a clear reason rather than
counted twice. Raw text lives only in this bounded buffer (and then in the TW_TRAFFIC stream
until the monitor's ingest path scrubs it); logs never carry it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from tunewright.core.errors import Conflict, InvalidArgument, NotFound

log = logging.getLogger(__name__)

RECENTLY_PUBLISHED = 50_000


@dataclass
class Interaction:
    interaction_id: str
    workspace: str
    model_version_id: str
    prompt: str
    response: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    thumbs: int = 0
    escalated: bool = False
    resolved: bool = False
    #: wall-clock time of the answer (seconds since the epoch)
    at: float = field(default_factory=time.time)
    due: float = 0.0


Publish = Callable[[Interaction], Awaitable[None]]


class InteractionLog:
    def __init__(self, publish: Publish, *, grace_s: float, max_pending: int) -> None:
        self.publish = publish
        self.grace_s = grace_s
        self.max_pending = max_pending
        self._pending: OrderedDict[str, Interaction] = OrderedDict()
        self._published: deque[str] = deque(maxlen=RECENTLY_PUBLISHED)
        self._published_set: set[str] = set()
        self._wake = asyncio.Event()
        #: counters for tests and status
        self.logged = 0

    def record(self, item: Interaction) -> None:
        item.due = time.monotonic() + self.grace_s
        self._pending[item.interaction_id] = item
        self._wake.set()

    def feedback(
        self,
        interaction_id: str,
        *,
        thumbs: int = 0,
        escalated: bool = False,
        resolved: bool = False,
        workspace: str = "default",
    ) -> None:
        if thumbs not in (-1, 0, 1):
            raise InvalidArgument(f"thumbs must be -1, 0 or +1, got {thumbs}")
        item = self._pending.get(interaction_id)
        if item is None or item.workspace != workspace:
            if interaction_id in self._published_set:
                raise Conflict(
                    f"the interaction {interaction_id} was already handed to the monitor "
                    f"(feedback is taken for {self.grace_s:g} s after the answer)",
                    reason="FEEDBACK_TOO_LATE",
                )
            raise NotFound(
                f"no answered request {interaction_id!r} in workspace {workspace!r}",
                reason="COMPLETION_NOT_FOUND",
            )
        if thumbs:
            item.thumbs = thumbs
        item.escalated = item.escalated or escalated
        item.resolved = item.resolved or resolved

    async def run(self) -> None:
        """Publish interactions as their grace period ends (the service's background loop)."""
        while True:
            try:
                await self._publish_due(time.monotonic())
            except Exception as exc:  # NATS away: keep the items, try again shortly
                log.warning("publishing interactions failed, retrying error=%s", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            self._wake.clear()
            timeout = None
            if self._pending:
                first = next(iter(self._pending.values()))
                timeout = max(first.due - time.monotonic(), 0.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def flush(self) -> None:
        """Publish everything now (at shutdown)."""
        await self._publish_due(float("inf"))

    async def _publish_due(self, now: float) -> None:
        while self._pending:
            interaction_id, item = next(iter(self._pending.items()))
            if item.due > now and len(self._pending) <= self.max_pending:
                return
            await self.publish(item)  # raises: the item stays and is retried next round
            self._pending.pop(interaction_id, None)
            if len(self._published) == self._published.maxlen:
                self._published_set.discard(self._published[0])
            self._published.append(interaction_id)
            self._published_set.add(interaction_id)
            self.logged += 1

    @property
    def pending(self) -> int:
        return len(self._pending)
