"""The ``local`` generator: answers from a trained model version, rebuilt from its base.

A model version is rebuilt the way the trainer built it: ``base`` (a base-model plugin
object: ``tiny:`` rebuilds the same seeded weights, ``hf:`` loads a local folder), then each
trained folder in ``weights`` (root ancestor first) applied — a LoRA adapter is merged, a full
checkpoint replaces the weights — and the tokenizer (with its chat template and EOS) read from
``tokenizer``. Generation is batched with left padding, stops at EOS, and returns
``num_return_sequences`` answers per prompt (sampling for more than one). torch, transformers
and peft are imported only when it runs. The evaluator (same decoding settings for every model
it compares) and the synth service (preference candidates) both call it.

Placement (:func:`place`): ``device`` ``auto`` (the default) runs on CUDA when torch sees a GPU,
else on CPU; ``cpu``, ``cuda`` and ``cuda:N`` are taken as given. A model that its loader already
dispatched (bitsandbytes 4/8-bit, a ``device_map``) stays where it is: ``.to()`` on it fails or
undoes the dispatch; inputs then go to the device of its input embeddings. ``dtype`` changes the
weights on CUDA only, never on CPU, so CPU results stay what they were: ``auto`` means bf16 (fp16
on GPUs without bf16) for generation, the usual serving precision (half the memory and
bandwidth; a greedy answer can still differ from fp32's where two tokens nearly tie), and the
weights as loaded for the metrics in :mod:`tunewright_trl.scoring`, whose log-probability
differences (DPO's implicit reward) half precision would blur.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

Messages = Sequence[dict[str, str]]

DTYPES: Final = ("auto", "float32", "bfloat16", "float16")


def check_placement(device: str, dtype: str) -> None:
    """Reject placement settings that :func:`place` cannot honour (no torch import)."""
    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise ValueError(f"`device` must be auto, cpu, cuda or cuda:N; got {device!r}")
    if dtype not in DTYPES:
        raise ValueError(f"`dtype` must be one of {', '.join(DTYPES)}; got {dtype!r}")


def resolve_device(device: str = "auto") -> str:
    """``auto``: ``cuda`` when torch sees a GPU, else ``cpu``; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def is_dispatched(model: Any) -> bool:
    """Whether the loader placed the weights itself (bitsandbytes, ``device_map``)."""
    return bool(
        getattr(model, "is_loaded_in_4bit", False)
        or getattr(model, "is_loaded_in_8bit", False)
        or getattr(model, "hf_device_map", None)
    )


def place(model: Any, *, device: str = "auto", dtype: str = "auto", half: bool = False) -> Any:
    """Move ``model`` to ``device`` (see the module docstring); ``half``: what ``dtype="auto"``
    means on CUDA (bf16, or fp16 without bf16 support) instead of keeping the loaded dtype."""
    import torch

    check_placement(device, dtype)
    if is_dispatched(model):
        return model
    target = resolve_device(device)
    if not target.startswith("cuda"):
        return model.to(target)  # CPU: the weights keep their dtype
    if dtype == "auto":
        if not half:
            return model.to(target)
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return model.to(device=target, dtype=getattr(torch, dtype))


def input_device(model: Any) -> Any:
    """Where input ids go: the device of the input embeddings (the first layer also for a
    dispatched model)."""
    return model.get_input_embeddings().weight.device


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
    """``factory(device="auto", dtype="auto", **params)``: where the model runs (see the module
    docstring); other params are accepted for symmetry with remote generators."""

    def __init__(self, *, device: str = "auto", dtype: str = "auto", **params: Any) -> None:
        check_placement(device, dtype)
        self.device = device
        self.dtype = dtype
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
        model = place(
            load_causal_lm(base, weights), device=self.device, dtype=self.dtype, half=True
        )
        on = input_device(model)
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
            ).to(on)
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
