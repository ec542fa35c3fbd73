"""The event bus: typed publish and at-least-once consumption over NATS JetStream.

Every stream and durable pull consumer comes from :mod:`tunewright.core.catalog`;
:meth:`EventBus.declare` creates or updates them and is safe to call from every service at
start-up. Publishing checks the subject against the catalog and the proto message against
``catalog.EVENT_MESSAGES``, and stamps a deterministic ``Nats-Msg-Id`` (subject + key) so a
retried publish of the same fact is dropped by JetStream's duplicate window.

Consumption (:meth:`EventBus.consume`) is at-least-once:

* handler returns -> ``ack_sync`` (the ack is durable before the next message);
* handler raises -> ``nak`` with the consumer's backoff; on the ``max_deliver``-th failure,
  or at once for a :class:`tunewright.core.errors.PermanentError` (``InvalidArgument``,
  ``NotFound``, ...), the message is republished to
  ``tw.dlq.<subject>`` with the reason in headers and terminated. A consumer with
  ``max_deliver=UNLIMITED`` (the fact consumers) retries every other failure for as long as
  it takes, at its capped backoff: only a poison message reaches its dead letters;
* while a handler runs it sends in-progress acks every ``ack_wait / 3``, so long jobs are
  not redelivered, but the message of a killed process is, after ``ack_wait``;
* :meth:`Subscription.stop` waits a bounded time for in-flight handlers, then cancels them
  and hands their messages back with ``nak`` so another worker picks them up.

Handlers must therefore be idempotent. :func:`idempotent` plus a :class:`ProcessedStore`
acks a redelivered message without running the handler again. That is *effect-once* only
when the store's mark is written in the same transaction as the handler's effect (a service
with a database implements :class:`ProcessedStore` on its own tables); with the KV store, a
crash between the effect and the mark repeats the effect on redelivery.

Dead letters are redriven (published again on their original subject, see
:mod:`tunewright.core.dead_letters`) under a new ``Nats-Msg-Id`` with the original id in
``Tw-Original-Msg-Id``: :attr:`Delivery.msg_id` is that original id, so processed marks and
``idempotent`` handlers see a redriven message as the one they may already have applied.

Logs carry subjects, message ids, delivery counts and durations, never payloads, and never
the message of an exception that is not a :class:`~tunewright.core.errors.TunewrightError`
(it may quote the payload): the dead-letter reason header follows the same rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar, cast, overload

import nats
import nats.errors
import nats.js.errors
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.kv import KeyValue

from tunewright.common.v1.common_pb2 import EventMeta
from tunewright.core import catalog
from tunewright.core import subjects as s
from tunewright.core.catalog import UNLIMITED, ConsumerSpec, Retention, StreamSpec
from tunewright.core.errors import FieldViolation, InvalidArgument, PermanentError, TunewrightError
from tunewright.core.ids import new_id
from tunewright.core.logs import current_correlation_id
from tunewright.core.settings import NatsSettings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
T = TypeVar("T")

#: KV bucket that remembers which messages a consumer has already processed.
PROCESSED_BUCKET: Final = "TW_PROCESSED"
#: How long a processed mark is kept: far longer than any redelivery can take.
PROCESSED_TTL_S: Final = 7 * 86400.0

# the module that registers every tunewright.events.v1 message in the default pool
_EVENTS_MODULE: Final = "tunewright.events.v1.events_pb2"
_STREAM_EXISTS_WITH_OTHER_CONFIG: Final = 10058
_MAX_WORKSPACE_CHARS: Final = 128
_MAX_REASON_CHARS: Final = 400
_PUBLISH_TIMEOUT_S: Final = 2.0
# pause after each failed attempt; the last attempt's failure is raised
_PUBLISH_RETRY_PAUSES_S: Final = (0.1, 0.5, 1.0, 0.0)
# dead-letter publish: pause after each failed attempt (the last value is unused)
_DLQ_RETRY_PAUSES_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 0.0)
# pause of a pull loop after an unexpected error, so a persistent one cannot spin
_LOOP_ERROR_PAUSE_S: float = 1.0
# delay before a message whose handler was cancelled at shutdown goes to another worker
_CANCELLED_NAK_DELAY_S: Final = 0.5
# publish_until_acked: pause after each failed attempt (the last value repeats); short, so a
# job's fact goes out within seconds of NATS coming back (each attempt itself retries ~10 s)
_UNTIL_ACKED_PAUSES_S: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)


class UndecodableMessage(InvalidArgument):
    """The payload or its ``Tw-Event-Type`` header does not name a known proto message."""


def message_id(subject: str, key: str) -> str:
    """The deterministic ``Nats-Msg-Id`` of the event ``key`` published on ``subject``."""
    return hashlib.sha256(f"{subject}\n{key}".encode()).hexdigest()[:40]


def event_meta(
    *, producer: str, workspace: str = "", correlation_id: str = "", event_id: str = ""
) -> EventMeta:
    """The ``meta`` every event starts with; ``event_id`` defaults to a new id."""
    meta = EventMeta(
        event_id=event_id or new_id("evt"),
        correlation_id=correlation_id or current_correlation_id() or "",
        workspace=workspace,
        producer=producer,
    )
    meta.occurred_at.GetCurrentTime()
    return meta


def is_transient(error: BaseException) -> bool:
    """Whether a later attempt may succeed: NATS unreachable, slow or failing over, or a
    retryable domain error. A bug (``ValueError`` for a subject the catalog does not know) is
    not."""
    if isinstance(error, TunewrightError):
        return error.retryable
    return isinstance(error, nats.errors.Error | TimeoutError | ConnectionError)


async def publish_until_acked(
    publish: Callable[[], Awaitable[T]],
    *,
    what: str,
    pauses_s: tuple[float, ...] | None = None,
) -> T:
    """Await ``publish()`` until it succeeds; returns its result.

    For the fact that ends a job. A transient failure (:func:`is_transient`) is retried after
    a pause that grows to 10 s and then repeats, for as long as it takes; any other error is
    raised at once, and cancellation (shutdown) ends the wait. A service that stores the
    job's final status only after this returns never keeps a finished job whose fact a NATS
    blip lost (the request would be acked as done, the pipeline waiting for the fact would
    wait forever); a job interrupted here is not marked finished, so its redelivered request
    finishes it again, and the fact's deterministic ``Nats-Msg-Id`` drops a repeat.

    :param what: names the fact in logs (``"trainer job j-1 failed"``).
    """
    pauses = pauses_s or _UNTIL_ACKED_PAUSES_S
    attempt = 0
    while True:
        attempt += 1
        try:
            return await publish()
        except Exception as exc:
            if not is_transient(exc):
                raise
            pause = pauses[min(attempt, len(pauses)) - 1]
            log.warning(
                "final fact not published what=%s attempt=%d error=%s: retrying in %gs",
                what,
                attempt,
                _error_name(exc),
                pause,
            )
            await asyncio.sleep(pause)


def decode_event(event_type: str, data: bytes) -> Message:
    """Parse ``data`` as the proto message named ``event_type`` (its full name)."""
    try:
        __import__(_EVENTS_MODULE)
    except ModuleNotFoundError as exc:  # stubs not generated yet: other types still decode
        if exc.name is None or not _EVENTS_MODULE.startswith(exc.name):
            raise
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(event_type)
    except KeyError:
        raise UndecodableMessage(f"unknown event type {event_type!r}") from None
    message = message_factory.GetMessageClass(descriptor)()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise UndecodableMessage(f"payload is not a valid {event_type}: {exc}") from None
    return message


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a message to a handler."""

    subject: str
    data: bytes
    headers: Mapping[str, str]
    #: ``Nats-Msg-Id`` (of the first publish, for a redriven message), or
    #: ``<stream>:<sequence>`` for a message published without one
    msg_id: str
    correlation_id: str | None
    workspace: str | None
    #: 1 on first delivery
    num_delivered: int
    durable: str
    stream: str
    stream_seq: int

    @property
    def event_type(self) -> str | None:
        return self.headers.get(s.HEADER_EVENT_TYPE)

    @overload
    def decode(self) -> Message: ...
    @overload
    def decode(self, message_type: type[M]) -> M: ...
    def decode(self, message_type: type[Message] | None = None) -> Message:
        """The proto message named by ``Tw-Event-Type``; with ``message_type``, checked.

        Raises :class:`UndecodableMessage` (a :class:`PermanentError`).
        """
        if self.event_type is None:
            raise UndecodableMessage(f"message {self.msg_id} has no {s.HEADER_EVENT_TYPE} header")
        if message_type is not None:
            expected = message_type.DESCRIPTOR.full_name
            if expected != self.event_type:
                raise UndecodableMessage(f"expected {expected}, message carries {self.event_type}")
        return decode_event(self.event_type, self.data)

    @classmethod
    def from_msg(cls, msg: Msg, durable: str) -> Delivery:
        meta = msg.metadata
        headers: dict[str, str] = dict(msg.headers or {})
        stream = str(meta.stream)
        seq = int(meta.sequence.stream)
        return cls(
            subject=msg.subject,
            data=msg.data,
            headers=headers,
            msg_id=(
                headers.get(s.HEADER_ORIGINAL_MSG_ID)
                or headers.get(s.HEADER_MSG_ID)
                or f"{stream}:{seq}"
            ),
            correlation_id=headers.get(s.HEADER_CORRELATION_ID),
            workspace=headers.get(s.HEADER_WORKSPACE),
            num_delivered=int(meta.num_delivered),
            durable=durable,
            stream=stream,
            stream_seq=seq,
        )


