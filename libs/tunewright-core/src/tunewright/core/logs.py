"""Structured logging: one JSON object per line, with a correlation id, and no record contents.

**Rule: record contents (dataset rows, prompts, completions, PII) are never logged.** The
formatter enforces it instead of trusting each call site:

- ``extra={...}`` fields pass only if their key is allow-listed metadata (ids, counts,
  durations, subjects, status, ...) *and* their value is a scalar; strings are cut to
  :data:`MAX_FIELD_CHARS`. Anything else becomes ``"<redacted>"`` and its key is listed in
  ``redacted_keys``. The allowlist grows only in code (:func:`allow_log_fields`), never at
  the call site.
- ``%``-style message arguments get the same value rule: a dict or list (a row) is replaced,
  strings are cut. Message templates must still not interpolate contents.
- tracebacks (``exc_info``) keep every exception's type and frames, but the message (and
  notes) of each exception in the chain that is not a
  :class:`~tunewright.core.errors.TunewrightError` becomes ``"<redacted>"``: a ``ValueError``
  raised while parsing a row often quotes the row. Domain error messages are written for
  callers and must not quote records, so they stay.

Usage::

    configure_logging(service="ingest", level="INFO")
    log = logging.getLogger(__name__)
    with correlation_scope(request_cid):
        log.info("dataset curated", extra={"dataset_id": ds_id, "count": n})
"""

from __future__ import annotations

import contextvars
import json as jsonlib
import logging
import re
import sys
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from types import TracebackType
from typing import IO, Final, TypeAlias

from tunewright.core.errors import TunewrightError

__all__ = [
    "MAX_FIELD_CHARS",
    "REDACTED",
    "JsonFormatter",
    "TextFormatter",
    "allow_log_fields",
    "allowed_log_fields",
    "configure_logging",
    "correlation_scope",
    "current_correlation_id",
    "format_exception_redacted",
    "new_correlation_id",
    "scrub_error_message",
]

REDACTED: Final = "<redacted>"
#: longest string value an extra field or message argument may carry
MAX_FIELD_CHARS: Final = 120

# Metadata keys: identifiers, sizes, timings, routing, outcome. Nothing that holds content.
_allowed_keys: set[str] = {
    "attempt",
    "address",
    "backend",
    "bytes",
    "checkpoint",
    "code",
    "consumer",
    "count",
    "delivered",
    "digest",
    "duration_ms",
    "duration_s",
    "elapsed_s",
    "epoch",
    "event_type",
    "grpc_code",
    "grpc_method",
    "kind",
    "limit",
    "method",
    "metric",
    "phase",
    "plugin",
    "port",
    "reason",
    "retryable",
    "sha256",
    "size",
    "stage",
    "state",
    "status",
    "step",
    "stream",
    "subject",
    "total",
    "version",
    "workspace",
}
# Keys that by naming convention are metadata: job_id, row_count, load_ms, size_bytes, ...
_ALLOWED_SUFFIXES: Final = ("_id", "_count", "_ms", "_seconds", "_bytes", "_version")

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tw_correlation_id", default=None
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(
    logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__
) | {"message", "asctime", "taskName"}
# Output keys the formatter owns; an extra with one of these names cannot overwrite them.
_RESERVED_KEYS: Final = frozenset(
    {"ts", "level", "logger", "msg", "service", "correlation_id", "exc", "stack", "redacted_keys"}
)


def allow_log_fields(*keys: str) -> None:
    """Add metadata keys to the allowlist (call at import time of the module that logs them).

    A key belongs here only if its values can never be record contents.
    """
    for key in keys:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise ValueError(f"log field keys are lower_snake_case, got {key!r}")
        _allowed_keys.add(key)


def allowed_log_fields() -> frozenset[str]:
    """The explicit allowlist (keys matching the metadata suffixes are allowed besides)."""
    return frozenset(_allowed_keys)


def _key_allowed(key: str) -> bool:
    return key in _allowed_keys or key.endswith(_ALLOWED_SUFFIXES)


def _scalar(value: object) -> object:
    """The value if it is a loggable scalar (strings cut short), else :data:`REDACTED`."""
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) > MAX_FIELD_CHARS:
            return value[:MAX_FIELD_CHARS] + "…"
        return value
    return REDACTED


# --- correlation id ------------------------------------------------------------------------


def new_correlation_id() -> str:
    """A fresh random correlation id (32 hex chars)."""
    return uuid.uuid4().hex


def current_correlation_id() -> str | None:
    """The correlation id of the work in progress, or None outside any scope."""
    return _correlation_id.get()


@contextmanager
def correlation_scope(cid: str | None = None) -> Iterator[str]:
    """Run the block under correlation id ``cid`` (a new one if None); yields the id."""
    cid = cid or new_correlation_id()
    token = _correlation_id.set(cid)
    try:
        yield cid
    finally:
        _correlation_id.reset(token)


# --- formatters ----------------------------------------------------------------------------


