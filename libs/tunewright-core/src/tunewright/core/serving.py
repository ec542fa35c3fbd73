"""What a serving backend is given and gives back: the contract between the serve service and
the backend plugins (``transformers`` in tunewright-trl, ``vllm`` in tunewright-vllm).

The serve service resolves a model name (a registry alias or a model version id) to a
:class:`~tunewright.core.model_versions.TrainedChain` (the version's trained folders, root
ancestor first, downloaded from the artifact store) and hands the backend one
:class:`GenerationRequest` per HTTP or gRPC request. The backend owns batching, adapter
caching and devices; it yields :class:`Delta` objects as text is produced, the last one with a
``finish_reason``. A backend never sees registry aliases, HTTP or gRPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from tunewright.core.errors import InvalidArgument

if TYPE_CHECKING:  # model_versions imports the artifact store (NATS): plugins import this
    from tunewright.core.model_versions import TrainedChain

FinishReason = Literal["stop", "length"]
#: chat turns as OpenAI sends them: ``{"role": ..., "content": ...}``
Messages = Sequence[Mapping[str, str]]
ROLES = frozenset({"system", "user", "assistant"})
MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    max_tokens: int
    #: 0 = greedy
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidArgument(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.temperature <= 2:
            raise InvalidArgument(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidArgument(f"top_p must be in (0, 1], got {self.top_p}")
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise InvalidArgument(
                f"stop takes at most {MAX_STOP_SEQUENCES} sequences, got {len(self.stop)}"
            )
        if any(not s for s in self.stop):
            raise InvalidArgument("stop sequences must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One request for one resolved model version: chat ``messages`` (the version's chat
    template applies) or a raw ``prompt`` (``/v1/completions``), never both."""

    chain: TrainedChain
    options: SamplingOptions
    messages: Messages | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise InvalidArgument("a generation request has either messages or a prompt")
        if self.messages is not None:
            check_messages(self.messages)

    @property
    def model_version_id(self) -> str:
        return self.chain.model_version_id


@dataclass(frozen=True, slots=True)
class Delta:
    """Text produced since the previous delta; the last delta has ``finish_reason`` and the
    token counts."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class ServingBackend(Protocol):
    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Deltas of the answer to ``request``; raises :class:`InvalidArgument` for a prompt
        the model cannot take (too long) and :class:`FailedPrecondition` for a model version
        it cannot serve."""
        ...

    def loaded(self) -> list[str]:
        """Model version ids whose weights are in memory now."""
        ...

    async def prepare(self, chain: TrainedChain) -> None:
        """Load ``chain``'s weights now (before an alias switches to it), so that the first
        request after a promotion does not wait for them."""
        ...

    async def close(self) -> None: ...


def check_messages(messages: Messages) -> None:
    if not messages:
        raise InvalidArgument("messages must not be empty")
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise InvalidArgument(
                f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}, got {role!r}"
            )
        if not isinstance(message.get("content"), str):
            raise InvalidArgument(f"messages[{i}].content must be a string")
    if messages[-1].get("role") == "assistant":
        raise InvalidArgument("the last message must not be the assistant's (nothing to answer)")
