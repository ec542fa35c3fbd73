"""grpc.aio server interceptors: correlation id, bearer-token auth, domain-error mapping.

:func:`tunewright.core.grpc_server.create_server` installs them in this order (outermost
first): :class:`CorrelationInterceptor`, :class:`BearerAuthInterceptor` (when a token is
configured), :class:`ErrorInterceptor`. Each wraps the behaviours of the method handler
for all four call shapes (unary or stream request, unary or stream response).

Errors travel the standard way, so any gRPC client can read them: the status code, the
message, and a ``grpc-status-details-bin`` trailer holding a ``google.rpc.Status`` whose
details carry a ``google.rpc.ErrorInfo`` (reason, domain ``"tunewright"``) and, when the
request had bad fields, a ``google.rpc.BadRequest``. :func:`error_details` reads them back.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health as grpc_health
from grpc_reflection.v1alpha import reflection as grpc_reflection
from grpc_status import rpc_status

from tunewright.core.errors import FieldViolation, TunewrightError
from tunewright.core.identities import (
    PLATFORM,
    Identity,
    identity_scope,
    token_digest,
    viewer_refusal,
)
from tunewright.core.logs import correlation_scope, current_correlation_id, new_correlation_id

__all__ = [
    "CORRELATION_METADATA_KEY",
    "ERROR_DOMAIN",
    "OPEN_SERVICES",
    "STATUS_DETAILS_KEY",
    "BearerAuthInterceptor",
    "CorrelationInterceptor",
    "ErrorInterceptor",
    "error_details",
    "status_code_for",
    "to_rpc_status",
]

log = logging.getLogger(__name__)

CORRELATION_METADATA_KEY: Final = "tw-correlation-id"
STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
ERROR_DOMAIN: Final = "tunewright"
#: services that answer without a token so that probes and grpcurl discovery work
OPEN_SERVICES: Final = frozenset({grpc_health.SERVICE_NAME, grpc_reflection.SERVICE_NAME})
# accepted incoming correlation ids: short and log-safe, otherwise we mint a new one
_CID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# A behaviour guard runs around one call: (servicer context) -> async context manager.
_Guard = Callable[[Any], AbstractAsyncContextManager[None]]


def _metadata_value(metadata: Iterable[Any] | None, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return None


def _method_service(method: str) -> str:
    """``"/pkg.Service/Method"`` -> ``"pkg.Service"``."""
    return method.lstrip("/").split("/", 1)[0]


async def _unary_result(result: Any) -> Any:
    # async servicers return coroutines; a sync servicer's return value passes straight through
    return await result if inspect.isawaitable(result) else result


async def _stream_results(result: Any) -> AsyncIterator[Any]:
    if inspect.isasyncgen(result) or hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result  # the behaviour wrote its responses with context.write()
    elif result is not None:
        for item in result:
            yield item


def _guarded(handler: Any, guard: _Guard) -> Any:
    """A copy of ``handler`` whose behaviour runs inside ``guard``, whatever its call shape."""

    def wrap_unary(behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: Any) -> Any:
            async with guard(context):
                return await _unary_result(behavior(request, context))

        return call

    def wrap_stream(behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, context: Any) -> AsyncIterator[Any]:
            async with guard(context):
                async for item in _stream_results(behavior(request, context)):
                    yield item

        return call

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary), **codecs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap_stream(handler.unary_stream), **codecs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap_unary(handler.stream_unary), **codecs)
    return grpc.stream_stream_rpc_method_handler(wrap_stream(handler.stream_stream), **codecs)


class _GuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Base: wraps every handler in :meth:`guard`, built from the call's details."""

    def guard(self, details: Any) -> _Guard:
        raise NotImplementedError

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED itself
            return None
        return _guarded(handler, self.guard(handler_call_details))


class CorrelationInterceptor(_GuardInterceptor):
    """Puts each call in a correlation scope and echoes the id in the initial metadata.

    The id comes from the ``tw-correlation-id`` request header when it is well formed,
    otherwise a new one is made. Handlers must not send initial metadata themselves.
    """

    def guard(self, details: Any) -> _Guard:
        incoming = _metadata_value(details.invocation_metadata, CORRELATION_METADATA_KEY)
        cid = incoming if incoming and _CID_PATTERN.fullmatch(incoming) else new_correlation_id()

        @asynccontextmanager
        async def scope(context: Any) -> AsyncIterator[None]:
            with correlation_scope(cid):
                await context.send_initial_metadata(((CORRELATION_METADATA_KEY, cid),))
                yield

        return scope


