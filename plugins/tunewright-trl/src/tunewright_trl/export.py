"""A model version as files that other tools load: one merged checkpoint, or one LoRA adapter.

:func:`export_merged` rebuilds the version exactly as :func:`~tunewright_trl.generation.load_causal_lm`
does (the base, then every trained folder of the chain root first: a LoRA adapter merged in, a
full checkpoint replacing the weights) and saves it with the version's tokenizer (chat template,
EOS), so ``AutoModelForCausalLM.from_pretrained(dir)`` and ``AutoTokenizer.from_pretrained(dir)``
load it and ``generate`` stops at the version's EOS.

:func:`export_adapter` writes one PEFT LoRA folder (``adapter_config.json`` +
``adapter_model.safetensors``, what vLLM's ``--lora-modules`` and ``PeftModel.from_pretrained``
take) to apply to the chain's base model. A one-link chain's adapter is copied as it is. A chain
of several adapters (DPO trained on the merged SFT model) adds their deltas,
``W + s1·B1·A1 + s2·B2·A2``, so one adapter of rank ``r1 + r2`` holds them exactly:
:func:`combine_lora_adapters` stacks the ``A`` matrices and the scaled ``B`` matrices (scale
``alpha/r``, or ``alpha/sqrt(r)`` with rsLoRA, per module) and saves it with
``lora_alpha = r`` (scale 1); the only rounding is ``s·B`` stored in the adapters' dtype.
This is PEFT's ``add_weighted_adapter(combination_type="cat")``
with weights 1.0, done on the saved tensors: it needs no base weights in memory, accepts any mix
of ``target_modules`` forms, and stays exact when the first adapter uses rsLoRA (PEFT's copies
that adapter's ``use_rslora`` onto the combined one, which then scales by ``sqrt(r)``, not 1).
A chain with full weights has no adapter form (its deltas are not low-rank): it is exported
merged. torch, transformers and peft are imported inside the functions; an adapter export
needs only torch and safetensors (no base weights, no peft).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from tunewright.core.errors import FailedPrecondition
from tunewright.core.private_files import make_private, private_dir
from tunewright_trl.generation import load_causal_lm

ADAPTER_CONFIG: Final = "adapter_config.json"
ADAPTER_WEIGHTS: Final = "adapter_model.safetensors"
#: what a trained folder's ``model/`` holds
Weights = Literal["lora", "full"]

_A: Final = ".lora_A.weight"
_B: Final = ".lora_B.weight"
_PEFT_PREFIX: Final = "base_model.model."
# adapter_config.json fields that make an adapter more than ``W + scale·B·A`` on linear layers
_NOT_PLAIN_LORA: Final = (
    "use_dora",
    "lora_bias",
    "use_qalora",
    "modules_to_save",
    "trainable_token_indices",
    "alora_invocation_tokens",
    "layer_replication",
    "target_parameters",
    "use_bdlora",
    "arrow_config",
    "kasa_config",
    "velora_config",
    "monteclora_config",
)
# what the combined adapter's config says whatever the root adapter's said: plain LoRA, one
# rank everywhere, no dropout, and no initialisation that would touch the base weights on load
_COMBINED_CONFIG: Final[Mapping[str, Any]] = {
    "peft_type": "LORA",
    "rank_pattern": {},
    "alpha_pattern": {},
    "use_rslora": False,
    "lora_dropout": 0.0,
    "bias": "none",
    "layers_to_transform": None,
    "layers_pattern": None,
    "exclude_modules": None,
    "init_lora_weights": True,
    "loftq_config": {},
    "eva_config": None,
    "corda_config": None,
    "lora_ga_config": None,
    "inference_mode": True,
}


def weights_kind(folder: Path) -> Weights:
    """``lora`` when the trained folder's ``model/`` is a PEFT adapter, else ``full``."""
    return "lora" if (Path(folder) / "model" / ADAPTER_CONFIG).is_file() else "full"


def export_merged(
    *, base: Any, weights: Sequence[Path], tokenizer: Path, out: Path
) -> dict[str, Any]:
    """Save the chain merged into one checkpoint (safetensors) plus its tokenizer in ``out``.

    :param base: the base-model plugin object of the chain's root.
    :param weights: the trained folders, root ancestor first.
    :param tokenizer: the trained folder whose ``tokenizer/`` the version uses.
    :returns: what was done, for the export's manifest.
    """
    from transformers import AutoTokenizer

    links = [weights_kind(f) for f in weights]
    model = load_causal_lm(base, weights)
    tok = AutoTokenizer.from_pretrained(str(Path(tokenizer) / "tokenizer"))  # for its ids
    # generate() stops at the version's EOS with no arguments
    for config in (model.config, model.generation_config):
        config.eos_token_id = tok.eos_token_id
        if tok.pad_token_id is not None:
            config.pad_token_id = tok.pad_token_id
    private_dir(out)  # weights: owner-only, like the artifacts they came from
    model.save_pretrained(str(out))  # safetensors: transformers 5 writes nothing else
    _copy_tokenizer(tokenizer, out)
    make_private(out)
    return {
        "links": links,
        "applied": [
            "merged (LoRA)" if kind == "lora" else "replaced the weights (full)" for kind in links
        ],
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }


