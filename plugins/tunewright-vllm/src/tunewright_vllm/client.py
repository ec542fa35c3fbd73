"""HTTP to the child ``vllm serve``: health, served models, runtime adapter loads, and streamed
generations parsed from server-sent events.

Endpoints (vLLM's OpenAI-compatible server, https://docs.vllm.ai/en/latest/serving/openai_compatible_server/
and https://docs.vllm.ai/en/latest/features/lora/):

- ``GET /health``: 200 once the engine is up (not behind the API key);
- ``GET /v1/models``: the base model and every adapter, by name;
- ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"}``: 200 when added, 400 when the
  name is already loaded (vllm/entrypoints/openai/models/serving.py); exists only with
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``;
- ``POST /v1/chat/completions`` / ``/v1/completions`` with ``stream: true`` and
  ``stream_options: {"include_usage": true}``: ``data: {chunk}`` events, the text in
  ``choices[0].delta.content`` (chat) or ``choices[0].text``, ``finish_reason`` on the last
  choice chunk, then a chunk with ``usage`` and no choices, then ``data: [DONE]``.

httpx is imported when the first request is made. Proxies from the environment are ignored
(the server is on 127.0.0.1) and redirects are not followed. Error messages name the route,
the status and vLLM's error *type*, never its message text for generation requests (it may
quote the prompt) nor the API key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from tunewright.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from tunewright.core.serving import Delta, FinishReason, GenerationRequest
from tunewright_vllm.adapters import Adapter

if TYPE_CHECKING:
    import httpx

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
LOAD_ADAPTER_PATH = "/v1/load_lora_adapter"


class AdapterNotServed(Exception):
    """vLLM answered 404 for the request's model: the server lost or never had the adapter
    (a restart); the backend registers it again and retries once."""


class SseDecoder:
    """Server-sent events read line by line (the WHATWG event-stream format): ``data:`` lines
    of one event are joined with newlines, a blank line ends the event, ``:`` lines are
    comments, other fields are ignored."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """The data of the event ``line`` ends, else ``None``."""
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None

    def flush(self) -> str | None:
        """The data of an event the stream ended without a blank line after."""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


def request_body(request: GenerationRequest, model: str) -> tuple[str, dict[str, Any]]:
    """``(path, JSON body)`` of the streamed OpenAI request for ``request`` on ``model``."""
    options = request.options
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if options.stop:
        body["stop"] = list(options.stop)
    if options.seed is not None:
        body["seed"] = options.seed
    if request.messages is not None:
        body["messages"] = [{"role": m["role"], "content": m["content"]} for m in request.messages]
        return CHAT_PATH, body
    body["prompt"] = request.prompt
    return COMPLETIONS_PATH, body


def _finish_reason(value: object) -> FinishReason:
    return "length" if value == "length" else "stop"


def _error_type(payload: object) -> str:
    """vLLM's error type from ``{"error": {"type": ...}}`` (current) or ``{"type": ...}``."""
    if isinstance(payload, Mapping):
        error = payload.get("error", payload)
        if isinstance(error, Mapping) and isinstance(error.get("type"), str):
            return str(error["type"])
    return "unknown"


def _error_message(payload: object) -> str:
    if isinstance(payload, Mapping):
        error = payload.get("error", payload)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
    return ""


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


