"""The OpenAI-compatible HTTP API (FastAPI): ``/v1/models``, ``/v1/chat/completions`` (with
``stream: true`` as server-sent events), ``/v1/completions``, plus ``/v1/feedback`` (tunewright's
own: thumbs, escalated, resolved for an answer) and ``/health``.

Requests and answers have OpenAI's shapes, so the official ``openai`` client works with
``base_url=http://host:port/v1``; errors too: ``{"error": {"message", "type", "param",
"code"}}`` with OpenAI's status codes (an unknown model is 404 ``model_not_found``). Parameters
this server cannot honour (``n`` > 1, tools, logprobs, JSON response formats) are refused by
name rather than silently ignored. Every route but ``/health`` needs ``Authorization: Bearer
<key>``; bodies above ``max_body_bytes`` are refused before they are read whole.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from tunewright.core.errors import TunewrightError
from tunewright.serve.serving import Completion, SamplingInput, Serving

log = logging.getLogger(__name__)

# OpenAI's status and error type per tunewright error code
_STATUS: dict[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "NOT_FOUND": (404, "invalid_request_error"),
    "ABORTED": (409, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "UNAVAILABLE": (503, "server_error"),
    "DEADLINE_EXCEEDED": (504, "server_error"),
}
_CODES = {
    "MODEL_NOT_FOUND": "model_not_found",
    "CONTEXT_LENGTH_EXCEEDED": "context_length_exceeded",
    "SERVE_QUEUE_FULL": "rate_limit_exceeded",
}


class _Body(BaseModel):
    # unknown fields are allowed (clients send defaults such as `user`); ones that would
    # change the answer and are not supported are refused in `_refuse_unsupported`
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    #: OpenAI's newer name for max_tokens (it wins when both are given)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # int64, as in gRPC
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1

    def sampling(self) -> SamplingInput:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        max_tokens = self.max_completion_tokens or self.max_tokens
        return SamplingInput(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            seed=self.seed,
        )


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: only text parts are understood
            kinds = {str(p.get("type")) for p in self.content}
            if kinds - {"text"}:
                raise _ApiError(
                    400,
                    f"content parts of type {sorted(kinds - {'text'})} are not supported",
                    param="messages",
                )
            return "".join(str(p.get("text", "")) for p in self.content)
        return self.content or ""


class ChatBody(_Body):
    messages: list[_Message] = Field(min_length=1)
    #: helpdesk labels for the monitor (category, product, channel); tunewright's own
    metadata: dict[str, str] | None = None


class CompletionBody(_Body):
    prompt: str | list[str]


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    completion_id: str = Field(min_length=1, max_length=128)
    thumbs: int = Field(default=0, ge=-1, le=1)
    escalated: bool = False
    resolved: bool = False


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (
            status,
            message,
            kind,
            param,
            code,
        )


def _error(
    status: int, message: str, kind: str, param: str | None, code: str | None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        status_code=status,
    )


_UNSUPPORTED = (
    "tools",
    "functions",
    "tool_choice",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "echo",
    "best_of",
    "suffix",
)


def _refuse_unsupported(body: _Body) -> None:
    if body.n != 1:
        raise _ApiError(400, "n must be 1: this server returns one choice", param="n")
    extra = body.model_extra or {}
    for name in _UNSUPPORTED:
        if extra.get(name) not in (None, False, [], {}, 0):
            raise _ApiError(400, f"{name} is not supported by this server", param=name)
    fmt = extra.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise _ApiError(
            400, "only response_format {'type': 'text'} is supported", param="response_format"
        )


class _BodyLimit:
    """ASGI middleware: a body longer than ``limit`` bytes is 413 before it is read whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = _error(
            413,
            f"request body is larger than {self.limit} bytes",
            "invalid_request_error",
            None,
            "request_too_large",
        )
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_large(scope, receive, send)
            return
        seen, over, started = 0, False, False

        async def limited() -> Any:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _TooLarge
            return message

        async def send_unless_over(message: Any) -> None:
            # FastAPI turns an exception while it reads the body into its own 400: once the
            # limit is passed, the app's answer is dropped and the 413 below sent instead
            nonlocal started
            if over:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, send_unless_over)
        except _TooLarge:
            pass
        if over and not started:
            await too_large(scope, receive, send)


class _TooLarge(Exception):
    pass