Handler = Callable[[Delivery], Awaitable[None]]


# --- idempotent handlers ---------------------------------------------------------------


class ProcessedStore(Protocol):
    """Remembers which messages were processed, so a redelivery can be acked unrun.

    For effect-once handling, a service with a database implements this protocol on its
    own tables and writes ``mark`` in the same transaction as the handler's effect. The KV
    and memory stores below only narrow the window: a crash between the effect and
    ``mark`` repeats the effect on redelivery.
    """

    async def seen(self, key: str) -> bool: ...
    async def mark(self, key: str) -> None: ...


class MemoryProcessedStore:
    """Process-local store: for tests and single-process tools."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    async def seen(self, key: str) -> bool:
        return key in self._keys

    async def mark(self, key: str) -> None:
        self._keys.add(key)


class KvProcessedStore:
    """Store in the NATS KV bucket :data:`PROCESSED_BUCKET`, shared by every process.

    Keys are hashed (KV keys allow few characters); marks expire after the bucket's TTL.
    """

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        bucket: str = PROCESSED_BUCKET,
        ttl_s: float = PROCESSED_TTL_S,
        replicas: int = 1,
    ) -> KvProcessedStore:
        """Bind to the bucket, creating it on first use (with ``replicas`` copies)."""
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(
                bucket=bucket,
                ttl=ttl_s,
                replicas=replicas,
                description="messages already processed, per consumer",
            )
        return cls(kv)

    @staticmethod
    def _kv_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    async def seen(self, key: str) -> bool:
        try:
            await self._kv.get(self._kv_key(key))
        except nats.js.errors.KeyNotFoundError:
            return False
        return True

    async def mark(self, key: str) -> None:
        await self._kv.put(self._kv_key(key), b"1")


def processed_key(delivery: Delivery) -> str:
    """Default idempotency key: the message id, scoped by consumer.

    Scoped because several durables may read the same fact and must each process it once.
    """
    return f"{delivery.durable}:{delivery.msg_id}"


def idempotent(
    handler: Handler,
    store: ProcessedStore,
    *,
    key: Callable[[Delivery], str] = processed_key,
) -> Handler:
    """Wrap ``handler`` so a message whose key is already marked is acked without running.

    The key is marked after the handler succeeds, so a handler that fails is retried. This
    is not exactly-once: it is effect-once when ``store`` writes the mark in the same
    transaction as the handler's effect; with the KV store, a crash between the effect and
    the mark repeats the effect.
    """

    async def run_once(delivery: Delivery) -> None:
        k = key(delivery)
        if await store.seen(k):
            log.info(
                "skipping already processed message subject=%s msg_id=%s deliveries=%d",
                delivery.subject,
                delivery.msg_id,
                delivery.num_delivered,
            )
            return
        await handler(delivery)
        await store.mark(k)

    return run_once


# --- status for the CLI ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamStatus:
    name: str
    subjects: tuple[str, ...]
    messages: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    stream: str
    durable: str
    num_pending: int
    num_ack_pending: int
    num_redelivered: int


# --- consumption -----------------------------------------------------------------------


class Subscription:
    """Pull loops bound to one durable. :meth:`stop` lets in-flight handlers finish."""

    _tasks: list[asyncio.Task[None]]

    def __init__(
        self,
        js: JetStreamContext,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        concurrency: int,
        fetch_timeout_s: float,
    ) -> None:
        self._js = js
        self._spec = spec
        self._handler = handler
        self._concurrency = concurrency
        self._fetch_timeout_s = fetch_timeout_s
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def durable(self) -> str:
        return self._spec.durable

    async def _start(self) -> None:
        # one pull subscription per slot: each loop fetches one message, handles it, repeats
        for i in range(self._concurrency):
            psub = await self._js.pull_subscribe_bind(
                consumer=self._spec.durable, stream=self._spec.stream
            )
            self._tasks.append(
                asyncio.create_task(self._pull_loop(psub), name=f"{self._spec.durable}-{i}")
            )

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop fetching, wait for in-flight handlers to finish and settle their messages.

        With ``timeout_s``, handlers still running after that long are cancelled and their
        messages handed back with ``nak`` (redelivered to another worker shortly; a cancelled *last*
        allowed delivery is not redelivered). Without it, waits for the slowest handler.
        Either way, an idle loop takes up to one fetch timeout to notice.
        """
        self._stopping.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        if pending:
            log.warning(
                "handlers still running after stop timeout durable=%s count=%d: cancelling",
                self._spec.durable,
                len(pending),
            )
            for task in pending:
                task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):  # loops log their own errors; be sure
                log.error("pull loop ended with an error durable=%s", self._spec.durable)

    async def _pause_after_error(self) -> None:
        """Sleep a moment (a persistent error must not spin), waking early on stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), _LOOP_ERROR_PAUSE_S)

    async def _pull_loop(self, psub: JetStreamContext.PullSubscription) -> None:
        # nothing but cancellation may end this loop before stop(): a dead loop would leave
        # the durable unserved while the service still reports SERVING
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await psub.fetch(1, timeout=self._fetch_timeout_s)
                except nats.errors.TimeoutError:
                    continue  # nothing to do
                except Exception as exc:
                    # disconnected or reconnecting: the client reconnects by itself
                    log.warning(
                        "fetch failed durable=%s error=%s: retrying",
                        self._spec.durable,
                        type(exc).__name__,
                    )
                    await self._pause_after_error()
                    continue
                for msg in msgs:
                    try:
                        await self._process(msg)
                    except Exception:
                        # a bug outside the handler (settling, logging, decoding headers):
                        # the server redelivers the message after ack_wait
                        log.exception(
                            "processing failed outside the handler durable=%s subject=%s: "
                            "continuing",
                            self._spec.durable,
                            msg.subject,
                        )
                        await self._pause_after_error()
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _process(self, msg: Msg) -> None:
        spec = self._spec
        delivery = Delivery.from_msg(msg, spec.durable)
        started = time.monotonic()
        keep_alive = asyncio.create_task(self._keep_alive(msg))
        error: Exception | None = None
        try:
            await self._handler(delivery)
        except asyncio.CancelledError:
            # stop() ran out of time: hand the message back for another worker at once
            # rather than after ack_wait
            log.warning(
                "handler cancelled subject=%s msg_id=%s deliveries=%d: returning it to the queue",
                delivery.subject,
                delivery.msg_id,
                delivery.num_delivered,
            )
            await self._settle(msg.nak(delay=_CANCELLED_NAK_DELAY_S), delivery)
            raise
        except Exception as exc:  # the handler's failure decides the message's fate below
            error = exc
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive
        took_ms = (time.monotonic() - started) * 1000

        if error is None:
            await self._ack(msg, delivery)
            log.debug(
                "handled subject=%s msg_id=%s deliveries=%d took_ms=%.1f",
                delivery.subject,
                delivery.msg_id,
                delivery.num_delivered,
                took_ms,
            )
        elif isinstance(error, PermanentError) or _exhausted(spec, delivery.num_delivered):
            log.error(
                "handler failed for good subject=%s msg_id=%s deliveries=%d took_ms=%.1f "
                "error=%s: dead-lettering",
                delivery.subject,
                delivery.msg_id,
                delivery.num_delivered,
                took_ms,
                _error_name(error),
                exc_info=error,  # the formatter redacts non-domain exception messages
            )
            await self._dead_letter(msg, delivery, error)
        else:
            delay = spec.backoff_s[min(delivery.num_delivered, len(spec.backoff_s)) - 1]
            log.warning(
                "handler failed subject=%s msg_id=%s deliveries=%d took_ms=%.1f error=%s: "
                "retry in %gs",
                delivery.subject,
                delivery.msg_id,
                delivery.num_delivered,
                took_ms,
                _error_name(error),
                delay,
                exc_info=error,  # the formatter redacts non-domain exception messages
            )
            await self._settle(msg.nak(delay=delay), delivery)

    async def _keep_alive(self, msg: Msg) -> None:
        interval = self._spec.ack_wait_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await msg.in_progress()
            except nats.errors.Error as exc:
                log.warning("in-progress ack failed: %s", type(exc).__name__)

    async def _ack(self, msg: Msg, delivery: Delivery) -> None:
        try:
            await msg.ack_sync()
        except (TimeoutError, nats.errors.Error) as exc:
            # the server may redeliver; idempotent handlers make that harmless
            log.warning(
                "ack not confirmed subject=%s msg_id=%s: %s",
                delivery.subject,
                delivery.msg_id,
                type(exc).__name__,
            )

    async def _settle(self, reply: Awaitable[None], delivery: Delivery) -> None:
        """Send a nak / term; if the connection is gone the server redelivers anyway."""
        try:
            await reply
        except nats.errors.Error as exc:
            log.warning(
                "could not settle subject=%s msg_id=%s: %s",
                delivery.subject,
                delivery.msg_id,
                type(exc).__name__,
            )

    async def _dead_letter(self, msg: Msg, delivery: Delivery, error: Exception) -> None:
        headers = _dead_letter_headers(
            delivery.headers,
            subject=delivery.subject,
            stream=delivery.stream,
            seq=delivery.stream_seq,
            durable=delivery.durable,
            reason=dead_letter_reason(error),
            deliveries=delivery.num_delivered,
        )
        dlq_subject = s.dead_letter_subject(delivery.subject)
        # keep the message ours while retrying: without in-progress acks the server would
        # hand it to another worker after ack_wait
        keep_alive = asyncio.create_task(self._keep_alive(msg))
        try:
            for attempt, pause in enumerate(_DLQ_RETRY_PAUSES_S, start=1):
                try:
                    await self._js.publish(
                        dlq_subject, delivery.data, headers=headers, timeout=_PUBLISH_TIMEOUT_S
                    )
                except (TimeoutError, nats.errors.Error) as exc:
                    log.warning(
                        "dead-letter publish failed subject=%s msg_id=%s attempt=%d: %s",
                        delivery.subject,
                        delivery.msg_id,
                        attempt,
                        type(exc).__name__,
                    )
                    if attempt < len(_DLQ_RETRY_PAUSES_S):
                        await asyncio.sleep(pause)
                else:
                    await self._settle(msg.term(), delivery)
                    return
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive
        if not _exhausted(self._spec, delivery.num_delivered):
            # deliveries remain: the server brings it back and we try the DLQ again
            log.error(
                "dead-letter publish failed subject=%s msg_id=%s deliveries=%d: redelivering",
                delivery.subject,
                delivery.msg_id,
                delivery.num_delivered,
            )
            await self._settle(msg.nak(delay=self._spec.backoff_s[-1]), delivery)
            return
        # last allowed delivery: the server will not redeliver, so a nak would change nothing;
        # the message stays unacknowledged in its stream (seq below) for manual recovery
        log.error(
            "message lost to DLQ failure subject=%s msg_id=%s stream=%s stream_seq=%d "
            "deliveries=%d consumer=%s",
            delivery.subject,
            delivery.msg_id,
            delivery.stream,
            delivery.stream_seq,
            delivery.num_delivered,
            delivery.durable,
        )


# --- the bus ---------------------------------------------------------------------------


class EventBus:
    """A NATS connection with the tunewright catalog. Create with :meth:`connect`.

    ``streams`` and ``consumers`` default to the catalog; tests pass scaled-down copies
    (e.g. ``dataclasses.replace(spec, ack_wait_s=1)``).
    """

    def __init__(
        self,
        nc: Client,
        *,
        streams: Iterable[StreamSpec] = catalog.STREAMS,
        consumers: Iterable[ConsumerSpec] = catalog.CONSUMERS,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.streams: tuple[StreamSpec, ...] = tuple(streams)
        # copies of each stream on a NATS cluster (NatsSettings.stream_replicas); 1 = one node
        self.replicas = 1
        self.consumers: dict[str, ConsumerSpec] = {c.durable: c for c in consumers}
        for spec in self.consumers.values():
            _check_consumer_spec(spec)
        self._subscriptions: list[Subscription] = []

    @classmethod
    async def connect(
        cls,
        url: str | list[str],
        *,
        name: str,
        streams: Iterable[StreamSpec] = catalog.STREAMS,
        consumers: Iterable[ConsumerSpec] = catalog.CONSUMERS,
        reconnect_wait_s: float = 2.0,
        wait_for_server_s: float = math.inf,
        max_reconnect_attempts: int = -1,
        **options: Any,
    ) -> EventBus:
        """Connect to ``url``; reconnects forever once connected.

        :param name: client name shown by the server (e.g. ``trainer-worker@host``).
        :param wait_for_server_s: how long to keep retrying the *first* connection; services
            wait forever (they may start before NATS), the CLI passes a few seconds.
        :param max_reconnect_attempts: -1 retries forever once connected.
        :param options: passed to ``nats.connect`` (``user``, ``password``, ``token``,
            ``user_credentials``, ``connect_timeout``, ...); see :meth:`from_settings`.
        """

        async def on_disconnected() -> None:
            if not nc.is_closed:  # closing on purpose is not worth a warning
                log.warning("NATS disconnected name=%s", name)

        async def on_reconnected() -> None:
            log.info("NATS reconnected name=%s server=%s", name, _server_address(nc))

        async def on_error(exc: Exception) -> None:
            log.warning("NATS error name=%s: %s: %s", name, type(exc).__name__, exc)

        async def on_closed() -> None:
            log.info("NATS connection closed name=%s", name)

        connecting = nats.connect(
            url,
            name=name,
            max_reconnect_attempts=max_reconnect_attempts,
            reconnect_time_wait=reconnect_wait_s,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            error_cb=on_error,
            closed_cb=on_closed,
            **options,
        )
        timeout = None if math.isinf(wait_for_server_s) else wait_for_server_s
        nc: Client = await asyncio.wait_for(connecting, timeout)
        log.info("NATS connected name=%s server=%s", name, _server_address(nc))
        return cls(nc, streams=streams, consumers=consumers)

    @classmethod
    async def from_settings(
        cls, settings: NatsSettings, *, name: str, wait_for_server_s: float | None = None
    ) -> EventBus:
        """Connect as configured: URL(s), credentials, reconnect policy, start-up wait."""
        options: dict[str, Any] = {"connect_timeout": settings.connect_timeout_s}
        if settings.user is not None and settings.password is not None:
            options["user"] = settings.user
            options["password"] = settings.password.get_secret_value()
        if settings.token is not None:
            options["token"] = settings.token.get_secret_value()
        if settings.creds_file is not None:
            options["user_credentials"] = str(settings.creds_file)
        bus = await cls.connect(
            [u.strip() for u in settings.url.split(",") if u.strip()],
            name=name,
            reconnect_wait_s=settings.reconnect_time_wait_s,
            max_reconnect_attempts=settings.max_reconnect_attempts,
            wait_for_server_s=(
                settings.startup_wait_s if wait_for_server_s is None else wait_for_server_s
            ),
            **options,
        )
        bus.replicas = settings.stream_replicas
        return bus

    # --- declaration ---

    async def declare(self) -> None:
        """Create or update every stream, durable consumer and the processed-marks bucket."""
        for spec in self.streams:
            config = _stream_config(spec, replicas=self.replicas)
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _STREAM_EXISTS_WITH_OTHER_CONFIG:
                    raise
                try:
                    await self.js.update_stream(config)
                except nats.errors.Error as update_failed:
                    # a service's user may not update streams (tunewright up's users): the
                    # operator's CLI declares them; run on with the stream as it is
                    log.warning(
                        "stream %s differs from the catalog and could not be updated (%s): "
                        "declare the streams as the operator (tunewright up does)",
                        spec.name,
                        type(update_failed).__name__,
                    )
        for consumer in self.consumers.values():
            # the durable-create API creates, or updates a consumer whose config changed
            await self.js.add_consumer(consumer.stream, _consumer_config(consumer))
        await KvProcessedStore.open(self.js, replicas=self.replicas)

    async def processed_store(self, *, ttl_s: float = PROCESSED_TTL_S) -> KvProcessedStore:
        return await KvProcessedStore.open(self.js, ttl_s=ttl_s)

    # --- publishing ---

    async def publish(
        self,
        subject: str,
        message: Message,
        *,
        key: str,
        correlation_id: str | None = None,
        workspace: str | None = None,
    ) -> js_api.PubAck:
        """Publish the event ``message`` on ``subject``; returns the stream's ack.

        :param key: what makes this event unique on its subject (e.g. a job id, or job id +
            step): the same subject + key is stored once (``PubAck.duplicate`` on repeats).
        :raises ValueError: the subject is not in the catalog or carries another message.
        """
        expected = catalog.EVENT_MESSAGES.get(subject)
        if expected is None:
            raise ValueError(
                f"subject {subject!r} is not declared in tunewright.core.catalog.EVENT_MESSAGES"
            )
        actual = message.DESCRIPTOR.full_name
        if actual != expected:
            raise ValueError(f"subject {subject!r} carries {expected}, got {actual}")
        return await self._publish_unchecked(
            subject, message, key=key, correlation_id=correlation_id, workspace=workspace
        )

    async def _publish_unchecked(
        self,
        subject: str,
        message: Message,
        *,
        key: str,
        correlation_id: str | None = None,
        workspace: str | None = None,
    ) -> js_api.PubAck:
        """Publish without the catalog check. For tests only (any message on any subject)."""
        if not key:
            raise ValueError("publish needs a non-empty key (it derives the Nats-Msg-Id)")
        msg_id = message_id(subject, key)
        headers = {
            s.HEADER_MSG_ID: msg_id,
            s.HEADER_EVENT_TYPE: message.DESCRIPTOR.full_name,
        }
        if correlation_id:
            headers[s.HEADER_CORRELATION_ID] = correlation_id
        if workspace:
            if len(workspace) > _MAX_WORKSPACE_CHARS:  # a header; NATS caps headers at 64 KiB
                raise InvalidArgument(
                    f"workspace name of {len(workspace)} characters (at most "
                    f"{_MAX_WORKSPACE_CHARS})",
                    reason="INVALID_WORKSPACE",
                    field_violations=[FieldViolation("workspace", "too long")],
                )
            headers[s.HEADER_WORKSPACE] = workspace
        payload = message.SerializeToString(deterministic=True)
        # the Nats-Msg-Id makes a retry safe: if the first attempt was stored, JetStream drops
        # the second; retries cover the first request after a reconnect, which can be lost
        for attempt, pause in enumerate(_PUBLISH_RETRY_PAUSES_S, start=1):
            try:
                ack = await self.js.publish(
                    subject, payload, headers=headers, timeout=_PUBLISH_TIMEOUT_S
                )
                break
            except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError) as exc:
                if attempt == len(_PUBLISH_RETRY_PAUSES_S):
                    raise
                log.warning(
                    "publish not acknowledged subject=%s msg_id=%s attempt=%d: %s; retrying",
                    subject,
                    msg_id,
                    attempt,
                    type(exc).__name__,
                )
                await asyncio.sleep(pause)
        if ack.duplicate:
            # a retry, or two producers deriving the same key: worth seeing either way
            log.info(
                "duplicate publish dropped by JetStream subject=%s msg_id=%s seq=%s",
                subject,
                msg_id,
                ack.seq,
            )
        else:
            log.debug("published subject=%s msg_id=%s seq=%s", subject, msg_id, ack.seq)
        return ack

    # --- consuming ---

    async def consume(
        self,
        durable: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        fetch_timeout_s: float = 1.0,
    ) -> Subscription:
        """Run ``handler`` on messages of the declared durable ``durable`` until stopped.

        Processes (or ``concurrency`` slots) that bind the same durable share its messages.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        try:
            spec = self.consumers[durable]
        except KeyError:
            raise KeyError(
                f"unknown consumer {durable!r}; declared: {', '.join(self.consumers)}"
            ) from None
        _check_consumer_spec(spec)  # self.consumers is a plain dict: it may have changed
        try:
            await self.js.consumer_info(spec.stream, spec.durable)
        except nats.js.errors.NotFoundError:
            raise LookupError(
                f"consumer {durable!r} does not exist on the server: call declare() first"
            ) from None
        sub = Subscription(
            self.js, spec, handler, concurrency=concurrency, fetch_timeout_s=fetch_timeout_s
        )
        await sub._start()
        self._subscriptions.append(sub)
        return sub

    # --- status ---

    async def watch_max_deliveries(self) -> Callable[[], Awaitable[None]]:
        """Dead-letter messages whose deliveries ran out without a verdict; returns ``stop``.

        A handler that fails on the last delivery dead-letters the message itself, but a
        process killed (or timing out) during that delivery cannot: the server then only
        announces it on ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>``. This
        copies such a message, read back from its stream, to the DLQ with the same message id
        the handler path would use, so several watchers (every service runs one) store it once.
        """
        durables = {spec.durable for spec in self.consumers.values()}

        async def on_advisory(msg: Msg) -> None:
            try:
                advisory = json.loads(msg.data)
                stream, durable = advisory["stream"], advisory["consumer"]
                seq, deliveries = int(advisory["stream_seq"]), int(advisory["deliveries"])
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable max-deliveries advisory on %s", msg.subject)
                return
            if durable not in durables:
                return  # not one of ours
            try:
                raw = await self.js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                return  # already gone (acked late, or removed by limits)
            if raw.subject is None:
                return
            headers = _dead_letter_headers(
                raw.headers or {},
                subject=raw.subject,
                stream=stream,
                seq=seq,
                durable=durable,
                reason="MaxDeliveries: no ack or verdict after the last allowed delivery "
                "(handler crashed or timed out)",
                deliveries=deliveries,
            )
            await self.js.publish(
                s.dead_letter_subject(raw.subject), raw.data or b"", headers=headers
            )
            log.error(
                "dead-lettered after max deliveries subject=%s msg_id=%s consumer=%s",
                raw.subject,
                headers[s.HEADER_DLQ_MSG_ID],
                durable,
            )

        sub = await self.nc.subscribe(MAX_DELIVERIES_ADVISORY, cb=on_advisory)
        return sub.unsubscribe

    async def stream_infos(self) -> list[StreamStatus]:
        """Declared streams that exist on the server, with their sizes."""
        out = []
        for spec in self.streams:
            try:
                info = await self.js.stream_info(spec.name)
            except nats.js.errors.NotFoundError:
                continue
            out.append(
                StreamStatus(
                    name=spec.name,
                    subjects=tuple(info.config.subjects or ()),
                    messages=info.state.messages,
                    bytes=info.state.bytes,
                )
            )
        return out

    async def consumer_infos(self) -> list[ConsumerStatus]:
        """Declared durables that exist on the server, with their backlog."""
        out = []
        for spec in self.consumers.values():
            try:
                info = cast(Any, await self.js.consumer_info(spec.stream, spec.durable))
            except nats.js.errors.NotFoundError:
                continue
            out.append(
                ConsumerStatus(
                    stream=spec.stream,
                    durable=spec.durable,
                    num_pending=info.num_pending or 0,
                    num_ack_pending=info.num_ack_pending or 0,
                    num_redelivered=info.num_redelivered or 0,
                )
            )
        return out

    # --- shutdown ---

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop pulling, let in-flight handlers finish and settle, then drain the connection.

        ``timeout_s`` bounds the wait for handlers (see :meth:`Subscription.stop`).
        """
        subscriptions, self._subscriptions = self._subscriptions, []
        await asyncio.gather(*(sub.stop(timeout_s) for sub in subscriptions))
        if not self.nc.is_closed:
            await self.nc.drain()


def _check_consumer_spec(spec: ConsumerSpec) -> None:
    """Refuse specs the pull loop cannot honour (an empty backoff would fail on the first nak)."""
    if not spec.backoff_s:
        raise ValueError(f"consumer {spec.durable!r}: backoff_s must not be empty")
    if any(delay < 0 for delay in spec.backoff_s):
        raise ValueError(f"consumer {spec.durable!r}: backoff_s must be >= 0, got {spec.backoff_s}")
    if spec.max_deliver < 1 and spec.max_deliver != UNLIMITED:
        raise ValueError(
            f"consumer {spec.durable!r}: max_deliver must be >= 1 or UNLIMITED "
            f"({UNLIMITED}), got {spec.max_deliver}"
        )
    if not spec.ack_wait_s > 0:
        raise ValueError(
            f"consumer {spec.durable!r}: ack_wait_s must be > 0, got {spec.ack_wait_s}"
        )


def _exhausted(spec: ConsumerSpec, num_delivered: int) -> bool:
    """Whether this was the last delivery the consumer allows (never, for UNLIMITED)."""
    return spec.max_deliver != UNLIMITED and num_delivered >= spec.max_deliver


def _dead_letter_headers(
    headers: Mapping[str, str],
    *,
    subject: str,
    stream: str,
    seq: int,
    durable: str,
    reason: str,
    deliveries: int,
) -> dict[str, str]:
    """Headers of the dead-letter copy of a message; the handler and the max-deliveries
    watcher build the same ones, so JetStream stores the copy once whoever sends it."""
    published_id = headers.get(s.HEADER_MSG_ID) or f"{stream}:{seq}"
    known_as = headers.get(s.HEADER_ORIGINAL_MSG_ID) or published_id
    out = {
        k: v
        for k, v in headers.items()
        if not k.startswith("Nats-") and k != s.HEADER_ORIGINAL_MSG_ID
    }
    out.update(
        {
            # scoped by durable (two consumers may each dead-letter the same fact) and built
            # from the id this copy was published under, so a redriven message that fails
            # again is stored again instead of being dropped as a duplicate of its first
            # dead letter
            s.HEADER_MSG_ID: f"dlq:{durable}:{published_id}",
            s.HEADER_DLQ_MSG_ID: known_as,
            s.HEADER_DLQ_ORIGINAL_SUBJECT: subject,
            s.HEADER_DLQ_REASON: reason[:_MAX_REASON_CHARS],
            s.HEADER_DLQ_DELIVERIES: str(deliveries),
            s.HEADER_DLQ_CONSUMER: durable,
        }
    )
    return out


def _error_name(error: BaseException) -> str:
    """``Type`` or, for a domain error, ``Type[REASON]``: safe to log, never a payload."""
    if isinstance(error, TunewrightError):
        return f"{type(error).__name__}[{error.reason}]"
    return type(error).__name__


MAX_DELIVERIES_ADVISORY: Final = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"


def dead_letter_reason(error: BaseException) -> str:
    """The ``Tw-Dlq-Reason`` header for ``error``.

    ``Type[REASON]: message`` for a :class:`~tunewright.core.errors.TunewrightError` (its
    message is written for callers and must not quote records); only the type name for
    anything else, whose message may quote the payload.
    """
    if not isinstance(error, TunewrightError):
        return type(error).__name__
    reason = f"{_error_name(error)}: {error.message}".replace("\r", " ").replace("\n", " ")
    return reason[:_MAX_REASON_CHARS]


def _server_address(nc: Client) -> str:
    """host:port of the connected server (never the URL: it may carry credentials)."""
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else "?"


def _stream_config(spec: StreamSpec, *, replicas: int = 1) -> js_api.StreamConfig:
    retention = (
        js_api.RetentionPolicy.WORK_QUEUE
        if spec.retention is Retention.WORK_QUEUE
        else js_api.RetentionPolicy.LIMITS
    )
    return js_api.StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=retention,
        storage=js_api.StorageType.FILE,
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=replicas,
    )


def _consumer_config(spec: ConsumerSpec) -> js_api.ConsumerConfig:
    filters = list(spec.filter_subjects)
    return js_api.ConsumerConfig(
        durable_name=spec.durable,
        description=spec.description or None,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
    )


__all__ = [
    "PROCESSED_BUCKET",
    "PROCESSED_TTL_S",
    "ConsumerStatus",
    "Delivery",
    "EventBus",
    "Handler",
    "KvProcessedStore",
    "MemoryProcessedStore",
    "PermanentError",
    "ProcessedStore",
    "StreamStatus",
    "Subscription",
    "UndecodableMessage",
    "dead_letter_reason",
    "decode_event",
    "event_meta",
    "idempotent",
    "is_transient",
    "message_id",
    "processed_key",
    "publish_until_acked",
]
