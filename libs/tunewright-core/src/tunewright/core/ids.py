"""Identifiers: time-sortable random ids and deterministic ids derived from their parts.

``new_id("mv")`` -> ``mv_01JD…`` (a ULID: 48-bit millisecond time + 80 random bits, Crockford
base32), so ids sort by creation time, which keeps keyset pagination and logs readable.
``stable_id("job", run_id, "sft")`` is the same for the same parts: retries and restarts that
re-derive an id (a pipeline stage's job, an event's key) land on the same thing.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import Final

from tunewright.core.errors import FieldViolation, InvalidArgument

_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _base32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


_last = [0, 0]  # (millis, random part) of the previous id: ids from one process increase


def new_id(prefix: str) -> str:
    """A new time-sortable id: ``<prefix>_<26-char ULID>``, increasing within a process."""
    millis = time.time_ns() // 1_000_000
    if millis <= _last[0]:
        millis, rand = _last[0], _last[1] + 1
    else:
        rand = int.from_bytes(os.urandom(10), "big") >> 1  # room to increment
    _last[0], _last[1] = millis, rand
    return f"{prefix}_{_base32(millis, 10)}{_base32(rand, 16)}"


def stable_id(prefix: str, *parts: str) -> str:
    """A deterministic id from ``parts`` (sha256, 26 base32 chars)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return f"{prefix}_{_base32(int.from_bytes(digest[:17], 'big') >> 6, 26)}"


#: what a job id handed in from outside may look like: it names folders (work dirs, the
#: quarantine) that are later deleted, so nothing in it may leave them
JOB_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_job_id(job_id: str, field: str = "job_id") -> str:
    """``job_id`` if it is a safe folder name, else :class:`InvalidArgument` (``INVALID_JOB_ID``)."""
    if JOB_ID_PATTERN.fullmatch(job_id) and ".." not in job_id:
        return job_id
    raise InvalidArgument(
        f"{field} must match {JOB_ID_PATTERN.pattern} without '..' (got {len(job_id)} characters)",
        reason="INVALID_JOB_ID",
        field_violations=[FieldViolation(field, f"must match {JOB_ID_PATTERN.pattern}")],
    )
