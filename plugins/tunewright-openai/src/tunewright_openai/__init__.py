"""First-party generator plugin ``openai-compatible``: chat completions over HTTP.

Registration is cheap: httpx is imported when a generator is built.
"""

from __future__ import annotations

from typing import Any

from tunewright.core.plugins import GeneratorRegistry, hookimpl


def _make_generator(**params: Any) -> Any:
    from tunewright_openai.client import OpenAICompatibleGenerator

    return OpenAICompatibleGenerator(**params)


@hookimpl
def tw_register_generators(registry: GeneratorRegistry) -> None:
    registry.add(
        name="openai-compatible",
        factory=_make_generator,
        dataset_kinds=["sft", "preference"],
        description="Chat completions from an OpenAI-compatible HTTP endpoint (vLLM, Ollama, "
        "llama.cpp, TGI, OpenAI): params base_url, model; keys bound to base_urls in "
        "$OPENAI_COMPATIBLE_KEYS.",
    )
