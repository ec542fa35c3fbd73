"""Exports of a model version's chain against what the platform itself runs
(:func:`~tunewright_trl.generation.load_causal_lm`): the merged folder in plain transformers
gives the same logits and greedy answers; the combined adapter of a two-link chain (ranks,
alphas, rsLoRA and target modules that differ per link) gives the merged chain's logits; full
weights and non-plain LoRA are refused as adapters."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tunewright_trl.chat import EOS_TOKEN
from tunewright_trl.export import ADAPTER_CONFIG, ADAPTER_WEIGHTS, export_adapter, export_merged
from tunewright_trl.generation import load_causal_lm
from tunewright_trl.models import TinyBaseModel

from tunewright.core.errors import FailedPrecondition

os.environ.setdefault("OMP_NUM_THREADS", "1")

PROMPT = [{"role": "user", "content": "my order is late"}]


@dataclass(frozen=True)
class Chain:
    base: TinyBaseModel
    sft: Path  # LoRA on the base
    dpo: Path  # LoRA on base + sft merged
    full: Path  # full weights
    on_full: Path  # LoRA on the full weights


def _save_tokenizer(base: TinyBaseModel, folder: Path) -> None:
    base.tokenizer().save_pretrained(str(folder / "tokenizer"))


def _lora(base: TinyBaseModel, model: Any, folder: Path, seed: int, **config: Any) -> None:
    """A LoRA adapter with random A and B (as if trained), saved like the trainer saves it."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_config = LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **config)
    get_peft_model(model, peft_config).save_pretrained(str(folder / "model"))
    _save_tokenizer(base, folder)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    import torch

    root = tmp_path_factory.mktemp("chain")
    base = TinyBaseModel("llama-xxs", seed=3)
    sft, dpo, full, on_full = (root / n for n in ("sft", "dpo", "full", "on-full"))
    # rsLoRA first: PEFT's own "cat" would scale the combined adapter by sqrt(r)
    _lora(
        base,
        base.causal_lm(),
        sft,
        1,
        r=8,
        lora_alpha=16,
        use_rslora=True,
        target_modules="all-linear",
    )
    _lora(
        base,
        load_causal_lm(base, [sft]),
        dpo,
        2,
        r=4,
        lora_alpha=32,
        target_modules=["q_proj", "v_proj", "down_proj"],
        rank_pattern={"down_proj": 2},
        alpha_pattern={"v_proj": 8},
    )
    model = base.causal_lm()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(str(full / "model"))
    _save_tokenizer(base, full)
    _lora(
        base, load_causal_lm(base, [full]), on_full, 4, r=4, lora_alpha=8, target_modules=["q_proj"]
    )
    return Chain(base, sft, dpo, full, on_full)


def _ids(base: TinyBaseModel) -> Any:
    tok = base.tokenizer()
    text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    return tok([text, "the quick brown fox jumps"], return_tensors="pt", padding=True)


def _logits(model: Any, batch: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(**batch).logits


def test_merged_export_is_the_chain_in_plain_transformers(chain: Chain, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    done = export_merged(
        base=chain.base, weights=[chain.sft, chain.dpo], tokenizer=chain.dpo, out=out
    )
    assert done["links"] == ["lora", "lora"]
    assert (out / "model.safetensors").is_file() and not (out / ADAPTER_CONFIG).exists()
    assert not list(out.glob("*.bin"))

    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.eos_token == EOS_TOKEN and tok.chat_template
    assert model.generation_config.eos_token_id == tok.eos_token_id
    reference = load_causal_lm(chain.base, [chain.sft, chain.dpo])
    batch = _ids(chain.base)
    diff = (_logits(model, batch) - _logits(reference, batch)).abs().max().item()
    assert diff == 0.0  # the same tensors, saved and loaded
    # merging changed the model: the comparison is not base against base
    assert (_logits(reference, batch) - _logits(chain.base.causal_lm(), batch)).abs().max() > 0.1

    text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    prompt = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        plain = model.generate(**prompt, max_new_tokens=12, do_sample=False)
        ours = reference.generate(
            **prompt, max_new_tokens=12, do_sample=False, eos_token_id=tok.eos_token_id
        )
    assert plain.tolist() == ours.tolist()


def test_the_combined_adapter_reproduces_the_merged_chain(chain: Chain, tmp_path: Path) -> None:
    from peft import PeftModel

    out = tmp_path / "adapter"
    done = export_adapter(weights=[chain.sft, chain.dpo], tokenizer=chain.dpo, out=out)
    config = json.loads((out / ADAPTER_CONFIG).read_text())
    assert (done["combined"], done["ranks"], config["r"], config["lora_alpha"]) == (
        "cat",
        [8, 4],
        12,
        12,
    )
    assert config["peft_type"] == "LORA" and not config["use_rslora"]
    assert set(config["target_modules"]) >= {"q_proj", "v_proj", "down_proj", "gate_proj"}

    adapted = PeftModel.from_pretrained(chain.base.causal_lm(), str(out)).eval()
    merged = load_causal_lm(chain.base, [chain.sft, chain.dpo])
    batch = _ids(chain.base)
    diff = (_logits(adapted, batch) - _logits(merged, batch)).abs().max().item()
    assert diff < 1e-5, diff
    # the same adapter merged is the same model too
    unloaded = PeftModel.from_pretrained(chain.base.causal_lm(), str(out)).merge_and_unload()
    assert (_logits(unloaded, batch) - _logits(merged, batch)).abs().max().item() < 1e-5
    assert (out / "tokenizer_config.json").is_file()  # the version's chat template and EOS


def test_a_one_link_adapter_is_the_adapter_itself(chain: Chain, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    done = export_adapter(weights=[chain.sft], tokenizer=chain.sft, out=out)
    assert done["combined"] == "copied"
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        assert (out / name).read_bytes() == (chain.sft / "model" / name).read_bytes()


def test_full_weights_merge_but_are_no_adapter(chain: Chain, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    weights = [chain.full, chain.on_full]
    with pytest.raises(FailedPrecondition, match="--merged") as refused:
        export_adapter(weights=weights, tokenizer=chain.on_full, out=tmp_path / "adapter")
    assert refused.value.reason == "CHAIN_HAS_FULL_WEIGHTS"

    done = export_merged(
        base=chain.base, weights=weights, tokenizer=chain.on_full, out=tmp_path / "merged"
    )
    assert done["links"] == ["full", "lora"]
    batch = _ids(chain.base)
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    reference = load_causal_lm(chain.base, weights)
    assert (_logits(plain, batch) - _logits(reference, batch)).abs().max().item() == 0.0


def test_an_adapter_that_is_not_plain_lora_is_not_combined(chain: Chain, tmp_path: Path) -> None:
    dora = tmp_path / "dora"
    _lora(
        chain.base,
        load_causal_lm(chain.base, [chain.sft]),
        dora,
        5,
        r=4,
        lora_alpha=8,
        target_modules=["q_proj"],
        use_dora=True,
    )
    with pytest.raises(FailedPrecondition, match="use_dora") as refused:
        export_adapter(weights=[chain.sft, dora], tokenizer=dora, out=tmp_path / "adapter")
    assert refused.value.reason == "UNSUPPORTED_ADAPTER"
