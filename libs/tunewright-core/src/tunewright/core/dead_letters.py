"""Dead letters: list what is in ``TW_DLQ`` and redrive it to where it came from.

A message lands in the dead-letter stream when a consumer gave up on it: a
:class:`~tunewright.core.errors.PermanentError` (a bad payload, an invalid request), or the
deliveries of a limited consumer ran out. Once the cause is fixed (a bug, a missing entity, a
service that was down), :func:`redrive` publishes each dead letter again on its original
subject and then removes it from ``TW_DLQ`` (the stream keeps dead letters for 30 days, so
removing is how one is settled).

Exactly-once handling survives the round trip. JetStream would drop a republish under the
original ``Nats-Msg-Id`` for the stream's duplicate window, so the redriven copy gets the id
``redrive-<n>:<original>`` (``n`` counts the redrives of that message: redriving the same
dead letter twice, e.g. after a crash between publish and removal, is stored once) and
carries the original in ``Tw-Original-Msg-Id``, which :attr:`Delivery.msg_id
<tunewright.core.bus.Delivery.msg_id>` reports: a consumer's processed marks still know it.
The redriven message reaches every consumer of its subject again; those that had handled it
skip it by those marks (or by their own idempotent state changes).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Final

import nats.js.errors
from nats.js import JetStreamContext
from nats.js import api as js_api

from tunewright.core import subjects as s

log = logging.getLogger(__name__)

DLQ_STREAM: Final = "TW_DLQ"
_PUBLISH_TIMEOUT_S: Final = 5.0
# the headers a dead letter adds, dropped again when it is redriven
_DLQ_HEADERS: Final = frozenset(
    {
        s.HEADER_DLQ_REASON,
        s.HEADER_DLQ_DELIVERIES,
        s.HEADER_DLQ_ORIGINAL_SUBJECT,
        s.HEADER_DLQ_CONSUMER,
        s.HEADER_DLQ_MSG_ID,
    }
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message in ``TW_DLQ``; never its payload (it may hold raw records)."""

    #: sequence in TW_DLQ (what ``redrive --seq`` takes)
    seq: int
    #: the subject it was first published on, where a redrive sends it
    original_subject: str
    #: the message id its consumers know it by
    msg_id: str
    #: the durable that gave up on it
    consumer: str
    reason: str
    deliveries: int
    #: how many times it had been redriven before it landed here again
    redrives: int
    dead_lettered_at: dt.datetime | None
    size_bytes: int
    headers: dict[str, str]
    data: bytes

    @classmethod
    def from_raw(cls, raw: js_api.RawStreamMsg) -> DeadLetter:
        headers = dict(raw.headers or {})
        consumer = headers.get(s.HEADER_DLQ_CONSUMER, "")
        original = headers.get(s.HEADER_DLQ_MSG_ID)
        if not original:
            # dead-lettered before Tw-Dlq-Msg-Id existed: the id is dlq:<durable>:<id>
            original = headers.get(s.HEADER_MSG_ID, "").removeprefix(f"dlq:{consumer}:")
        subject = headers.get(s.HEADER_DLQ_ORIGINAL_SUBJECT) or _original_subject(raw.subject)
        try:
            deliveries = int(headers.get(s.HEADER_DLQ_DELIVERIES, "0"))
            redrives = int(headers.get(s.HEADER_REDRIVES, "0"))
        except ValueError:
            deliveries, redrives = 0, 0
        data = raw.data or b""
        return cls(
            seq=int(raw.seq or 0),
            original_subject=subject,
            msg_id=original or f"{DLQ_STREAM}:{raw.seq}",
            consumer=consumer,
            reason=headers.get(s.HEADER_DLQ_REASON, ""),
            deliveries=deliveries,
            redrives=redrives,
            dead_lettered_at=raw.time,
            size_bytes=len(data),
            headers=headers,
            data=data,
        )

    def redrive_headers(self) -> dict[str, str]:
        """Headers of the redriven copy: the original ones, a new id, the original id."""
        redrives = self.redrives + 1
        out = {
            k: v
            for k, v in self.headers.items()
            if not k.startswith("Nats-") and k not in _DLQ_HEADERS
        }
        out[s.HEADER_MSG_ID] = f"redrive-{redrives}:{self.msg_id}"
        out[s.HEADER_ORIGINAL_MSG_ID] = self.msg_id
        out[s.HEADER_REDRIVES] = str(redrives)
        return out


@dataclass(frozen=True, slots=True)
class Redriven:
    dead_letter: DeadLetter
    #: sequence of the republished copy in the original subject's stream
    seq: int
    #: JetStream had the copy already (a redrive repeated after a crash)
    duplicate: bool


def _original_subject(dlq_subject: str | None) -> str:
    prefix = s.DEAD_LETTER_PREFIX + "."
    if dlq_subject and dlq_subject.startswith(prefix):
        return f"{s.PREFIX}.{dlq_subject[len(prefix) :]}"
    return ""


def _filter(subject: str | None) -> str:
    """The TW_DLQ subject filter for dead letters first published on ``subject``."""
    if subject is None:
        return s.DEAD_LETTER_ALL
    return s.dead_letter_subject(subject)  # raises ValueError for a non-tunewright subject


async def list_dead_letters(
    js: JetStreamContext, *, subject: str | None = None, limit: int | None = None
) -> list[DeadLetter]:
    """Dead letters in TW_DLQ, oldest first; ``subject`` keeps those first published on it
    (a wildcard such as ``tw.trainer.>`` works too)."""
    out: list[DeadLetter] = []
    subject_filter = _filter(subject)
    seq = 1
    while limit is None or len(out) < limit:
        try:
            raw = await js.get_msg(DLQ_STREAM, seq, subject=subject_filter, next=True)
        except nats.js.errors.NotFoundError:
            break  # no message at or after seq matches
        out.append(DeadLetter.from_raw(raw))
        seq = int(raw.seq or seq) + 1
    return out


async def redrive(
    js: JetStreamContext,
    *,
    subject: str | None = None,
    seqs: set[int] | None = None,
) -> list[Redriven]:
    """Publish dead letters again on their original subject, then remove them from TW_DLQ.

    :param subject: only those first published on this subject (wildcards allowed).
    :param seqs: only these TW_DLQ sequences.
    :raises ValueError: a dead letter without an original subject (nothing to send it to).
    A failing publish stops the redrive there, leaving that dead letter and the rest in place.
    """
    done: list[Redriven] = []
    for letter in await list_dead_letters(js, subject=subject):
        if seqs is not None and letter.seq not in seqs:
            continue
        if not letter.original_subject:
            raise ValueError(f"dead letter {letter.seq} names no original subject")
        ack = await js.publish(
            letter.original_subject,
            letter.data,
            headers=letter.redrive_headers(),
            timeout=_PUBLISH_TIMEOUT_S,
        )
        # only once the copy is stored: a crash before this leaves the dead letter, and
        # redriving it again is dropped as a duplicate (same redrive id)
        try:
            await js.delete_msg(DLQ_STREAM, letter.seq)
        except nats.js.errors.NotFoundError:
            pass  # a concurrent redrive removed it
        log.info(
            "redriven subject=%s msg_id=%s dlq_seq=%d seq=%s duplicate=%s",
            letter.original_subject,
            letter.msg_id,
            letter.seq,
            ack.seq,
            bool(ack.duplicate),
        )
        done.append(Redriven(letter, int(ack.seq), bool(ack.duplicate)))
    return done


__all__ = ["DLQ_STREAM", "DeadLetter", "Redriven", "list_dead_letters", "redrive"]