def _safe_message(record: logging.LogRecord) -> str:
    if not isinstance(record.msg, str):
        # logger.info(row) would print the row itself
        return f"<{type(record.msg).__name__} redacted>"
    args = record.args
    if not args:
        return record.msg
    if isinstance(args, Mapping):
        # logging turns a lone mapping argument into args: it is either named arguments
        # for "%(key)s" or a single value for "%s" (a row, then)
        named = "%(" in record.msg
        safe: object = {k: _scalar(v) for k, v in args.items()} if named else (REDACTED,)
    else:
        safe = tuple(_scalar(a) for a in args)
    try:
        return record.msg % safe
    except (TypeError, ValueError):
        # e.g. "%d" given a redacted value: keep the template, never the raw arguments
        return f"{record.msg} <args redacted>"


def _safe_fields(record: logging.LogRecord) -> tuple[dict[str, object], list[str]]:
    fields: dict[str, object] = {}
    redacted: list[str] = []
    for key, value in record.__dict__.items():
        if key in _RECORD_ATTRS or key.startswith("_"):
            continue
        if key in _RESERVED_KEYS or not _key_allowed(key):
            redacted.append(key)
            if key not in _RESERVED_KEYS:
                fields[key] = REDACTED
            continue
        safe = _scalar(value)
        if safe is REDACTED:
            redacted.append(key)
        fields[key] = safe
    return fields, redacted


_ExcInfo: TypeAlias = (
    tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
)


def _redact_exception_chain(te: traceback.TracebackException) -> None:
    """Blank the message of every non-domain exception in ``te``'s cause/context/group tree."""
    pending, seen = [te], set()
    while pending:
        entry = pending.pop()
        if id(entry) in seen:
            continue
        seen.add(id(entry))
        exc_type = entry.exc_type
        if exc_type is None or not issubclass(exc_type, TunewrightError):
            # _str is the message text format() prints; there is no public way to set it
            entry._str = REDACTED  # type: ignore[attr-defined]
            entry.__notes__ = None
            if exc_type is not None and issubclass(exc_type, SyntaxError):
                entry.msg = REDACTED  # SyntaxError prints msg and the offending text
                entry.text = None  # type: ignore[assignment]
        pending.extend(e for e in (entry.__cause__, entry.__context__) if e is not None)
        pending.extend(entry.exceptions or ())


# what a third-party error message may quote from a row: contacts, card / account / phone
# numbers (7+ digits, separators allowed), addresses of machines
_QUOTED_PII: Final = (
    ("<EMAIL>", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("<URL>", re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)),
    ("<IP>", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
    ("<NUMBER>", re.compile(r"(?<![\w.])\+?\d(?:[\s().-]?\d){6,}(?![\w.])")),
)
_QUOTED_TEXT: Final = re.compile(r"""(['"])(?:(?!\1).){41,}\1""")


def scrub_error_message(message: str, limit: int = 500) -> str:
    """A third-party error message made fit for events, job rows and logs: the first line,
    e-mail addresses, URLs, IP addresses and long digit runs replaced, quoted strings longer
    than 40 characters (a row's text) elided, at most ``limit`` characters. Library messages
    ("`layers_to_transform` cannot be used when ...") stay readable."""
    text = message.strip().splitlines()[0] if message.strip() else ""
    for placeholder, pattern in _QUOTED_PII:
        text = pattern.sub(placeholder, text)
    text = _QUOTED_TEXT.sub(lambda m: f"{m.group(1)}<text>{m.group(1)}", text)
    return text[:limit]


def format_exception_redacted(exc_info: _ExcInfo) -> str:
    """The traceback of ``exc_info`` with non-domain exception messages redacted."""
    exc_type, exc, tb = exc_info
    if exc_type is None or exc is None:
        return ""
    te = traceback.TracebackException(exc_type, exc, tb, compact=True)
    _redact_exception_chain(te)
    return "".join(te.format()).rstrip("\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, service, correlation_id, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC)
        out: dict[str, object] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": _safe_message(record),
            "service": self.service,
            "correlation_id": current_correlation_id(),
        }
        fields, redacted = _safe_fields(record)
        out.update(fields)
        if redacted:
            out["redacted_keys"] = redacted
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return jsonlib.dumps(out, ensure_ascii=False, default=str)

    def formatException(self, ei: _ExcInfo) -> str:
        return format_exception_redacted(ei)


class TextFormatter(logging.Formatter):
    """Human-readable line for local development, with the same redaction as JSON."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        cid = current_correlation_id()
        fields, redacted = _safe_fields(record)
        if redacted:
            fields["redacted_keys"] = ",".join(redacted)
        parts = [ts, f"{record.levelname:<7}", self.service, record.name]
        if cid:
            parts.append(f"[{cid}]")
        parts.append(_safe_message(record))
        parts.extend(f"{k}={v}" for k, v in fields.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line

    def formatException(self, ei: _ExcInfo) -> str:
        return format_exception_redacted(ei)


class _TunewrightHandler(logging.StreamHandler[IO[str]]):
    """Marks the handler this module installed, so reconfiguring replaces it."""


def configure_logging(
    *,
    service: str,
    level: str | int = "INFO",
    json: bool = True,
    stream: IO[str] | None = None,
) -> None:
    """Send all logging to ``stream`` (stderr by default) through the redacting formatter.

    Idempotent: calling it again replaces the handler it installed earlier and leaves
    handlers installed by others (pytest's capture, for instance) alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _TunewrightHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _TunewrightHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service) if json else TextFormatter(service))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
