"""The serve service's domain: a named model and a request in, an answer (streamed) out, the
interaction on its way to the monitor. HTTP (OpenAI-compatible) and gRPC both call this."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tunewright.core.errors import InvalidArgument
from tunewright.core.ids import new_id
from tunewright.core.serving import Delta, GenerationRequest, SamplingOptions, ServingBackend
from tunewright.serve.interactions import Interaction, InteractionLog
from tunewright.serve.models import ModelResolver, Resolved
from tunewright.serve.settings import LimitsSection

Kind = Literal["chat", "text"]


@dataclass(frozen=True)
class SamplingInput:
    """Sampling parameters as a client sent them (``None`` = not given)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: Sequence[str] = ()
    seed: int | None = None


@dataclass
class Completion:
    """One answer being produced: iterate ``deltas``; ``text`` and the counts fill in."""

    id: str
    created: int
    resolved: Resolved
    deltas: AsyncIterator[Delta] = field(default=None, repr=False)  # type: ignore[assignment]
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _first: Delta | None = field(default=None, repr=False)

    @property
    def model_version_id(self) -> str:
        return self.resolved.version.id

    async def collect(self) -> Completion:
        async for _ in self.stream():
            pass
        return self

    async def stream(self) -> AsyncIterator[Delta]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        if self.finish_reason is not None:
            return
        async for delta in self.deltas:
            yield delta


class Serving:
    def __init__(
        self,
        *,
        resolver: ModelResolver,
        backend: ServingBackend,
        interactions: InteractionLog | None,
        limits: LimitsSection,
    ) -> None:
        self.resolver = resolver
        self.backend = backend
        self.interactions = interactions
        self.limits = limits

    def options(self, given: SamplingInput) -> SamplingOptions:
        max_tokens = given.max_tokens or self.limits.default_max_tokens
        if max_tokens > self.limits.max_tokens:
            raise InvalidArgument(
                f"max_tokens is {max_tokens}; this server answers with at most "
                f"{self.limits.max_tokens} tokens",
                reason="MAX_TOKENS_TOO_LARGE",
            )
        return SamplingOptions(
            max_tokens=max_tokens,
            temperature=1.0 if given.temperature is None else float(given.temperature),
            top_p=1.0 if given.top_p is None else float(given.top_p),
            stop=tuple(given.stop),
            seed=given.seed,
        )

    async def start(
        self,
        *,
        workspace: str,
        model: str,
        sampling: SamplingInput,
        messages: Sequence[Mapping[str, str]] | None = None,
        prompt: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> Completion:
        """Resolve the model, queue the request and wait for its first delta, so that every
        error a request can have is raised here (before an HTTP stream has started)."""
        options = self.options(sampling)
        self._check_size(messages, prompt)
        resolved = await self.resolver.resolve(model, workspace)
        request = GenerationRequest(
            chain=resolved.chain,
            options=options,
            messages=[dict(m) for m in messages] if messages is not None else None,
            prompt=prompt,
        )
        kind: Kind = "chat" if messages is not None else "text"
        completion = Completion(
            id=new_id("chatcmpl" if kind == "chat" else "cmpl"),
            created=int(time.time()),
            resolved=resolved,
        )
        completion.deltas = self._track(completion, request, workspace, attributes or {})
        completion._first = await anext(completion.deltas)
        return completion

    async def _track(
        self,
        completion: Completion,
        request: GenerationRequest,
        workspace: str,
        attributes: Mapping[str, str],
    ) -> AsyncIterator[Delta]:
        async for delta in self.backend.generate(request):
            completion.text += delta.text
            if delta.finish_reason is not None:
                completion.finish_reason = delta.finish_reason
                completion.prompt_tokens = delta.prompt_tokens
                completion.completion_tokens = delta.completion_tokens
                self._log(completion, request, workspace, attributes)
            yield delta

    def _log(
        self,
        completion: Completion,
        request: GenerationRequest,
        workspace: str,
        attributes: Mapping[str, str],
    ) -> None:
        if self.interactions is None:
            return
        if request.messages is not None:
            users = [m["content"] for m in request.messages if m.get("role") == "user"]
            prompt = users[-1] if users else ""
        else:
            prompt = request.prompt or ""
        self.interactions.record(
            Interaction(
                interaction_id=completion.id,
                workspace=workspace,
                model_version_id=completion.model_version_id,
                prompt=prompt,
                response=completion.text,
                attributes={**attributes, "channel": attributes.get("channel", "serve")},
            )
        )

    def _check_size(self, messages: Sequence[Mapping[str, str]] | None, prompt: str | None) -> None:
        if messages is not None:
            if len(messages) > self.limits.max_messages:
                raise InvalidArgument(
                    f"{len(messages)} messages; at most {self.limits.max_messages} per request"
                )
            chars = sum(len(m.get("content") or "") for m in messages)
        else:
            chars = len(prompt or "")
        if chars > self.limits.max_prompt_chars:
            raise InvalidArgument(
                f"the prompt is {chars} characters; at most {self.limits.max_prompt_chars}",
                reason="PROMPT_TOO_LONG",
            )

    def feedback(
        self, completion_id: str, *, workspace: str, thumbs: int, escalated: bool, resolved: bool
    ) -> None:
        if self.interactions is None:
            raise InvalidArgument(
                "this server does not log traffic (serve.traffic.enabled is false), so it "
                "takes no feedback",
                reason="TRAFFIC_DISABLED",
            )
        self.interactions.feedback(
            completion_id,
            thumbs=thumbs,
            escalated=escalated,
            resolved=resolved,
            workspace=workspace,
        )
