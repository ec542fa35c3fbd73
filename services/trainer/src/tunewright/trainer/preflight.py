"""Pre-flight: check a job against the installed plugins and its inputs before it is queued.

Every problem becomes a field violation (``spec.datasets[0]``, ``spec.method_config.beta``)
so a client sees all of them at once: the base model resolves and its template has an EOS,
the method exists and its config parses, each dataset exists and its kind fits the method,
method x quantization x PEFT fit, trackers exist, and the memory estimate fits the device.

The same resolution produces the :class:`Plan` the job's child process trains from (every
default filled in), so what was validated is what runs.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tunewright.core.artifacts import ArtifactRef
from tunewright.core.errors import InvalidArgument
from tunewright.core.plugins import Registries, UnknownCapabilityError
from tunewright.core.settings import OutboundSettings
from tunewright.trainer.jobs import JobSpec

# --- the memory estimate's constants (see estimate_memory) ---
# bytes per trained parameter, mixed precision: fp32 master weight, gradient, two Adam moments
_TRAINED_BYTES_PER_PARAM = 16
# bytes per frozen parameter of a bitsandbytes base: nf4 with double-quant constants is ~0.52
# bytes, 8-bit ~1.03, but the embeddings and the LM head stay 16-bit (~12% of an 8B Llama, 1.05
# of 8.0 B): Llama-3.1-8B loads in 4 bits in ~5.7 GB (0.71 bytes per parameter)
_QUANTIZED_BYTES_PER_PARAM = {4: 0.71, 8: 1.2}
# activation bytes per token, hidden unit and layer besides attention scores, at 16 bits
# (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models")
_ACTIVATION_BYTES = 34
# CUDA context, cuBLAS workspace and allocator slack on a GPU
_GPU_OVERHEAD_BYTES = 2**30
_LORA_DEFAULTS: Mapping[str, Any] = {"r": 16, "dropout": 0.05, "target_modules": []}


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """A dataset version as the trainer needs it: its kind and split rows."""

    id: str
    kind: str  # sft | preference | unpaired | prompt | eval
    train: ArtifactRef
    eval: ArtifactRef | None = None


class DatasetResolver(Protocol):
    async def resolve(self, dataset_id: str) -> DatasetInfo | None: ...


class ModelResolver(Protocol):
    """Finds the output folder (artifact) of a model version this trainer produced."""

    def model_output(self, model_version_id: str) -> ArtifactRef | None: ...


@dataclass(slots=True)
class Plan:
    """Everything the child process needs, all defaults resolved (JSON-serialisable)."""

    base_scheme: str
    base_reference: str
    method: str
    method_config: dict[str, Any]
    hyperparameters: dict[str, Any]
    peft: dict[str, Any]
    quantization: dict[str, Any]
    seed: int
    device: str
    checkpoint_every: int
    datasets: list[DatasetInfo] = field(default_factory=list)
    eval_dataset: DatasetInfo | None = None
    parent_model: ArtifactRef | None = None
    reward_model: ArtifactRef | None = None


@dataclass(slots=True)
class Preflight:
    violations: list[tuple[str, str]]
    estimated_memory_bytes: int = 0
    device_memory_bytes: int = 0
    plan: Plan | None = None

    @property
    def valid(self) -> bool:
        return not self.violations


async def preflight(
    spec: JobSpec,
    *,
    registries: Registries,
    datasets: DatasetResolver,
    models: ModelResolver,
    default_checkpoint_every: int,
    outbound: OutboundSettings | None = None,
    tracking_dir: Path | None = None,
) -> Preflight:
    bad: list[tuple[str, str]] = []

    # --- base model ---
    base_obj: Any = None
    scheme, _, reference = spec.base_model.partition(":")
    if not spec.base_model:
        bad.append(
            (
                "spec.base_model",
                "required (hf:<path>, tiny:<preset>, gguf:<file>, pkg:<package>/<file>), "
                "or a parent_model this trainer produced",
            )
        )
    elif not reference:
        bad.append(("spec.base_model", f"{spec.base_model!r} is not <scheme>:<reference>"))
    else:
        try:
            factory = registries.base_models.get(scheme).factory
        except UnknownCapabilityError as exc:
            bad.append(("spec.base_model", exc.message))
        else:
            base_obj = factory(reference, seed=spec.seed)
            bad += [(f"spec.{f}", reason) for f, reason in base_obj.preflight()]
            if not bad:
                template = base_obj.chat_template or ""
                eos = base_obj.eos_token or ""
                if not eos:
                    bad.append(("spec.base_model", "the model's tokenizer has no EOS token"))
                elif eos not in template and "eos_token" not in template:
                    bad.append(
                        ("spec.base_model", f"the chat template never emits the EOS {eos!r}")
                    )

    # --- method and its config ---
    method_obj: Any = None
    config: Any = None
    dataset_kinds: frozenset[str] = frozenset()
    try:
        method_spec = registries.training_methods.get(spec.method)
    except UnknownCapabilityError as exc:
        bad.append(("spec.method", exc.message))
    else:
        method_obj = method_spec.factory()
        dataset_kinds = method_spec.dataset_kinds
        config, config_bad = _parse_config(method_spec.config_cls, spec.method_config)
        bad += config_bad

    # --- datasets ---
    infos: list[DatasetInfo] = []
    if not spec.dataset_ids:
        bad.append(("spec.datasets", "at least one dataset version is required"))
    for i, dataset_id in enumerate(spec.dataset_ids):
        info = await datasets.resolve(dataset_id) if dataset_id else None
        if info is None:
            bad.append((f"spec.datasets[{i}]", f"unknown dataset version {dataset_id!r}"))
        elif dataset_kinds and info.kind not in dataset_kinds:
            bad.append(
                (
                    f"spec.datasets[{i}]",
                    f"dataset kind {info.kind!r} does not fit method {spec.method!r} "
                    f"(it trains on {', '.join(sorted(dataset_kinds))})",
                )
            )
        else:
            infos.append(info)
    eval_info = None
    if spec.eval_dataset_id:
        eval_info = await datasets.resolve(spec.eval_dataset_id)
        if eval_info is None:
            bad.append(("spec.eval_dataset", f"unknown dataset version {spec.eval_dataset_id!r}"))

    # --- parent and reward models ---
    parent = reward = None
    if spec.parent_model_id:
        parent = models.model_output(spec.parent_model_id)
        if parent is None:
            bad.append(
                (
                    "spec.parent_model",
                    f"model version {spec.parent_model_id!r} was not produced by this trainer",
                )
            )
    if spec.reward_model_id:
        reward = models.model_output(spec.reward_model_id)
        if reward is None:
            bad.append(
                (
                    "spec.reward_model",
                    f"model version {spec.reward_model_id!r} was not produced by this trainer",
                )
            )
    elif spec.method == "rlhf":
        bad.append(("spec.reward_model", "rlhf needs a reward model version"))

    # --- trackers ---
    for i, (name, params) in enumerate(spec.trackers):
        if name not in registries.trackers:
            bad.append(
                (
                    f"spec.trackers[{i}].name",
                    f"unknown tracker {name!r}; registered: "
                    f"{', '.join(registries.trackers.names()) or 'none'}",
                )
            )
            continue
        # a tracker's destination (tracking_uri, logdir, path) against the operator's
        # outbound allow-lists, before the job is queued; check() makes nothing
        check = getattr(registries.trackers.get(name).factory, "check", None)
        if check is not None and tracking_dir is not None:
            try:
                check(directory=tracking_dir, outbound=outbound, **params)
            except InvalidArgument as exc:
                bad += [
                    (f"spec.trackers[{i}].{v.field}", v.description) for v in exc.field_violations
                ] or [(f"spec.trackers[{i}].params", exc.message)]
            except TypeError as exc:  # an unknown param
                bad.append((f"spec.trackers[{i}].params", str(exc)[:200]))

    if spec.device not in ("auto", "cpu", "cuda"):
        bad.append(("spec.resources.device", f"must be cpu, cuda or auto; got {spec.device!r}"))

    # --- hyperparameters, PEFT, quantization (need the method) ---
    if method_obj is None or config is None:
        return Preflight(bad)
    defaults = method_obj.default_hyperparameters()
    bad += [
        (
            f"spec.hyperparameters.{key}",
            f"unknown hyperparameter; method {spec.method} takes: {', '.join(defaults)}",
        )
        for key in spec.hyperparameters
        if key not in defaults
    ]
    hp = {**defaults, **spec.hyperparameters}
    peft = _resolve_peft(spec.peft)
    quant = dict(spec.quantization)
    bad += [
        (f"spec.{f}", reason)
        for f, reason in method_obj.preflight(
            config=config, peft=peft, quantization=quant or None, hyperparameters=hp
        )
    ]
    if peft.get("layers_to_transform") and not peft.get("target_modules"):
        bad.append(
            (
                "spec.peft.layers_to_transform",
                "needs explicit peft.target_modules (PEFT cannot combine it with all-linear), "
                "e.g. [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]",
            )
        )
    if quant and quant["quant_type"] not in ("nf4", "fp4"):
        bad.append(("spec.quantization.quant_type", "must be nf4 or fp4"))
    checkpoint_every = spec.checkpoint_every_steps or default_checkpoint_every
    if checkpoint_every < 1:
        bad.append(("spec.checkpoint_every_steps", "must be >= 1"))

    estimate = device_memory = 0
    if base_obj is not None and not bad:
        memory = memory_estimate(
            base_obj.parameter_count(),
            hp,
            peft,
            quant,
            device=spec.device,
            sequences_per_example=2 if "preference" in dataset_kinds else 1,
        )
        estimate = memory.total
        device_memory = spec.memory_limit_bytes or device_memory_bytes(spec.device)
        if device_memory and estimate > device_memory:
            bad.append(
                (
                    "spec.resources",
                    f"estimated memory {estimate / 2**30:.1f} GiB ({memory.describe()}) exceeds "
                    f"the device's {device_memory / 2**30:.1f} GiB: use LoRA/QLoRA, gradient "
                    "checkpointing, a smaller batch_size or max_length",
                )
            )
    plan = Plan(
        base_scheme=scheme,
        base_reference=reference,
        method=spec.method,
        method_config=dataclasses.asdict(config),
        hyperparameters=hp,
        peft=peft,
        quantization=quant,
        seed=spec.seed,
        device=spec.device,
        checkpoint_every=checkpoint_every,
        datasets=infos,
        eval_dataset=eval_info,
        parent_model=parent,
        reward_model=reward,
    )
    return Preflight(bad, estimate, device_memory, None if bad else plan)


def _parse_config(
    config_cls: type[Any], raw: Mapping[str, Any]
) -> tuple[Any, list[tuple[str, str]]]:
    """Parse ``method_config`` into the method's dataclass; Struct numbers become ints where
    the field is an int."""
    known = {f.name: f for f in dataclasses.fields(config_cls)}
    bad = [
        (f"spec.method_config.{key}", f"unknown field; {config_cls.__name__} has: "
         f"{', '.join(known)}")
        for key in raw
        if key not in known
    ]  # fmt: skip
    if bad:
        return None, bad
    hints = typing.get_type_hints(config_cls)
    values = {}
    for key, value in raw.items():
        if hints.get(key) is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        values[key] = value
    try:
        return config_cls(**values), []
    except (ValueError, TypeError) as exc:
        return None, [("spec.method_config", str(exc))]


def _resolve_peft(raw: Mapping[str, Any]) -> dict[str, Any]:
    kind = raw.get("type", "lora")
    if kind == "none":
        return {"type": "none"}
    peft = {"type": "lora", **_LORA_DEFAULTS, **raw}
    peft.setdefault("alpha", 2.0 * float(peft["r"]))
    return peft


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Training memory in bytes by kind (see :func:`memory_estimate`)."""

    weights: int
    optimizer: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.activations + self.overhead

    def describe(self) -> str:
        parts = [
            ("weights", self.weights),
            ("trained parameters", self.optimizer),
            ("activations", self.activations),
        ]
        return ", ".join(f"{name} {value / 2**30:.1f}" for name, value in parts)


