"""Which model versions vLLM can serve, and as what: one PEFT LoRA adapter on an ``hf:`` folder.

vLLM loads one base model from a Hugging Face folder and applies at most one LoRA adapter per
request (vLLM docs, "LoRA Adapters": ``--enable-lora``, ``--lora-modules name=path``,
https://docs.vllm.ai/en/latest/features/lora/). A model version is a
:class:`~tunewright.core.model_versions.TrainedChain`; this module turns it into the base
folder and the one adapter, or refuses it with a :class:`FailedPrecondition` that says why and
what to do instead:

- a ``tiny:`` (or any non-``hf:``) base: vLLM needs a model folder on disk;
- a full-weights trained folder (no ``model/adapter_config.json``): not an adapter;
- more than one LoRA folder (DPO trained on its merged SFT parent): the adapters are additive
  and vLLM applies only one, so the version must be exported merged and served as a base;
- adapters vLLM's ``PEFTHelper`` rejects (``modules_to_save``, DoRA) or that are not causal LMs
  (a reward model's ``SEQ_CLS`` head), or whose rank is above vLLM's largest ``--max-lora-rank``;
- a version whose chat template differs from the base folder's: vLLM renders every adapter's
  chat with the base folder's tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewright.core.errors import FailedPrecondition
from tunewright.core.model_versions import TrainedChain
from tunewright_vllm.config import ALLOWED_LORA_RANKS

#: a model version id that is already a good adapter name is used as it is
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class Adapter:
    """One model version as vLLM sees it: ``name`` is the request's ``model``."""

    model_version_id: str
    name: str
    #: the PEFT adapter folder (``<trained folder>/model``)
    path: Path
    #: ``r`` of ``adapter_config.json``
    rank: int
    #: the ``hf:`` base model folder
    base: Path


def adapter_name(model_version_id: str) -> str:
    """The vLLM model name of a model version's adapter.

    An id that is already safe (``mv_01JD…``: letters, digits, ``_.-``, at most 64 characters,
    starting with a letter or digit) is used unchanged. Anything else is sanitised and gets a
    hash of the original id, so two ids that sanitise alike still get different names. Names
    never hold ``=`` or ``,`` (``--lora-modules`` splits on them) nor ``/``.
    """
    if _SAFE_NAME.fullmatch(model_version_id):
        return model_version_id
    digest = hashlib.sha256(model_version_id.encode()).hexdigest()[:12]
    stem = _UNSAFE_CHARS.sub("_", model_version_id).strip("_.-")[:48]
    return f"{stem}-{digest}" if stem else f"mv-{digest}"