def export_adapter(*, weights: Sequence[Path], tokenizer: Path, out: Path) -> dict[str, Any]:
    """Save the chain as one PEFT LoRA adapter (plus the version's tokenizer) in ``out``.

    :raises FailedPrecondition: when a link holds full weights (reason
        ``CHAIN_HAS_FULL_WEIGHTS``) or an adapter is not plain LoRA (``UNSUPPORTED_ADAPTER``).
    :returns: what was done, for the export's manifest.
    """
    links = [weights_kind(f) for f in weights]
    if "full" in links:
        full = [Path(f).name for f, kind in zip(weights, links, strict=True) if kind == "full"]
        raise FailedPrecondition(
            f"the chain has full weights ({', '.join(full)}), which no LoRA adapter can hold: "
            "export it with --merged and serve that folder as a model",
            reason="CHAIN_HAS_FULL_WEIGHTS",
        )
    adapters = [Path(f) / "model" for f in weights]
    private_dir(out)  # weights: owner-only, like the artifacts they came from
    if len(adapters) == 1:
        source = adapters[0]
        if not (source / ADAPTER_WEIGHTS).is_file():
            raise FailedPrecondition(
                f"{source} has no {ADAPTER_WEIGHTS}", reason="UNSUPPORTED_ADAPTER"
            )
        config = _read_config(source)
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            shutil.copyfile(source / name, out / name)
        summary: dict[str, Any] = {
            "combined": "copied",
            "r": config.get("r"),
            "lora_alpha": config.get("lora_alpha"),
        }
    else:
        summary = {"combined": "cat", **combine_lora_adapters(adapters, out)}
    _copy_tokenizer(tokenizer, out)
    make_private(out)
    return {"links": links, **summary}