def build_app(
    serving: Serving,
    *,
    api_keys: Sequence[str],
    workspace: str,
    max_body_bytes: int,
    list_models: Callable[[], Awaitable[list[dict[str, Any]]]],
) -> Any:
    """The ASGI app. ``api_keys`` empty = no authentication (the explicit insecure mode)."""
    app = FastAPI(title="tunewright serve", docs_url=None, redoc_url=None, openapi_url=None)
    expected = [f"Bearer {k}".encode() for k in api_keys]

    @app.exception_handler(_ApiError)
    async def api_error(request: Request, exc: _ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind, exc.param, exc.code)

    @app.exception_handler(TunewrightError)
    async def domain_error(request: Request, exc: TunewrightError) -> JSONResponse:
        status, kind = _STATUS.get(exc.code, (500, "server_error"))
        if exc.reason == "REGISTRY_UNAVAILABLE":  # the registry, not the request, is at fault
            status, kind = 503, "server_error"
        code = _CODES.get(exc.reason or "", (exc.reason or "").lower() or None)
        if status == 500:
            log.error("request failed path=%s", request.url.path, exc_info=exc)
            return _error(500, "internal error", "server_error", None, None)
        param = "model" if exc.reason == "MODEL_NOT_FOUND" else None
        return _error(status, exc.message, kind, param, code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(
            400,
            f"{where or 'body'}: {first.get('msg', 'invalid request')}",
            "invalid_request_error",
            where or None,
            None,
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # unknown routes and methods, in OpenAI's error shape too
        return _error(exc.status_code, str(exc.detail), "invalid_request_error", None, None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed path=%s", request.url.path, exc_info=exc)
        return _error(500, "internal error", "server_error", None, None)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        if request.url.path != "/health" and expected:
            presented = (request.headers.get("authorization") or "").encode()
            if not any(hmac.compare_digest(presented, e) for e in expected):
                return _error(
                    401,
                    "missing or invalid API key (Authorization: Bearer <key>)",
                    "authentication_error",
                    None,
                    "invalid_api_key",
                )
        response: Response = await call_next(request)
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "loaded": serving.backend.loaded()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": await list_models()}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        resolved = await serving.resolver.resolve(name, workspace)
        return _model_card(name, resolved.version.id, workspace)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatBody) -> Response:
        _refuse_unsupported(body)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        completion = await serving.start(
            workspace=workspace,
            model=body.model,
            sampling=body.sampling(),
            messages=messages,
            attributes=body.metadata,
        )
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return _sse(_chat_chunks(completion, body.model, usage))
        await completion.collect()
        return JSONResponse(
            {
                "id": completion.id,
                "object": "chat.completion",
                "created": completion.created,
                "model": body.model,
                "system_fingerprint": completion.model_version_id,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": completion.text},
                        "finish_reason": completion.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": _usage(completion),
            },
            headers={"x-tunewright-model-version": completion.model_version_id},
        )

    @app.post("/v1/completions", response_model=None)
    async def complete(body: CompletionBody) -> Response:
        _refuse_unsupported(body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise _ApiError(400, "prompt must be one string", param="prompt")
        completion = await serving.start(
            workspace=workspace, model=body.model, sampling=body.sampling(), prompt=prompts[0]
        )
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return _sse(_text_chunks(completion, body.model, usage))
        await completion.collect()
        return JSONResponse(
            {
                "id": completion.id,
                "object": "text_completion",
                "created": completion.created,
                "model": body.model,
                "system_fingerprint": completion.model_version_id,
                "choices": [
                    {
                        "index": 0,
                        "text": completion.text,
                        "finish_reason": completion.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": _usage(completion),
            },
            headers={"x-tunewright-model-version": completion.model_version_id},
        )

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackBody) -> dict[str, Any]:
        serving.feedback(
            body.completion_id,
            workspace=workspace,
            thumbs=body.thumbs,
            escalated=body.escalated,
            resolved=body.resolved,
        )
        return {"completion_id": body.completion_id, "status": "recorded"}

    return _BodyLimit(app, max_body_bytes)


def _model_card(name: str, model_version_id: str, workspace: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": workspace,
        "model_version_id": model_version_id,
    }


def _usage(c: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


async def _chat_chunks(c: Completion, model: str, usage: bool) -> AsyncIterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": model,
            "system_fingerprint": c.model_version_id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    yield chunk({"role": "assistant", "content": ""}, None)
    async for delta in c.stream():
        if delta.text:
            yield chunk({"content": delta.text}, None)
        if delta.finish_reason is not None:
            yield chunk({}, delta.finish_reason)
    if usage:
        yield {**chunk({}, None), "choices": [], "usage": _usage(c)}


async def _text_chunks(c: Completion, model: str, usage: bool) -> AsyncIterator[dict[str, Any]]:
    def chunk(text: str, finish: str | None) -> dict[str, Any]:
        return {
            "id": c.id,
            "object": "text_completion",
            "created": c.created,
            "model": model,
            "system_fingerprint": c.model_version_id,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        }

    async for delta in c.stream():
        if delta.text or delta.finish_reason is not None:
            yield chunk(delta.text, delta.finish_reason)
    if usage:
        yield {**chunk("", None), "choices": [], "usage": _usage(c)}