def lora_rank_for(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds an adapter of rank ``rank``."""
    for allowed in ALLOWED_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(
        f"LoRA rank {rank} is above vLLM's largest max_lora_rank {ALLOWED_LORA_RANKS[-1]}"
    )


def is_lora_folder(folder: Path) -> bool:
    return (folder / "model" / "adapter_config.json").is_file()


def adapter_for(chain: TrainedChain) -> Adapter:
    """The adapter that serves ``chain`` on vLLM, or :class:`FailedPrecondition` (see the
    module docstring for every refusal)."""
    mv = chain.model_version_id
    scheme, _, reference = chain.base_model.partition(":")
    if scheme != "hf" or not reference:
        raise FailedPrecondition(
            f"model version {mv} is trained on {chain.base_model!r}; the vllm backend serves "
            "only hf:<folder> bases (vLLM loads a Hugging Face model folder). Serve it with the "
            "transformers backend",
            reason="VLLM_BASE_NOT_HF",
        )
    base = Path(reference)
    if not (base / "config.json").is_file():
        raise FailedPrecondition(
            f"model version {mv}: base folder {base} has no config.json (vLLM needs a local "
            "Hugging Face model folder on the serve host; no hub access)",
            reason="VLLM_BASE_NOT_FOUND",
        )
    if not chain.folders:
        raise FailedPrecondition(
            f"model version {mv} has no trained folder to serve", reason="VLLM_NO_ADAPTER"
        )
    full = [folder for folder in chain.folders if not is_lora_folder(folder)]
    if full:
        raise FailedPrecondition(
            f"model version {mv}: trained folder {full[0].name} holds full weights, not a LoRA "
            "adapter; the vllm backend serves LoRA adapters of an hf: base. Register the "
            f"full-weights folder ({full[0] / 'model'}) as an hf: base model, or serve the "
            "version with the transformers backend",
            reason="VLLM_FULL_WEIGHTS",
        )
    if len(chain.folders) > 1:
        lineage = " -> ".join(folder.name for folder in chain.folders)
        raise FailedPrecondition(
            f"model version {mv} stacks {len(chain.folders)} LoRA adapters ({lineage}: trained "
            "on its merged parent, the adapters add up) and vLLM applies one adapter per "
            f"request. Export it merged (`tunewright export {mv} --merged DIR`) and serve DIR "
            "as the base hf:DIR, or serve it with the transformers backend",
            reason="VLLM_STACKED_ADAPTERS",
        )
    folder = chain.folders[0]
    config = _adapter_config(mv, folder / "model" / "adapter_config.json")
    rank = _rank(mv, config)
    _check_supported(mv, config)
    _check_chat_template(mv, base, chain.tokenizer / "tokenizer")
    return Adapter(mv, adapter_name(mv), folder / "model", rank, base)


def _adapter_config(mv: str, file: Path) -> dict[str, Any]:
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(
            f"model version {mv}: cannot read {file.name}: {type(exc).__name__}",
            reason="VLLM_BAD_ADAPTER",
        ) from exc
    if not isinstance(config, dict):
        raise FailedPrecondition(
            f"model version {mv}: {file.name} is not a JSON object", reason="VLLM_BAD_ADAPTER"
        )
    return config


def _rank(mv: str, config: dict[str, Any]) -> int:
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise FailedPrecondition(
            f"model version {mv}: adapter_config.json has no positive integer `r` (got {rank!r})",
            reason="VLLM_BAD_ADAPTER",
        )
    if rank > ALLOWED_LORA_RANKS[-1]:
        raise FailedPrecondition(
            f"model version {mv}: LoRA rank {rank} is above vLLM's largest max_lora_rank "
            f"({ALLOWED_LORA_RANKS[-1]})",
            reason="VLLM_LORA_RANK_UNSUPPORTED",
        )
    return rank


def _check_supported(mv: str, config: dict[str, Any]) -> None:
    task = config.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        raise FailedPrecondition(
            f"model version {mv} is a {task} adapter (a reward model?); the vllm backend "
            "serves causal-LM adapters",
            reason="VLLM_NOT_CAUSAL_LM",
        )
    # vllm/lora/peft_helper.py (PEFTHelper._validate_features) refuses these
    if config.get("modules_to_save"):
        raise FailedPrecondition(
            f"model version {mv}: the adapter has modules_to_save, which vLLM does not load",
            reason="VLLM_ADAPTER_UNSUPPORTED",
        )
    if config.get("use_dora"):
        raise FailedPrecondition(
            f"model version {mv} is a DoRA adapter, which vLLM does not support",
            reason="VLLM_ADAPTER_UNSUPPORTED",
        )


def chat_template(folder: Path) -> str | None:
    """The chat template of a tokenizer folder: ``chat_template.jinja`` or the
    ``chat_template`` of ``tokenizer_config.json`` (as transformers reads them)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        template = json.loads(config.read_text()).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return None
    return template if isinstance(template, str) else None


def _check_chat_template(mv: str, base: Path, tokenizer: Path) -> None:
    ours = chat_template(tokenizer)
    if ours is None:
        return  # the version keeps the base's tokenizer files as they are
    if ours != chat_template(base):
        raise FailedPrecondition(
            f"model version {mv} uses a chat template other than its base folder's ({base}); "
            "vLLM renders every adapter's chats with the base's tokenizer. Serve it with the "
            "transformers backend, or export it merged and serve that folder as the base",
            reason="VLLM_CHAT_TEMPLATE_MISMATCH",
        )