class BearerAuthInterceptor(_GuardInterceptor):
    """Requires ``authorization: Bearer <token>`` on every call outside :data:`OPEN_SERVICES`:
    the platform ``token`` (identity ``platform``, role admin) or one of ``identities``
    (token sha256 -> identity, :mod:`tunewright.core.identities`). A viewer may call only
    the RPCs that read (PERMISSION_DENIED otherwise). The handler runs with the caller's
    identity in :func:`~tunewright.core.identities.current_identity`."""

    def __init__(self, token: str | None, identities: Mapping[str, Identity] | None = None) -> None:
        if token is not None and not token:
            raise ValueError("auth token must not be empty")
        if token is None and not identities:
            raise ValueError("bearer auth needs a platform token or identities")
        self._expected = f"Bearer {token}".encode() if token is not None else None
        self._identities = dict(identities or {})

    def _identity(self, presented: str) -> Identity | None:
        if self._expected is not None and hmac.compare_digest(presented.encode(), self._expected):
            return PLATFORM
        if presented.startswith("Bearer "):
            return self._identities.get(token_digest(presented[len("Bearer ") :]))
        return None

    def guard(self, details: Any) -> _Guard:
        presented = _metadata_value(details.invocation_metadata, "authorization") or ""
        open_service = _method_service(details.method) in OPEN_SERVICES
        identity = None if open_service else self._identity(presented)

        @asynccontextmanager
        async def check(context: Any) -> AsyncIterator[None]:
            if open_service:
                yield
                return
            if identity is None:
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token"
                )
            assert identity is not None
            refusal = viewer_refusal(identity, details.method)
            if refusal is not None:
                status = to_rpc_status(
                    grpc.StatusCode.PERMISSION_DENIED, refusal, reason="ROLE_REQUIRED"
                )
                await context.abort_with_status(rpc_status.to_status(status))
            with identity_scope(identity):
                yield

        return check


_MAX_MESSAGE_CHARS: Final = 2000


def _bounded(message: str) -> str:
    """A message that fits gRPC's metadata limit (a message quoting a 70 KB id would turn the
    caller's INVALID_ARGUMENT into RESOURCE_EXHAUSTED)."""
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    return message[: _MAX_MESSAGE_CHARS - 40] + f"… ({len(message)} characters in all)"


def status_code_for(error: TunewrightError) -> Any:
    """The ``grpc.StatusCode`` of a domain error (named by the error class)."""
    return grpc.StatusCode[error.code]


def to_rpc_status(
    code: Any,
    message: str,
    *,
    reason: str,
    field_violations: Iterable[FieldViolation] = (),
    metadata: dict[str, str] | None = None,
) -> status_pb2.Status:
    """A ``google.rpc.Status`` with ErrorInfo (and BadRequest when fields were wrong)."""
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
    )
    details = [info]
    violations = [
        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
        for v in field_violations
    ]
    if violations:
        bad_request = any_pb2.Any()
        bad_request.Pack(error_details_pb2.BadRequest(field_violations=violations))
        details.append(bad_request)
    return status_pb2.Status(code=code.value[0], message=message, details=details)


class ErrorInterceptor(_GuardInterceptor):
    """Maps exceptions raised by handlers to gRPC statuses with rich details.

    A :class:`~tunewright.core.errors.TunewrightError` keeps its message (written for the
    caller). Any other exception is a bug: it is logged with its traceback and the caller
    gets INTERNAL with a generic message and the correlation id to quote, never the
    exception's text.
    """

    def guard(self, details: Any) -> _Guard:
        method = details.method

        @asynccontextmanager
        async def map_errors(context: Any) -> AsyncIterator[None]:
            try:
                yield
            except grpc.aio.AbortError:
                raise  # the handler (or an inner interceptor) already chose a status
            except TunewrightError as exc:
                code = status_code_for(exc)
                log.info(
                    "rpc failed",
                    extra={"grpc_method": method, "grpc_code": code.name, "reason": exc.reason},
                )
                cid = current_correlation_id()
                metadata = {"retryable": str(exc.retryable).lower()}
                if cid:
                    metadata["correlation_id"] = cid
                status = to_rpc_status(
                    code,
                    _bounded(exc.message),
                    reason=exc.reason,
                    field_violations=exc.field_violations,
                    metadata=metadata,
                )
                await context.abort_with_status(rpc_status.to_status(status))
            except NotImplementedError:
                # generated base servicers raise it for RPCs this version does not implement
                status = to_rpc_status(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{method} is not implemented in this version",
                    reason="UNIMPLEMENTED",
                )
                await context.abort_with_status(rpc_status.to_status(status))
            except Exception:
                # a new id only if the call had none (no CorrelationInterceptor installed)
                with correlation_scope(current_correlation_id()) as cid:
                    log.error(
                        "unhandled error in rpc", exc_info=True, extra={"grpc_method": method}
                    )
                message = f"internal error (correlation id {cid})"
                status = to_rpc_status(
                    grpc.StatusCode.INTERNAL,
                    message,
                    reason="INTERNAL",
                    metadata={"correlation_id": cid},
                )
                await context.abort_with_status(rpc_status.to_status(status))

        return map_errors


def error_details(rpc_error: Any) -> tuple[str, list[FieldViolation]]:
    """``(reason, field_violations)`` from a failed call's ``grpc-status-details-bin``.

    ``rpc_error`` is a ``grpc.RpcError`` / ``grpc.aio.AioRpcError``. Returns ``("", [])``
    when the server sent no rich details.
    """
    status = rpc_status.from_call(rpc_error)
    if status is None:
        return "", []
    reason = ""
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                FieldViolation(field=v.field, description=v.description)
                for v in bad_request.field_violations
            )
    return reason, violations