class VllmClient:
    """One base URL and API key; one ``httpx.AsyncClient`` made on first use."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float) -> None:
        self.base_url = base_url
        self._api_key = api_key
        self.timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"VllmClient(base_url={self.base_url!r})"

    def _client(self) -> httpx.AsyncClient:
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=httpx.Timeout(self.timeout_s, connect=10.0),
                follow_redirects=False,
                trust_env=False,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def healthy(self) -> bool:
        """Whether ``GET /health`` answers 200 now (a refused connection is ``False``)."""
        import httpx

        try:
            response = await self._client().get("/health", timeout=5.0)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def models(self) -> list[str]:
        """The names ``GET /v1/models`` lists: the base model and the adapters."""
        import httpx

        try:
            response = await self._client().get("/v1/models")
        except httpx.TransportError as exc:
            raise self._unreachable("/v1/models", exc) from exc
        if response.status_code in (401, 403):
            raise FailedPrecondition(
                f"{self.base_url}/v1/models refused the backend's API key (status "
                f"{response.status_code}): another server answers on this port",
                reason="VLLM_FOREIGN_SERVER",
            )
        if response.status_code != 200:
            raise Unavailable(
                f"{self.base_url}/v1/models answered {response.status_code}",
                reason="VLLM_UNAVAILABLE",
            )
        data = _json(response.text)
        entries = data.get("data", []) if isinstance(data, Mapping) else []
        return [str(e["id"]) for e in entries if isinstance(e, Mapping) and "id" in e]

    async def load_adapter(self, adapter: Adapter) -> None:
        """``POST /v1/load_lora_adapter``; an adapter the server already has is fine."""
        import httpx

        body = {"lora_name": adapter.name, "lora_path": str(adapter.path)}
        try:
            response = await self._client().post(LOAD_ADAPTER_PATH, json=body)
        except httpx.TransportError as exc:
            raise self._unreachable(LOAD_ADAPTER_PATH, exc) from exc
        if response.status_code == 200:
            return
        payload = _json(response.text)
        if response.status_code == 400 and adapter.name in await self.models():
            return  # "has already been loaded"
        if response.status_code == 404 and _error_type(payload) == "unknown":
            # FastAPI's own {"detail": "Not Found"}: no such route. (A 404 with an error type
            # is vLLM's LoRAAdapterNotFoundError: nothing loadable at lora_path.)
            raise FailedPrecondition(
                f"{self.base_url}{LOAD_ADAPTER_PATH} is missing (404): the server runs "
                "without VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
                reason="VLLM_RUNTIME_LORA_DISABLED",
            )
        # the message is about the adapter (its path, its config), never about a request
        raise FailedPrecondition(
            f"vLLM could not load the adapter of model version {adapter.model_version_id} "
            f"from {adapter.path}: {response.status_code} {_error_type(payload)} "
            f"{_error_message(payload)}".rstrip(),
            reason="VLLM_ADAPTER_LOAD_FAILED",
        )

    async def stream(self, path: str, body: Mapping[str, Any]) -> AsyncIterator[Delta]:
        """The deltas of one streamed completion; the last one has ``finish_reason`` and the
        token counts. Raises :class:`AdapterNotServed` (404, before anything was yielded),
        :class:`InvalidArgument` (400/422: a prompt too long for ``max_model_len``, an option
        the model cannot take) and :class:`Unavailable` (unreachable, 5xx, a cut stream)."""
        import httpx

        model = str(body.get("model", ""))
        finish: FinishReason | None = None
        usage: Mapping[str, Any] = {}
        try:
            async with self._client().stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._raise_for_generation(path, model, response.status_code, response.text)
                decoder = SseDecoder()
                async for line in response.aiter_lines():
                    data = decoder.feed(line)
                    if data is None:
                        continue
                    if data.strip() == "[DONE]":
                        break
                    chunk = _json(data)
                    if not isinstance(chunk, Mapping):
                        raise Unavailable(
                            f"{self.base_url}{path}: a stream event is not JSON",
                            reason="VLLM_BAD_STREAM",
                        )
                    if "error" in chunk or chunk.get("object") == "error":
                        raise Unavailable(
                            f"{self.base_url}{path} failed mid-stream for model {model}: "
                            f"{_error_type(chunk)}",
                            reason="VLLM_STREAM_ERROR",
                        )
                    for choice in chunk.get("choices") or ():
                        text = _choice_text(choice)
                        if text:
                            yield Delta(text)
                        if choice.get("finish_reason") is not None:
                            finish = _finish_reason(choice["finish_reason"])
                    if isinstance(chunk.get("usage"), Mapping):
                        usage = chunk["usage"]
        except httpx.TransportError as exc:
            raise self._unreachable(path, exc) from exc
        if finish is None:
            raise Unavailable(
                f"{self.base_url}{path}: the stream ended without a finish_reason",
                reason="VLLM_BAD_STREAM",
            )
        yield Delta(
            "",
            finish_reason=finish,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    def _raise_for_generation(self, path: str, model: str, status: int, text: str) -> None:
        kind = _error_type(_json(text))
        where = f"{self.base_url}{path} (model {model})"
        if status == 404:
            raise AdapterNotServed(model)
        if status in (400, 413, 422):
            raise InvalidArgument(
                f"vLLM refused the request: {status} {kind} (a prompt too long for the "
                "model's max_model_len, or an option it cannot take)",
                reason="VLLM_BAD_REQUEST",
            )
        if status in (401, 403):
            raise FailedPrecondition(
                f"{where} refused the backend's API key ({status})", reason="VLLM_FOREIGN_SERVER"
            )
        raise Unavailable(f"{where} answered {status} {kind}", reason="VLLM_UNAVAILABLE")

    def _unreachable(self, path: str, exc: Exception) -> Unavailable:
        return Unavailable(
            f"vLLM at {self.base_url}{path} is unreachable: {type(exc).__name__}",
            reason="VLLM_UNAVAILABLE",
        )


def _choice_text(choice: Mapping[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, Mapping):  # chat
        content = delta.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")  # completions
    return text if isinstance(text, str) else ""