def combine_lora_adapters(adapters: Sequence[Path], out: Path) -> dict[str, Any]:
    """One LoRA adapter whose delta is the sum of ``adapters``' deltas, saved in ``out``.

    Every module gets rank ``R = sum of each adapter's largest rank``: an adapter's block is
    zero-padded where its rank there is smaller or it does not adapt the module, so the
    adapter is uniform (one ``r``, no ``rank_pattern``) and still exact.

    :raises FailedPrecondition: ``UNSUPPORTED_ADAPTER`` for an adapter that is not plain LoRA
        on linear layers, or adapters whose shapes disagree.
    """
    import torch
    from safetensors.torch import load_file, save_file

    configs = [_read_config(a) for a in adapters]
    for folder, config in zip(adapters, configs, strict=True):
        _check_plain_lora(folder, config)
    fan_in_fan_out = {bool(c.get("fan_in_fan_out")) for c in configs}
    if len(fan_in_fan_out) > 1:
        raise FailedPrecondition(
            "the chain's adapters disagree on fan_in_fan_out", reason="UNSUPPORTED_ADAPTER"
        )
    # per adapter: module path -> (A, scale · B), in float32
    layers: list[dict[str, tuple[Any, Any]]] = []
    dtypes: set[Any] = set()
    for folder, config in zip(adapters, configs, strict=True):
        tensors = load_file(str(folder / ADAPTER_WEIGHTS))
        dtypes.update(t.dtype for t in tensors.values())
        layers.append(_scaled_pairs(folder, config, tensors))
    ranks = [max((a.shape[0] for a, _ in pairs.values()), default=0) for pairs in layers]
    total = sum(ranks)
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    modules = sorted({m for pairs in layers for m in pairs})
    combined: dict[str, Any] = {}
    for module in modules:
        present = [pairs[module] for pairs in layers if module in pairs]
        shapes = {(a.shape[1], b.shape[0]) for a, b in present}
        if len(shapes) > 1:
            raise FailedPrecondition(
                f"the chain's adapters disagree on the shape of {module}",
                reason="UNSUPPORTED_ADAPTER",
            )
        fan_in, fan_out = shapes.pop()
        a_blocks, b_blocks = [], []
        for pairs, rank in zip(layers, ranks, strict=True):
            a = torch.zeros(rank, fan_in)
            b = torch.zeros(fan_out, rank)
            if module in pairs:
                a_i, b_i = pairs[module]
                a[: a_i.shape[0]] = a_i
                b[:, : b_i.shape[1]] = b_i
            a_blocks.append(a)
            b_blocks.append(b)
        combined[module + _A] = torch.cat(a_blocks, dim=0).to(dtype).contiguous()
        combined[module + _B] = torch.cat(b_blocks, dim=1).to(dtype).contiguous()
    target_modules = sorted({m.rsplit(".", 1)[-1] for m in modules})
    if any(c.get("layers_to_transform") for c in configs):
        # some layers only: name each adapted module (PEFT matches a target as a path suffix)
        target_modules = sorted(m.removeprefix("base_model.model.") for m in modules)
    # the root adapter's config (the schema of the PEFT that wrote it), for the combined one
    config = {
        **configs[0],
        **_COMBINED_CONFIG,
        "task_type": configs[0].get("task_type") or "CAUSAL_LM",
        "r": total,
        "lora_alpha": total,  # scale 1: the adapters' own scales are in B
        "target_modules": target_modules,
        "fan_in_fan_out": fan_in_fan_out.pop(),
    }
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(combined, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return {
        "r": total,
        "lora_alpha": total,
        "ranks": ranks,
        "target_modules": target_modules,
        "modules": len(modules),
    }


def _copy_tokenizer(folder: Path, out: Path) -> None:
    """The version's tokenizer files as the trainer saved them (chat template, EOS)."""
    source = Path(folder) / "tokenizer"
    if not source.is_dir():
        raise FailedPrecondition(f"{folder} has no tokenizer/", reason="MODEL_WITHOUT_TOKENIZER")
    for file in sorted(source.iterdir()):
        if file.is_file() and not (out / file.name).exists():  # never over the weights
            shutil.copyfile(file, out / file.name)


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(
            f"{folder / ADAPTER_CONFIG}: cannot read it ({exc})", reason="UNSUPPORTED_ADAPTER"
        ) from None
    if not isinstance(config, dict):
        raise FailedPrecondition(
            f"{folder / ADAPTER_CONFIG} is not a JSON object", reason="UNSUPPORTED_ADAPTER"
        )
    return config


def _check_plain_lora(folder: Path, config: Mapping[str, Any]) -> None:
    problems = (
        [f"peft_type {config.get('peft_type')!r}"] if config.get("peft_type") != "LORA" else []
    )
    problems += [name for name in _NOT_PLAIN_LORA if config.get(name)]
    if config.get("bias", "none") != "none":
        problems.append(f"bias {config['bias']!r}")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        problems.append(f"no {ADAPTER_WEIGHTS}")
    if problems:
        raise FailedPrecondition(
            f"{folder} is not a plain LoRA adapter ({', '.join(problems)}): its deltas cannot "
            "be combined with the chain's other adapters; export it with --merged",
            reason="UNSUPPORTED_ADAPTER",
        )


def _scaled_pairs(
    folder: Path, config: Mapping[str, Any], tensors: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """module path -> ``(A, scale · B)`` in float32, with PEFT's per-module scale."""
    a_of = {k.removesuffix(_A): v for k, v in tensors.items() if k.endswith(_A)}
    b_of = {k.removesuffix(_B): v for k, v in tensors.items() if k.endswith(_B)}
    other = sorted(k for k in tensors if not k.endswith((_A, _B)))
    if other or a_of.keys() != b_of.keys():
        shown = ", ".join(other[:3]) or "lora_A without lora_B"
        raise FailedPrecondition(
            f"{folder} holds more than LoRA on linear layers ({shown}); export it with --merged",
            reason="UNSUPPORTED_ADAPTER",
        )
    alpha_pattern = dict(config.get("alpha_pattern") or {})
    pairs = {}
    for module, a in a_of.items():
        b = b_of[module]
        rank = a.shape[0]
        alpha = float(
            alpha_pattern.get(_pattern_key(alpha_pattern, module), config.get("lora_alpha", 8))
        )
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        pairs[module] = (a.float(), b.float() * scale)
    return pairs


def _pattern_key(patterns: Mapping[str, Any], module: str) -> str:
    """PEFT's ``get_pattern_key``: the first pattern that matches the module's name (the
    path inside the base model, ``model.layers.0.self_attn.q_proj``)."""
    name = module.removeprefix(_PEFT_PREFIX)
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", name):
            return key
    return name
