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
from typing import Any, Protocol

from tunewright.core.artifacts import ArtifactRef
from tunewright.core.plugins import Registries, UnknownCapabilityError
from tunewright.trainer.jobs import JobSpec

# bytes per parameter while training (weights + gradients + Adam moments, fp32)
_FULL_TRAINING_BYTES_PER_PARAM = 16
_WEIGHT_BYTES = {0: 4.0, 8: 1.0, 4: 0.5}
# activation bytes per token, hidden unit and layer besides attention scores (16-bit)
_ACTIVATION_BYTES = 34
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
) -> Preflight:
    bad: list[tuple[str, str]] = []

    # --- base model ---
    base_obj: Any = None
    scheme, _, reference = spec.base_model.partition(":")
    if not spec.base_model:
        bad.append(("spec.base_model", "required (hf:<id-or-path> or tiny:<preset>)"))
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
    for i, (name, _params) in enumerate(spec.trackers):
        if name not in registries.trackers:
            bad.append(
                (
                    f"spec.trackers[{i}].name",
                    f"unknown tracker {name!r}; registered: "
                    f"{', '.join(registries.trackers.names()) or 'none'}",
                )
            )

    if spec.device not in ("auto", "cpu", "cuda"):
        bad.append(("spec.resources.device", f"must be cpu, cuda or auto; got {spec.device!r}"))

    # --- hyperparameters, PEFT, quantization (need the method) ---
    if method_obj is None or config is None:
        return Preflight(bad)
    hp = {**method_obj.default_hyperparameters(), **spec.hyperparameters}
    peft = _resolve_peft(spec.peft)
    quant = dict(spec.quantization)
    bad += [
        (f"spec.{f}", reason)
        for f, reason in method_obj.preflight(
            config=config, peft=peft, quantization=quant or None, hyperparameters=hp
        )
    ]
    if quant and quant["quant_type"] not in ("nf4", "fp4"):
        bad.append(("spec.quantization.quant_type", "must be nf4 or fp4"))
    checkpoint_every = spec.checkpoint_every_steps or default_checkpoint_every
    if checkpoint_every < 1:
        bad.append(("spec.checkpoint_every_steps", "must be >= 1"))

    estimate = device_memory = 0
    if base_obj is not None and not bad:
        estimate = estimate_memory(base_obj.parameter_count(), hp, peft, quant)
        device_memory = spec.memory_limit_bytes or device_memory_bytes(spec.device)
        if device_memory and estimate > device_memory:
            bad.append(
                (
                    "spec.resources",
                    f"estimated memory {estimate / 2**30:.1f} GiB exceeds the device's "
                    f"{device_memory / 2**30:.1f} GiB: use LoRA/QLoRA, a smaller batch_size "
                    "or max_length",
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


def estimate_memory(
    params: int, hp: Mapping[str, Any], peft: Mapping[str, Any], quant: Mapping[str, Any]
) -> int:
    """Training memory, roughly: weights, gradients and Adam states of what trains, and
    activations without checkpointing (Korthikanti et al. 2022: per layer and token
    ``h * (34 + 5 * heads * seq / h)`` bytes at 16 bits). The shape is inferred from the
    parameter count of a Llama-like decoder (``P ~ 12 L h^2``, ``L ~ h / 128``, 128-wide
    heads). Good to a factor of ~2; meant to stop jobs that cannot fit."""
    bits = int(quant.get("bits", 0)) if quant else 0
    weights = params * _WEIGHT_BYTES[bits]
    if peft.get("type") == "lora":
        trained = params * 0.01 * float(peft["r"]) / 16  # all-linear LoRA at r=16 ~ 1%
    else:
        trained = params
    optimizer = trained * _FULL_TRAINING_BYTES_PER_PARAM
    hidden = (params * 128 / 12) ** (1 / 3)
    layers = hidden / 128
    seq, batch = int(hp["max_length"]), int(hp["batch_size"])
    per_token_layer = hidden * (_ACTIVATION_BYTES + 5 * seq / 128)
    activations = batch * seq * layers * per_token_layer
    return int(weights + optimizer + activations)


def device_memory_bytes(device: str) -> int:
    """Memory of the device the job would run on (0 when unknown)."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