def memory_estimate(
    params: int,
    hp: Mapping[str, Any],
    peft: Mapping[str, Any],
    quant: Mapping[str, Any],
    *,
    device: str = "auto",
    sequences_per_example: int = 1,
) -> MemoryEstimate:
    """Peak training memory of a Llama-like decoder, roughly (good to a factor of ~1.5; meant
    to stop jobs that cannot fit, not to pack a card).

    - Weights: what is frozen at its storage size (16-bit under ``precision`` bf16/fp16, and
      ``auto`` everywhere but on ``device: cpu``; 4/8-bit with quantization), and everything
      that trains at ``_TRAINED_BYTES_PER_PARAM`` (fp32 weight, gradient, Adam moments). LoRA
      on all linear layers at r=16 trains ~0.5% of a Llama (42 M of 8.0 B); 1% is assumed.
    - Activations per token (``batch_size x max_length x sequences_per_example``: a preference
      pair runs chosen and rejected): with gradient checkpointing (``gradient_checkpointing``;
      unset means on for a quantized base, as the TRL methods do) each decoder layer keeps its
      16-bit input, and one layer at a time is recomputed with its gradients (twice one layer's
      ``34 h`` bytes); without it every layer keeps ``34 h`` bytes. ``attn_implementation``
      eager adds the attention scores (``5 heads seq`` bytes per layer); sdpa and flash
      attention never materialise them. TRL >= 1.16 scores tokens through a tiled LM head
      (``trl.kernels.chunked_logprob``), so the ``batch x seq x vocab`` logits that dominate
      older Hugging Face recipes are not held: only the head's fp32 hidden state and its
      gradient (``8 h`` bytes).
    - The shape is inferred from the parameter count (``P ~ 12 L h^2``, ``L ~ h / 128``,
      128-wide heads).

    Calibration (published peak memory for Llama-3.1-8B, 2,048-token sequences):

    - torchtune README, "Memory and training speed" (batch 2, packed 2,048, compile, chunked
      cross-entropy, activation checkpointing): QLoRA 7.4 GiB (this estimate, r=8: 10.1),
      LoRA bf16 16.2 GiB on a 4090 and 30.3 GiB on an A6000 (this: 20.7 with checkpointing,
      39.2 without), full fine-tuning 18.9 / 37.4 GiB with bf16 optimizer states, CPU offload
      and fused optimizer steps, which plain AdamW in mixed precision does not have
      (16 bytes per parameter: this estimate says 135 GiB).
    - Unsloth benchmarks (docs.unsloth.ai/basics/unsloth-benchmarks, "Hugging Face + FA2"
      column, QLoRA r=32, batch 1): the longest sequence that fits is 2,551 tokens in 16 GB,
      5,789 in 24 GB, 12,264 in 40 GB and 28,454 in 80 GB, i.e. ~9.7 GB plus ~2.5 MB per
      token; ~2 MB of that is the full fp32 logits of a 128k vocabulary, which TRL 1.16 no
      longer holds (this estimate: ~10 GB plus ~0.7 MB per token).

    The README's 8B QLoRA recipe (batch 4 x 2,048) comes out at ~13 GiB for SFT, ~18 GiB for
    DPO; the estimate before checkpointing, 4-bit embeddings and TRL's tiled head were counted
    said 146 GiB.
    """
    bits = int(quant.get("bits", 0)) if quant else 0
    precision = str(hp.get("precision") or "auto")
    half = precision in ("bf16", "fp16") or (precision == "auto" and device != "cpu")
    act = 2 if half else 4  # bytes per activation value
    lora = peft.get("type") == "lora"
    if not lora:
        weights, trained = 0.0, float(params)
    else:
        frozen = _QUANTIZED_BYTES_PER_PARAM[bits] if bits else act
        weights, trained = params * frozen, params * 0.01 * float(peft["r"]) / 16
    optimizer = trained * _TRAINED_BYTES_PER_PARAM
    hidden = (params * 128 / 12) ** (1 / 3)
    layers, heads = hidden / 128, hidden / 128
    seq = int(hp["max_length"])
    tokens = int(hp["batch_size"]) * seq * sequences_per_example
    layer = hidden * _ACTIVATION_BYTES * act / 2
    if hp.get("attn_implementation") == "eager":
        layer += 5 * heads * seq * act / 2
    checkpointing = hp.get("gradient_checkpointing")
    if checkpointing is None:
        checkpointing = bool(bits)
    per_token = layers * hidden * act + 2 * layer if checkpointing else layers * layer
    per_token += 8 * hidden
    overhead = 0 if device == "cpu" else _GPU_OVERHEAD_BYTES
    return MemoryEstimate(int(weights), int(optimizer), int(tokens * per_token), overhead)


def estimate_memory(
    params: int,
    hp: Mapping[str, Any],
    peft: Mapping[str, Any],
    quant: Mapping[str, Any],
    *,
    device: str = "auto",
    sequences_per_example: int = 1,
) -> int:
    """:func:`memory_estimate` in bytes, all kinds together."""
    return memory_estimate(
        params, hp, peft, quant, device=device, sequences_per_example=sequences_per_example
    ).total


def device_memory_bytes(device: str) -> int:
    """Memory of the device the job would run on (0 when unknown)."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
