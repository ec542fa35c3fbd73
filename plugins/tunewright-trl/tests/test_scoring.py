"""Model-scoring metrics against their references on fixed inputs: perplexity against
``exp(loss)`` from transformers, preference accuracy against TRL's own DPOTrainer and
RewardTrainer evaluation metrics, and the generation smoke test's checks."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from tunewright_trl.chat import BOS_TOKEN, EOS_TOKEN
from tunewright_trl.models import TinyBaseModel
from tunewright_trl.scoring import (
    GenerationSmoke,
    Perplexity,
    PreferenceAccuracy,
    prompt_and_answer_ids,
    smoke_check,
)

os.environ.setdefault("OMP_NUM_THREADS", "1")

PROMPTS = [
    [{"role": "user", "content": "my order is late"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the app crashes"}],
    [{"role": "user", "content": "I was charged twice"}],
]
CHOSEN = [
    "sorry, your order ships today",
    "please update the app",
    "a refund is on its way",
]
REJECTED = ["no", "reinstall your phone and wait a week", "that is not our problem"]


def _tokenizer_folder(base: TinyBaseModel, tmp_path: Path) -> Path:
    base.tokenizer().save_pretrained(str(tmp_path / "tokenizer"))
    return tmp_path


def _kwargs(base: Any, weights: list[Path], tok: Path, method: str = "") -> dict[str, Any]:
    return {
        "base": base,
        "weights": weights,
        "tokenizer": tok,
        "method": method,
        "prompts": PROMPTS,
        "references": CHOSEN,
        "rejected": REJECTED,
        "max_new_tokens": 8,
        "batch_size": 2,  # two batches, one of them padded
    }


def test_perplexity_equals_exp_loss_from_transformers(tmp_path: Path) -> None:
    import torch

    base = TinyBaseModel("llama-xxs", seed=3)
    tok_dir = _tokenizer_folder(base, tmp_path)
    metric = Perplexity()
    rows = metric.score_model(**_kwargs(base, [], tok_dir))

    model, tok = base.causal_lm().eval(), base.tokenizer()
    total_nll, total_tokens = 0.0, 0
    for row, prompt, answer in zip(rows, PROMPTS, CHOSEN, strict=True):
        p, a = prompt_and_answer_ids(tok, prompt, answer)
        assert tok.decode(a).startswith(answer) and EOS_TOKEN in tok.decode(a)
        ids = torch.tensor([p + a])
        labels = ids.clone()
        labels[0, : len(p)] = -100  # the loss on the answer tokens only
        with torch.no_grad():
            loss = float(model(input_ids=ids, labels=labels).loss)
        assert row[1] == len(a)
        assert math.exp(row[0] / row[1]) == pytest.approx(math.exp(loss), rel=1e-5)
        total_nll += loss * len(a)
        total_tokens += len(a)
    assert metric.aggregate(rows) == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-5)


def _trl_common(tmp_path: Path) -> dict[str, Any]:
    return {
        "output_dir": str(tmp_path / "trl"),
        "per_device_eval_batch_size": len(PROMPTS),
        "report_to": [],
        "bf16": False,
        "use_cpu": True,
        "activation_checkpointing": False,
        "disable_tqdm": True,
    }


def _pairs() -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": p,
                "chosen": [{"role": "assistant", "content": c}],
                "rejected": [{"role": "assistant", "content": r}],
            }
            for p, c, r in zip(PROMPTS, CHOSEN, REJECTED, strict=True)
        ]
    )


def test_dpo_implicit_reward_matches_trl(tmp_path: Path) -> None:
    from trl import DPOConfig, DPOTrainer

    # the "DPO model": full weights of another seed; its reference is the bare base (parent)
    base = TinyBaseModel("llama-xxs", seed=0)
    tok_dir = _tokenizer_folder(base, tmp_path)
    policy = TinyBaseModel("llama-xxs", seed=1).causal_lm()
    policy.save_pretrained(str(tmp_path / "dpo" / "model"), safe_serialization=True)
    metric = PreferenceAccuracy(beta=0.2)
    rows = metric.score_model(**_kwargs(base, [tmp_path / "dpo"], tok_dir, method="dpo"))

    trainer = DPOTrainer(
        model=policy,
        ref_model=base.causal_lm(),
        args=DPOConfig(**_trl_common(tmp_path), beta=0.2),
        train_dataset=_pairs(),
        eval_dataset=_pairs(),
        processing_class=base.tokenizer(),
    )
    reference = trainer.evaluate()
    margins = [r[1] for r in rows]
    assert sum(margins) / len(margins) == pytest.approx(reference["eval_rewards/margins"], abs=1e-5)
    assert metric.aggregate(rows) == pytest.approx(reference["eval_rewards/accuracies"])


def test_reward_model_accuracy_matches_trl(tmp_path: Path) -> None:
    from trl import RewardConfig, RewardTrainer

    base = TinyBaseModel("llama-xxs", seed=0)
    tok_dir = _tokenizer_folder(base, tmp_path)
    rm = TinyBaseModel("llama-xxs", seed=5).sequence_classifier()
    rm.config.pad_token_id = base.tokenizer().pad_token_id
    rm.save_pretrained(str(tmp_path / "rm" / "model"), safe_serialization=True)
    metric = PreferenceAccuracy()
    rows = metric.score_model(**_kwargs(base, [tmp_path / "rm"], tok_dir, method="reward"))

    trainer = RewardTrainer(
        model=rm,
        args=RewardConfig(**_trl_common(tmp_path)),
        train_dataset=_pairs(),
        eval_dataset=_pairs(),
        processing_class=base.tokenizer(),
    )
    reference = trainer.evaluate()
    margins = [r[1] for r in rows]
    assert sum(margins) / len(margins) == pytest.approx(reference["eval_margin"], abs=1e-5)
    assert metric.aggregate(rows) == pytest.approx(reference["eval_accuracy"])


def test_a_plain_model_prefers_by_mean_token_logprob(tmp_path: Path) -> None:
    import torch

    base = TinyBaseModel("llama-xxs", seed=4)
    rows = PreferenceAccuracy().score_model(**_kwargs(base, [], _tokenizer_folder(base, tmp_path)))
    model, tok = base.causal_lm().eval(), base.tokenizer()

    def mean_logp(prompt: list[dict[str, str]], answer: str) -> float:
        p, a = prompt_and_answer_ids(tok, prompt, answer)
        labels = torch.tensor([[-100] * len(p) + a])
        with torch.no_grad():  # the loss is the mean NLL of the labelled tokens
            return -float(model(input_ids=torch.tensor([p + a]), labels=labels).loss)

    for row, prompt, good, bad in zip(rows, PROMPTS, CHOSEN, REJECTED, strict=True):
        margin = mean_logp(prompt, good) - mean_logp(prompt, bad)
        assert row[1] == pytest.approx(margin, abs=1e-5)
        assert row[0] == float(margin > 0)


def test_preference_accuracy_needs_pairs(tmp_path: Path) -> None:
    base = TinyBaseModel("llama-xxs", seed=0)
    kwargs = _kwargs(base, [], _tokenizer_folder(base, tmp_path))
    kwargs["rejected"] = [None, "x", "y"]
    with pytest.raises(ValueError, match="preference pairs"):
        PreferenceAccuracy().score_model(**kwargs)


def test_smoke_check_finds_missing_eos_and_template_leftovers() -> None:
    tok = TinyBaseModel("llama-xxs", seed=0).tokenizer()
    eos, pad = tok.eos_token_id, tok.pad_token_id

    def ids(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    assert smoke_check([*ids("your order ships today"), eos, pad, pad], tok) == (True, True)
    assert smoke_check(ids("your order ships today"), tok) == (False, True)
    assert smoke_check([*ids(f"{BOS_TOKEN}assistant\nhi"), eos], tok) == (True, False)
    assert smoke_check([*ids("hi\nuser\nmore"), eos], tok) == (True, False)
    assert smoke_check([*ids("hi<|endoftext|>"), eos], tok) == (True, False)


def test_generation_smoke_on_a_real_model(tmp_path: Path) -> None:
    # an untrained model never emits EOS within a small budget: every answer fails
    base = TinyBaseModel("llama-xxs", seed=0)
    metric = GenerationSmoke()
    rows = metric.score_model(**_kwargs(base, [], _tokenizer_folder(base, tmp_path)))
    assert len(rows) == len(PROMPTS)
    assert all(r[0] == float(r[1] and r[2]) for r in rows)
    assert metric.aggregate(rows) == sum(r[0] for r in rows) / len(rows)


class _Recorder:
    """A stand-in model that records where it was asked to go (no GPU needed)."""

    def __init__(self, **attrs: Any) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.__dict__.update(attrs)

    def to(self, *args: Any, **kwargs: Any) -> _Recorder:
        self.calls.append((args, kwargs))
        return self


def test_placement_moves_unquantized_models_and_changes_dtype_on_cuda_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch
    from tunewright_trl.generation import check_placement, place, resolve_device

    cpu = place(_Recorder(), device="cpu", dtype="bfloat16", half=True)
    assert cpu.calls == [(("cpu",), {})]  # CPU weights keep their dtype
    assert place(_Recorder(), device="cuda").calls == [(("cuda",), {})]  # metrics: as loaded
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert place(_Recorder(), device="cuda:1", half=True).calls == [
        ((), {"device": "cuda:1", "dtype": torch.bfloat16})
    ]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert place(_Recorder(), device="cuda", half=True).calls == [
        ((), {"device": "cuda", "dtype": torch.float16})
    ]
    assert place(_Recorder(), device="cuda", dtype="float32", half=True).calls == [
        ((), {"device": "cuda", "dtype": torch.float32})
    ]
    # bitsandbytes / device_map models stay where their loader put them
    for attrs in ({"is_loaded_in_4bit": True}, {"hf_device_map": {"": 0}}):
        assert place(_Recorder(**attrs), device="cuda", half=True).calls == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match="`device` must be auto, cpu, cuda or cuda:N"):
        check_placement("gpu", "auto")
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        check_placement("auto", "fp8")


def test_model_metrics_and_generator_take_device_and_dtype(tmp_path: Path) -> None:
    from tunewright_trl.generation import LocalGenerator

    for factory in (Perplexity, PreferenceAccuracy, GenerationSmoke, LocalGenerator):
        made = factory(device="cpu", dtype="float32")
        assert (made.device, made.dtype) == ("cpu", "float32")
        with pytest.raises(ValueError, match="device"):
            factory(device="tpu")
    with pytest.raises(ValueError, match="takes only device and dtype"):
        Perplexity(beta=1.0)
    # explicitly on the CPU, the numbers are the default run's
    base = TinyBaseModel("llama-xxs", seed=3)
    tok_dir = _tokenizer_folder(base, tmp_path)
    assert Perplexity(device="cpu").score_model(**_kwargs(base, [], tok_dir)) == (
        Perplexity().score_model(**_kwargs(base, [], tok_dir))
    )
