"""Loading the models an evaluation compares, and generating their answers.

A registered model version is rebuilt the way the trainer built it: its base model comes
from the base-model plugin (``tiny:`` rebuilds the same seeded weights; ``hf:`` loads a local
folder), each ancestor's weights are applied from the root down (a LoRA adapter is merged, a
full checkpoint replaces the weights), and the version's own tokenizer (which carries the
chat template and EOS) is used. A bare base model (``EvaluatedModel.base_model``) is that base
with the candidate's tokenizer, i.e. exactly what the candidate was trained from.

Generation is greedy by default, batched, with left padding, and stops at EOS; every model of
one evaluation is run with the same decoding settings. torch / transformers / peft are
imported here only, when an evaluation runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Weights:
    """One link of a model version's chain: where its trained weights were unpacked."""

    model_version_id: str
    folder: Path  # the trainer's output folder: model/, tokenizer/, config.json


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 64
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


def load_causal_lm(base: Any, chain: Sequence[Weights]) -> Any:
    """``base`` (a base-model plugin object) with ``chain`` (root first) applied."""
    model = base.causal_lm()
    for link in chain:
        weights = link.folder / "model"
        if (weights / "adapter_config.json").is_file():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(weights)).merge_and_unload()
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(weights), use_safetensors=True)
    model.eval()
    return model


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    tokenizer.padding_side = "left"  # generation continues at the right edge
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def generate(
    model: Any, tokenizer: Any, prompts: Sequence[Messages], decoding: Decoding
) -> list[str]:
    """The model's answer to each prompt (chat template applied), without special tokens."""
    import torch

    torch.manual_seed(decoding.seed)
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    answers: list[str] = []
    for start in range(0, len(texts), decoding.batch_size):
        batch = tokenizer(
            texts[start : start + decoding.batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        options: dict[str, Any] = {
            "max_new_tokens": decoding.max_new_tokens,
            "do_sample": decoding.do_sample,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if decoding.do_sample:
            options.update(temperature=decoding.temperature, top_p=decoding.top_p)
        with torch.no_grad():
            output = model.generate(**batch, **options)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        answers += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return answers
