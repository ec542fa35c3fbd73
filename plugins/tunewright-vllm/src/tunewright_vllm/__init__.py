"""First-party serving backend ``vllm``: model versions as LoRA adapters of one ``hf:`` base
folder, served by a ``vllm serve`` child process (GPU hosts). See README.md.

Registration is cheap: the backend (and httpx) is imported when the serve service builds it.
"""

from __future__ import annotations

from typing import Any

from tunewright.core.plugins import ServingBackendRegistry, hookimpl


def _make_backend(**params: Any) -> Any:
    from tunewright_vllm.backend import VllmBackend

    return VllmBackend(**params)


@hookimpl
def tw_register_serving_backends(registry: ServingBackendRegistry) -> None:
    registry.add(
        name="vllm",
        factory=_make_backend,
        description="vLLM on a GPU host: a `vllm serve` child process with one hf: base folder "
        "and every model version as a LoRA adapter (added at runtime on promotion); params "
        "max_loras, max_lora_rank, dtype, gpu_memory_utilization, max_model_len, ...",
    )
