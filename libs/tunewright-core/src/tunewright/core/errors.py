"""Domain errors: what went wrong, in terms any transport can carry.

Service code raises these; it never builds gRPC statuses itself. The gRPC error
interceptor (:mod:`tunewright.core.interceptors`) turns them into a status code, the
message, and rich details (``google.rpc.ErrorInfo`` with :attr:`TunewrightError.reason`,
``google.rpc.BadRequest`` with the field violations). NATS workers use the same classes
to decide between redelivery and giving up. This module imports no transport library.

Each class names its canonical status code (the ``google.rpc.Code`` name, which gRPC,
HTTP gateways and every language share) so the mapping lives next to the class.

**Permanent errors.** A :class:`PermanentError` is one that retrying the *same request*
can never fix: the input is invalid, the thing does not exist, the caller may not do it.
A worker that gets one must stop (terminate the message, fail the job) instead of
redelivering. Transient errors (:class:`Unavailable`, :class:`DeadlineExceeded`,
:class:`ResourceExhausted`, :class:`Conflict`) are ``retryable`` by default. Any other
exception, not being a domain error, says nothing either way; callers treat it as a bug.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermanentError",
    "PermissionDenied",
    "ResourceExhausted",
    "TunewrightError",
    "Unauthenticated",
    "Unavailable",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: ``field`` is a dotted path (``"splits.train"``)."""

    field: str
    description: str


class TunewrightError(Exception):
    """Base of all domain errors.

    :param message: for the caller to read; it crosses the wire, so it must not quote
        record contents (rows, prompts, completions).
    :param reason: a stable UPPER_SNAKE_CASE identifier clients can switch on
        (``"DATASET_NOT_FOUND"``); defaults to the class's status code name.
    :param field_violations: which request fields were wrong and why.
    :param retryable: whether the same request may succeed later; defaults per class.
    """

    #: canonical status code name (``google.rpc.Code``), mapped by the transport layer
    code: ClassVar[str] = "INTERNAL"
    retryable_by_default: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.code
        self.field_violations: list[FieldViolation] = list(field_violations)
        self.retryable = self.retryable_by_default if retryable is None else retryable
        if self.retryable and isinstance(self, PermanentError):
            raise ValueError(f"{type(self).__name__} is permanent: it cannot be retryable")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class PermanentError(TunewrightError):
    """An error that retrying the same request cannot fix (see the module docstring)."""


class InvalidArgument(PermanentError):
    """The request itself is wrong, whatever the system's state."""

    code = "INVALID_ARGUMENT"


class NotFound(PermanentError):
    """A referenced entity does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(PermanentError):
    """The entity to create exists already."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(PermanentError):
    """The system is not in a state that allows this (e.g. cancelling a finished job).

    Retrying the same request will not help until something *else* changes the state.
    """

    code = "FAILED_PRECONDITION"


class PermissionDenied(PermanentError):
    """The caller is known but may not do this."""

    code = "PERMISSION_DENIED"


class Unauthenticated(PermanentError):
    """The caller did not prove who it is."""

    code = "UNAUTHENTICATED"


class Conflict(TunewrightError):
    """A concurrent change won (optimistic-lock failure); retry the read-modify-write."""

    code = "ABORTED"
    retryable_by_default = True


class ResourceExhausted(TunewrightError):
    """A quota or capacity limit was hit (queue full, disk full, too many jobs)."""

    code = "RESOURCE_EXHAUSTED"
    retryable_by_default = True


class Unavailable(TunewrightError):
    """A dependency (NATS, database, a worker) cannot be reached right now."""

    code = "UNAVAILABLE"
    retryable_by_default = True


class DeadlineExceeded(TunewrightError):
    """The operation did not finish in the time it was given."""

    code = "DEADLINE_EXCEEDED"
    retryable_by_default = True


class Cancelled(TunewrightError):
    """The operation was cancelled by its caller or operator."""

    code = "CANCELLED"
