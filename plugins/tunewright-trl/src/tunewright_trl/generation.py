"""The ``local`` generator: answers from a trained model version, rebuilt from its base.

A model version is rebuilt the way the trainer built it: ``base`` (a base-model plugin
object: ``tiny:`` rebuilds the same seeded weights, ``hf:`` loads a local folder), then each
trained folder in ``weights`` (root ancestor first) applied — a LoRA adapter is merged, a full
checkpoint replaces the weights — and the tokenizer (with its chat template and EOS) read from
``tokenizer``. Generation is batched with left padding, stops at EOS, and returns
``num_return_sequences`` answers per prompt (sampling for more than one). torch, transformers
and peft are imported only when it runs. The evaluator (same decoding settings for every model
it compares) and the synth service (preference candidates) both call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

Messages = Sequence[dict[str, str]]


def load_causal_lm(base: Any, weights: Sequence[Path]) -> Any:
    model = base.causal_lm()
    for folder in weights:
        trained = Path(folder) / "model"
        if (trained / "adapter_config.json").is_file():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(trained)).merge_and_unload()
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(trained), use_safetensors=True)
    model.eval()
    return model


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(Path(folder) / "tokenizer"))
    tokenizer.padding_side = "left"  # generation continues at the right edge
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class LocalGenerator:
    """``factory(**params)``; params are accepted for symmetry with remote generators."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def generate(
        self,
        *,
        base: Any,
        weights: Sequence[Path],
        tokenizer: Path,
        prompts: Sequence[Messages],
        max_new_tokens: int = 64,
        batch_size: int = 8,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        num_return_sequences: int = 1,
    ) -> list[list[str]]:
        import torch

        tok = load_tokenizer(tokenizer)
        model = load_causal_lm(base, weights)
        torch.manual_seed(seed)
        texts = [
            tok.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
        sampling = do_sample or num_return_sequences > 1
        answers: list[list[str]] = []
        for start in range(0, len(texts), batch_size):
            batch = tok(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
            options: dict[str, Any] = {
                "max_new_tokens": max_new_tokens,
                "do_sample": sampling,
                "num_return_sequences": num_return_sequences,
                "eos_token_id": tok.eos_token_id,
                "pad_token_id": tok.pad_token_id,
            }
            if sampling:
                options.update(temperature=temperature, top_p=top_p)
            with torch.no_grad():
                output = model.generate(**batch, **options)
            decoded = tok.batch_decode(
                output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for i in range(0, len(decoded), num_return_sequences):
                answers.append([t.strip() for t in decoded[i : i + num_return_sequences]])
        return answers
