"""The ``openai-compatible`` generator: chat completions from an HTTP endpoint.

Any server that implements OpenAI's ``POST {base_url}/chat/completions`` works: vLLM, Ollama
(``http://host:11434/v1``), llama.cpp's server, TGI's Messages API, OpenAI itself. It follows
the generator contract of the synth service and the evaluator (see docs/plugins.md,
"Generators"): ``generate(prompts=..., ...) -> list[list[str]]``, one list of
``num_return_sequences`` answers per prompt, in order. ``base``, ``weights`` and
``tokenizer`` describe a local model and are ignored: the endpoint serves its own ``model``.

Requests run ``concurrency`` at a time (default: the call's ``batch_size``). Status 429 and
5xx, timeouts and connection errors are retried with exponential backoff (``Retry-After``
honoured, capped); other 4xx fail at once with the status and the server's error type.
Keys are bound to endpoints by the operator, never chosen by a job: params come from job
specs, which are stored, published in events and returned by Get RPCs, so a spec may name
neither a key (``api_key``) nor the variable to read one from (``api_key_env``), or it could
send any secret of the process to a URL of its choosing. The environment variable
``OPENAI_COMPATIBLE_KEYS`` holds a JSON object ``{"<base_url>": "<ENV VAR>"}``; a request
carries a bearer token only when its ``base_url`` is bound there (``https://api.openai.com/v1``
is bound to ``OPENAI_API_KEY`` unless the object says otherwise). The key is never logged,
repr'd or put in an error; redirects are not followed. Prompts and answers are never logged
either.

Destinations are the operator's too: ``base_url`` must fall under ``outbound.allowed_urls``
(core settings; default: this host only). The service passes its policy as
``outbound=settings.outbound`` to the factory; without it the default applies, and a job's
params cannot set it. Reads are bounded: a response body over ``max_response_bytes``
(default 8 MiB) is cut off with ``GENERATOR_RESPONSE_TOO_LARGE``, and ``timeout_s`` bounds the
whole request (connect, each read, and the body's arrival), not only the gap between bytes.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tunewright.core.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from tunewright.core.settings import OutboundSettings

log = logging.getLogger(__name__)

Messages = Sequence[Mapping[str, str]]

#: statuses worth another attempt: rate limited, or the server failed
_RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: the operator's endpoint -> key bindings (JSON object: base_url -> environment variable)
KEYS_ENV = "OPENAI_COMPATIBLE_KEYS"
DEFAULT_KEYS = {"https://api.openai.com/v1": "OPENAI_API_KEY"}
#: params that would put a secret, or the choice of one, into a job spec
_SECRET_PARAMS = ("api_key", "api_key_env")
_ALLOWED = (
    "base_url",
    "model",
    "timeout_s",
    "max_retries",
    "backoff_s",
    "max_backoff_s",
    "concurrency",
    "extra_body",
    "max_response_bytes",
)
#: the most a response body may hold (a chat completion is kilobytes), and its ceiling
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_MAX_RESPONSE_BYTES_LIMIT = 64 * 1024 * 1024
#: an error body is read this far, for its error type only
_MAX_ERROR_BYTES = 64 * 1024
#: upper bounds of the numeric params (a job must not hold a worker for hours)
_LIMITS = {"timeout_s": 600.0, "max_retries": 10, "max_backoff_s": 300.0, "concurrency": 64}


#: request fields the generator sets itself; ``extra_body`` may not override them
_REQUEST_FIELDS = frozenset(
    {"model", "messages", "n", "seed", "max_tokens", "temperature", "top_p"}
)


def bound_key_env(base_url: str) -> str:
    """The environment variable whose key may be sent to ``base_url`` ("" when none is
    bound): ``$OPENAI_COMPATIBLE_KEYS`` over the defaults, URLs compared without a trailing
    slash."""
    raw = os.environ.get(KEYS_ENV, "").strip()
    try:
        configured = json.loads(raw) if raw else {}
    except ValueError:
        configured = None
    if not isinstance(configured, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in configured.items()
    ):
        raise FailedPrecondition(
            f"${KEYS_ENV} must be a JSON object of base_url -> environment variable name, "
            'e.g. {"http://gpu-box:8000/v1": "VLLM_API_KEY"}',
            reason="GENERATOR_KEYS_INVALID",
        )
    bindings = {url.rstrip("/"): env for url, env in {**DEFAULT_KEYS, **configured}.items()}
    return bindings.get(base_url.rstrip("/"), "")


class OpenAICompatibleGenerator:
    """``factory(base_url=..., model=..., **options)``; see the module docstring."""

    def __init__(self, *, outbound: OutboundSettings | None = None, **params: Any) -> None:
        policy = OutboundSettings.given(outbound)  # the service's; a job cannot pass one
        secret = sorted(set(params) & set(_SECRET_PARAMS))
        if secret:
            raise InvalidArgument(
                f"openai-compatible generator params may not carry {', '.join(secret)}: params "
                f"are stored and published with the job; bind a key to the base_url in "
                f"${KEYS_ENV} of the service that runs the generator",
                reason="SECRET_IN_PARAMS",
                field_violations=[
                    FieldViolation(f"params.{name}", f"not allowed; use ${KEYS_ENV}")
                    for name in secret
                ],
            )
        unknown = sorted(set(params) - set(_ALLOWED))
        if unknown:
            raise InvalidArgument(
                f"unknown openai-compatible generator params: {', '.join(unknown)}",
                field_violations=[
                    FieldViolation(f"params.{name}", f"allowed: {', '.join(_ALLOWED)}")
                    for name in unknown
                ],
            )
        missing = [name for name in ("base_url", "model") if not params.get(name)]
        if missing:
            raise InvalidArgument(
                f"openai-compatible generator needs {' and '.join(missing)}",
                field_violations=[FieldViolation(f"params.{name}", "required") for name in missing],
            )
        self.base_url = str(params["base_url"]).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise InvalidArgument(
                "base_url must be an http(s) URL, e.g. http://127.0.0.1:8000/v1",
                field_violations=[FieldViolation("params.base_url", "not an http(s) URL")],
            )
        policy.check_url(self.base_url, field="params.base_url")
        self.model = str(params["model"])
        self.api_key_env = bound_key_env(self.base_url)
        self._api_key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        self.timeout_s = float(params.get("timeout_s", 60.0))
        self.max_retries = int(params.get("max_retries", 4))
        self.backoff_s = float(params.get("backoff_s", 0.5))
        self.max_backoff_s = float(params.get("max_backoff_s", 20.0))
        self.concurrency = int(params["concurrency"]) if params.get("concurrency") else None
        self.max_response_bytes = int(
            params.get("max_response_bytes") or DEFAULT_MAX_RESPONSE_BYTES
        )
        self.extra_body = dict(params.get("extra_body") or {})
        overlap = sorted(set(self.extra_body) & _REQUEST_FIELDS)
        if overlap:
            raise InvalidArgument(
                f"extra_body may not set {', '.join(overlap)}: the generator sets them from "
                "the call (max_new_tokens, temperature, top_p, seed, num_return_sequences) "
                "and its params",
                field_violations=[
                    FieldViolation(f"params.extra_body.{name}", "set by the generator")
                    for name in overlap
                ],
            )
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0:
            raise InvalidArgument(
                "timeout_s must be > 0, max_retries and backoff_s >= 0",
                field_violations=[FieldViolation("params", "bad timeout or retry settings")],
            )
        over = [
            FieldViolation(f"params.{name}", f"at most {limit}")
            for name, limit in _LIMITS.items()
            if (getattr(self, name) or 0) > limit
        ]
        if not 0 < self.max_response_bytes <= _MAX_RESPONSE_BYTES_LIMIT:
            over.append(
                FieldViolation("params.max_response_bytes", f"in [1, {_MAX_RESPONSE_BYTES_LIMIT}]")
            )
        if over:
            raise InvalidArgument(
                "openai-compatible generator params out of range: "
                + "; ".join(f"{v.field} {v.description}" for v in over),
                field_violations=over,
            )

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"OpenAICompatibleGenerator(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def generate(
        self,
        *,
        prompts: Sequence[Messages],
        base: Any = None,
        weights: Sequence[Path] = (),
        tokenizer: Path | None = None,
        max_new_tokens: int = 64,
        batch_size: int = 8,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        num_return_sequences: int = 1,
    ) -> list[list[str]]:
        """``num_return_sequences`` answers per prompt, in prompt order.

        Greedy (temperature 0) unless ``do_sample`` or more than one answer is asked for.
        ``base``, ``weights`` and ``tokenizer`` are accepted for the contract and ignored.
        """
        if num_return_sequences < 1:
            raise InvalidArgument("num_return_sequences must be >= 1")
        sampling = do_sample or num_return_sequences > 1
        options: dict[str, Any] = {
            "max_tokens": max_new_tokens,
            "temperature": temperature if sampling else 0.0,
            "top_p": top_p if sampling else 1.0,
        }
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        workers = max(1, self.concurrency or batch_size)
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
        with httpx.Client(timeout=timeout, headers=headers, follow_redirects=False) as client:

            def one(item: tuple[int, Messages]) -> list[str]:
                index, messages = item
                answers: list[str] = []
                # servers that ignore ``n`` (Ollama) return one choice: ask again for the rest
                for _ in range(num_return_sequences):
                    if len(answers) >= num_return_sequences:
                        break
                    answers += self._complete(
                        client,
                        messages,
                        n=num_return_sequences - len(answers),
                        seed=seed + index * num_return_sequences + len(answers),
                        options=options,
                    )
                return answers[:num_return_sequences]

            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(one, enumerate(prompts)))

    def _complete(
        self,
        client: httpx.Client,
        messages: Messages,
        *,
        n: int,
        seed: int,
        options: Mapping[str, Any],
    ) -> list[str]:
        body = {
            **self.extra_body,
            **options,
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "n": n,
            "seed": seed,
        }
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                status, headers, data = self._post(client, body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if last:
                    raise Unavailable(
                        f"{self.url} unreachable after {attempt + 1} attempts: "
                        f"{type(exc).__name__}",
                        reason="GENERATOR_UNAVAILABLE",
                    ) from None
                self._wait(attempt, None, f"{type(exc).__name__}")
                continue
            if status == 200:
                return _choices(data, self.url)
            if status in _RETRYABLE and not last:
                self._wait(attempt, headers.get("retry-after"), status)
                continue
            raise _http_error(status, data, self.url, self.model, attempts=attempt + 1)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _post(
        self, client: httpx.Client, body: Mapping[str, Any]
    ) -> tuple[int, httpx.Headers, bytes]:
        """Status, headers and body of one request; the body read up to its limit
        (``max_response_bytes``, an error body 64 KiB) and within ``timeout_s`` overall."""
        deadline = time.monotonic() + self.timeout_s
        with client.stream("POST", self.url, json=body) as response:
            limit = self.max_response_bytes if response.status_code == 200 else _MAX_ERROR_BYTES
            declared = response.headers.get("content-length", "")
            if response.status_code == 200 and declared.isdigit() and int(declared) > limit:
                raise _too_large(self.url, limit)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    if response.status_code != 200:
                        break  # the error type is at the start, if anywhere
                    raise _too_large(self.url, limit)
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(f"the body took over {self.timeout_s} s")
            return response.status_code, response.headers, b"".join(chunks)

    def _wait(self, attempt: int, retry_after: str | None, why: object) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        delay *= 0.5 + random.random() / 2  # jitter: clients that failed together spread out
        if retry_after:
            delay = min(self.max_backoff_s, _retry_after_s(retry_after, delay))
        log.info(
            "generator request retry url=%s model=%s attempt=%d cause=%s wait_s=%.2f",
            self.url,
            self.model,
            attempt + 1,
            why,
            delay,
        )
        time.sleep(delay)


def _too_large(url: str, limit: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"{url} answered with a body over {limit} bytes (params.max_response_bytes)",
        reason="GENERATOR_RESPONSE_TOO_LARGE",
    )


def _choices(body: bytes, url: str) -> list[str]:
    try:
        data = json.loads(body)
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        texts = [str(c["message"].get("content") or "").strip() for c in choices]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise FailedPrecondition(
            f"{url} answered 200 without a chat-completions body (choices[].message.content)",
            reason="GENERATOR_BAD_RESPONSE",
        ) from None
    if not texts:
        raise FailedPrecondition(f"{url} returned no choices", reason="GENERATOR_BAD_RESPONSE")
    return texts


def _http_error(status: int, body: bytes, url: str, model: str, *, attempts: int) -> Exception:
    """A domain error naming the status and the server's error type (never its message:
    servers may quote the prompt back)."""
    kind = ""
    try:
        error = json.loads(body).get("error")
        if isinstance(error, dict):
            kind = str(error.get("type") or error.get("code") or "")[:80]
    except (ValueError, AttributeError, RecursionError):
        pass
    what = f"{url} (model {model!r}) answered HTTP {status}" + (f" {kind}" if kind else "")
    if status in _RETRYABLE:
        return Unavailable(f"{what} after {attempts} attempts", reason="GENERATOR_UNAVAILABLE")
    if status == 401:
        return Unauthenticated(
            f"{what}: bind an API key to this base_url in ${KEYS_ENV} (base_url -> "
            "environment variable) and set that variable for the service",
            reason="GENERATOR_UNAUTHENTICATED",
        )
    if status == 403:
        return PermissionDenied(what, reason="GENERATOR_FORBIDDEN")
    if status == 404:
        return NotFound(f"{what}: wrong base_url or model name", reason="GENERATOR_NOT_FOUND")
    return InvalidArgument(what, reason="GENERATOR_REJECTED_REQUEST")


def _retry_after_s(value: str, fallback: float) -> float:
    """Seconds a ``Retry-After`` header asks for: delta-seconds or an HTTP date (RFC 9110);
    ``fallback`` when it is neither."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return fallback
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())
