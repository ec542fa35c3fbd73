"""Each TRL method trains a tiny model on CPU and its signal moves the right way.

The methods are called the way the trainer's child process calls them (a run object with
rows, folders and callbacks), in this process, so torch and TRL are imported once.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tunewright_trl.methods import Method

from tunewright.core.plugins import PluginManager

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@dataclass
class Run:
    job_id: str
    seed: int
    base: Any
    config: Any
    hyperparameters: dict[str, Any]
    peft: dict[str, Any]
    quantization: dict[str, Any]
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]] | None
    output_dir: Path
    checkpoint_dir: Path
    resume_from: Path | None = None
    checkpoint_every: int = 1000
    parent_model: Path | None = None
    reward_model: Path | None = None
    device: str = "cpu"
    reports: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)

    def progress(self, **report: Any) -> None:
        self.reports.append(report)

    def checkpoint(self, *, step: int, path: Path, metrics: dict[str, float]) -> None:
        assert path.is_dir()
        self.checkpoints.append(step)

    def stop_requested(self) -> str | None:
        return None


LORA = {"type": "lora", "r": 16, "alpha": 32.0, "dropout": 0.0, "target_modules": []}


@pytest.fixture(scope="module")
def registries() -> Any:
    return PluginManager().load()


def make_run(
    registries: Any,
    tmp: Path,
    method: str,
    train: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]] | None,
    *,
    steps: int,
    hp: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    peft: dict[str, Any] | None = None,
    **extra: Any,
) -> tuple[Method, Run]:
    spec = registries.training_methods.get(method)
    impl = spec.factory()
    corpus = sorted({str(v) for row in train for v in _strings(row)})
    base = registries.base_models.get("tiny").factory("llama-xxs", corpus=corpus, seed=0)
    run = Run(
        job_id=f"test-{method}",
        seed=0,
        base=base,
        config=spec.config_cls(**(config or {})),
        hyperparameters={**impl.default_hyperparameters(), "max_steps": steps, **(hp or {})},
        peft=peft or LORA,
        quantization=extra.pop("quantization", {}),
        train_rows=train,
        eval_rows=eval_rows,
        output_dir=tmp / "out",
        checkpoint_dir=tmp / "checkpoints",
        **extra,
    )
    return impl, run


def _strings(row: Any) -> list[str]:
    if isinstance(row, str):
        return [row]
    if isinstance(row, dict):
        return [s for v in row.values() for s in _strings(v)]
    if isinstance(row, list):
        return [s for v in row for s in _strings(v)]
    return []


def sft_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"add {a} and {b}"},
                    {"role": "assistant", "content": f"the sum is {a + b}"},
                ]
            }
        )
    return rows


COMPLAINTS = ("my order is late", "the app crashes", "I was charged twice", "my parcel is lost")


def preference_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "prompt": f"ticket {rng.randint(100, 999)}: {rng.choice(COMPLAINTS)}",
            "chosen": "sorry about that, a refund is on its way",
            "rejected": "not our problem, ask the courier again",
        }
        for _ in range(n)
    ]


def test_sft_lora_assistant_only_loss_learns(registries: Any, tmp_path: Path) -> None:
    impl, run = make_run(
        registries,
        tmp_path,
        "sft",
        sft_rows(64, 0),
        sft_rows(16, 1),
        steps=30,
        hp={"learning_rate": 5e-3, "assistant_only_loss": True, "max_length": 64},
    )
    m = impl.train(run)
    assert m["eval_loss"] < m["initial_eval_loss"] - 0.5
    assert m["eval_mean_token_accuracy"] > m["initial_eval_mean_token_accuracy"] + 0.3
    assert run.reports and run.reports[-1]["step"] == 30
    assert (run.output_dir / "model" / "adapter_model.safetensors").is_file()
    assert (run.output_dir / "tokenizer" / "tokenizer.json").is_file()


def test_sft_full_finetune_with_packing_checkpoints_and_resumes(
    registries: Any, tmp_path: Path
) -> None:
    hp = {"learning_rate": 2e-3, "packing": True, "max_length": 64}
    impl, run = make_run(
        registries,
        tmp_path,
        "sft",
        sft_rows(64, 0),
        None,
        steps=8,
        hp=hp,
        peft={"type": "none"},
        checkpoint_every=4,
    )
    first = impl.train(run)
    assert run.checkpoints == [4, 8]
    assert (run.output_dir / "model" / "model.safetensors").is_file()
    # resuming from step 4 replays steps 5..8 to the same loss (same seed, same data order)
    impl, again = make_run(
        registries,
        tmp_path / "again",
        "sft",
        sft_rows(64, 0),
        None,
        steps=8,
        hp=hp,
        peft={"type": "none"},
        checkpoint_every=4,
        resume_from=tmp_path / "checkpoints" / "checkpoint-4",
    )
    impl.train(again)
    assert again.reports[0]["step"] == 5
    last = [r for r in run.reports if r["step"] == 8 and "loss" in r["metrics"]]
    last_again = [r for r in again.reports if r["step"] == 8 and "loss" in r["metrics"]]
    assert last_again[0]["metrics"]["loss"] == pytest.approx(last[0]["metrics"]["loss"], rel=1e-4)
    assert first["train_loss"] > 0


def test_qlora_4bit_sft_trains_on_cpu(registries: Any, tmp_path: Path) -> None:
    impl, run = make_run(
        registries,
        tmp_path,
        "sft",
        sft_rows(32, 0),
        sft_rows(8, 1),
        steps=10,
        hp={"learning_rate": 5e-3, "max_length": 64},
        quantization={"bits": 4, "quant_type": "nf4", "double_quant": True,
                      "compute_dtype": "float32"},
    )  # fmt: skip
    m = impl.train(run)
    assert m["eval_loss"] < m["initial_eval_loss"]
    assert (run.output_dir / "model" / "adapter_model.safetensors").is_file()


def test_dpo_margin_and_accuracy_rise(registries: Any, tmp_path: Path) -> None:
    impl, run = make_run(
        registries,
        tmp_path,
        "dpo",
        preference_rows(32, 0),
        preference_rows(8, 1),
        steps=15,
        hp={"learning_rate": 3e-3, "max_length": 64},
    )
    m = impl.train(run)
    assert m["eval_rewards/margins"] > m["initial_eval_rewards/margins"] + 0.1
    assert m["eval_rewards/accuracies"] > m["initial_eval_rewards/accuracies"]


ITEMS = ("order", "parcel", "invoice", "account", "card", "app", "phone", "login", "plan")


def test_reward_model_heldout_pair_accuracy_rises(registries: Any, tmp_path: Path) -> None:
    def rows(n: int, seed: int) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            item, other = rng.choice(ITEMS), rng.choice(ITEMS)
            out.append(
                {
                    "prompt": f"problem with my {item}",
                    "chosen": f"sorry, we fixed your {item} and your {other}",
                    "rejected": f"no, your {item} and your {other} are not our problem",
                }
            )
        return out

    impl, run = make_run(
        registries, tmp_path, "reward", rows(48, 0), rows(16, 1), steps=20, hp={"max_length": 64}
    )
    m = impl.train(run)
    # the untrained head prefers the rejected answers here (0.0); training flips it
    assert m["eval_accuracy"] >= 0.9
    assert m["eval_accuracy"] > m["initial_eval_accuracy"] + 0.3
    assert m["eval_margin"] > m["initial_eval_margin"] + 1.0
    assert (run.output_dir / "model" / "adapter_model.safetensors").is_file()


def test_kto_margin_rises(registries: Any, tmp_path: Path) -> None:
    def rows(n: int, seed: int) -> list[dict[str, Any]]:
        return [
            {"prompt": r["prompt"], "completion": r["chosen"] if i % 2 else r["rejected"],
             "label": bool(i % 2)}
            for i, r in enumerate(preference_rows(n, seed))
        ]  # fmt: skip

    impl, run = make_run(
        registries,
        tmp_path,
        "kto",
        rows(32, 0),
        rows(8, 1),
        steps=15,
        hp={"learning_rate": 3e-3, "max_length": 64},
    )
    m = impl.train(run)
    assert m["eval_rewards/margins"] > m["initial_eval_rewards/margins"] + 0.1


def test_config_validation_names_the_field() -> None:
    from tunewright_trl.configs import DpoConfig, RlhfConfig

    with pytest.raises(ValueError, match="`beta` must be > 0; got -1"):
        DpoConfig(beta=-1)
    with pytest.raises(ValueError, match="`algorithm` must be one of rloo, grpo; got 'ppo'"):
        RlhfConfig(algorithm="ppo")


def test_registration_is_cheap_and_complete() -> None:
    import sys

    registries = PluginManager().load()
    assert set(registries.training_methods.names()) >= {"sft", "dpo", "reward", "rlhf", "kto"}
    assert set(registries.base_models.names()) >= {"tiny", "hf"}
    assert "jsonl" in registries.trackers
    assert registries.training_methods.get("dpo").dataset_kinds == frozenset({"preference"})
    del sys  # torch may already be imported by other tests; the import test is in test_models


GOOD = ("sorry about that, a refund is on its way", "sorry, we have fixed it for you")
BAD = ("not our problem, ask the courier", "read the manual before writing")


@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_rlhf_after_sft_and_reward_model_raises_mean_reward(
    registries: Any, tmp_path: Path, algorithm: str
) -> None:
    rng = random.Random(5)
    # the SFT model answers well or badly at random; RLHF should shift it to the good answers
    sft = [
        {"messages": [{"role": "user", "content": rng.choice(COMPLAINTS)},
                      {"role": "assistant", "content": rng.choice(GOOD + BAD)}]}
        for _ in range(64)
    ]  # fmt: skip
    impl, sft_run = make_run(
        registries, tmp_path / "sft", "sft", sft, None, steps=40,
        hp={"learning_rate": 5e-3, "max_length": 48},
    )  # fmt: skip
    impl.train(sft_run)
    pairs = [
        {"prompt": rng.choice(COMPLAINTS), "chosen": rng.choice(GOOD), "rejected": rng.choice(BAD)}
        for _ in range(48)
    ]
    impl, rm_run = make_run(
        registries, tmp_path / "rm", "reward", pairs, None, steps=20, hp={"max_length": 48}
    )
    impl.train(rm_run)
    prompts = [{"prompt": rng.choice(COMPLAINTS)} for _ in range(64)]
    impl, run = make_run(
        registries,
        tmp_path / "rl",
        "rlhf",
        prompts,
        None,
        steps=24,
        hp={"learning_rate": 5e-3, "batch_size": 8},
        config={"algorithm": algorithm, "num_generations": 4, "max_completion_length": 16},
        parent_model=sft_run.output_dir,
        reward_model=rm_run.output_dir,
    )
    m = impl.train(run)
    assert m["final_mean_reward"] > m["initial_mean_reward"] + 0.1


def test_same_seed_same_spec_same_loss(registries: Any, tmp_path: Path) -> None:
    losses = []
    for i in range(2):
        impl, run = make_run(
            registries,
            tmp_path / str(i),
            "sft",
            sft_rows(32, 0),
            None,
            steps=6,
            hp={"learning_rate": 5e-3, "max_length": 64},
            peft={**LORA, "dropout": 0.1},  # dropout too: the seed fixes its masks
        )
        losses.append(impl.train(run)["train_loss"])
    assert losses[0] == losses[1]  # bit-identical on CPU (same seed, same threads)


QLORA = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}


def test_qlora_sft_then_dpo_on_the_same_4bit_base(registries: Any, tmp_path: Path) -> None:
    """DPO after QLoRA SFT trains the SFT adapter on (the 4-bit base cannot take a merge) with
    the SFT model as the reference, and saves its difference from the SFT adapter, so the
    chain base + SFT + DPO rebuilds the trained policy."""
    from tunewright_trl.scoring import PreferenceAccuracy

    impl, sft = make_run(
        registries, tmp_path / "sft", "sft", sft_rows(32, 0), None, steps=10,
        hp={"learning_rate": 5e-3, "max_length": 64}, quantization=QLORA,
    )  # fmt: skip
    impl.train(sft)
    pairs, held_out = preference_rows(32, 0), preference_rows(8, 1)
    impl, dpo = make_run(
        registries, tmp_path / "dpo", "dpo", pairs, held_out, steps=15,
        hp={"learning_rate": 3e-3, "max_length": 64}, quantization=QLORA,
        parent_model=sft.output_dir,
    )  # fmt: skip
    m = impl.train(dpo)
    # the reference is the SFT model (TRL's frozen copy of the adapter), not the bare base
    # (against which these rewards are ~0.1): before any step the policy is the reference, so
    # every implicit reward is ~0
    assert abs(m["initial_eval_rewards/chosen"]) < 1e-3
    assert abs(m["initial_eval_rewards/margins"]) < 1e-3
    assert m["eval_rewards/margins"] > 0.1
    assert m["eval_rewards/accuracies"] >= 0.75
    out = dpo.output_dir / "model"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 2 * LORA["r"]  # continued adapter and negated parent, stacked
    assert not (out / "ref").exists()
    # the evaluator's view (full-precision base, chain root first) prefers the chosen answers
    margins = PreferenceAccuracy().margins(
        base=dpo.base,
        weights=[sft.output_dir, dpo.output_dir],
        tokenizer=dpo.output_dir,
        method="dpo",
        prompts=[[{"role": "user", "content": r["prompt"]}] for r in held_out],
        chosen=[r["chosen"] for r in held_out],
        rejected=[r["rejected"] for r in held_out],
        batch_size=8,
    )
    assert sum(v > 0 for v in margins) >= 6


def test_qlora_dpo_on_a_fully_fine_tuned_parent(registries: Any, tmp_path: Path) -> None:
    impl, sft = make_run(
        registries, tmp_path / "sft", "sft", sft_rows(32, 0), None, steps=4,
        hp={"learning_rate": 2e-3, "max_length": 64}, peft={"type": "none"},
    )  # fmt: skip
    impl.train(sft)
    impl, dpo = make_run(
        registries, tmp_path / "dpo", "dpo", preference_rows(16, 0), None, steps=4,
        hp={"learning_rate": 3e-3, "max_length": 64}, quantization=QLORA,
        parent_model=sft.output_dir,
    )  # fmt: skip
    impl.train(dpo)
    config = json.loads((dpo.output_dir / "model" / "adapter_config.json").read_text())
    assert config["r"] == LORA["r"]  # a new adapter on the parent's (4-bit) weights


def test_delta_adapter_after_the_parent_equals_the_continued_adapter(tmp_path: Path) -> None:
    import shutil

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from tunewright_trl.generation import load_causal_lm
    from tunewright_trl.methods import _save_as_delta
    from tunewright_trl.models import TinyBaseModel

    base = TinyBaseModel("llama-xxs", seed=0)
    config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear")
    folders = {}
    for seed, name in ((1, "parent"), (2, "continued")):
        torch.manual_seed(seed)
        peft = get_peft_model(base.causal_lm(), config)
        for n, p in peft.named_parameters():
            if "lora_B" in n:  # B starts at 0: give it values so the delta is not trivial
                torch.nn.init.normal_(p, std=0.05)
        folders[name] = tmp_path / name
        peft.save_pretrained(str(folders[name] / "model"))
    trained = tmp_path / "trained"
    shutil.copytree(folders["continued"], trained)
    (trained / "model" / "ref").mkdir()  # what TRL's reference copy leaves beside it
    (trained / "model" / "ref" / "adapter_config.json").write_text("{}")
    _save_as_delta(trained / "model", folders["parent"] / "model")
    assert not (trained / "model" / "ref").exists()
    chain = load_causal_lm(base, [folders["parent"], trained])
    direct = PeftModel.from_pretrained(base.causal_lm(), str(folders["continued"] / "model"))
    direct = direct.merge_and_unload()
    ids = torch.tensor([[1, 5, 9, 17, 33, 65, 129]])
    with torch.no_grad():
        torch.testing.assert_close(chain(ids).logits, direct(ids).logits, rtol=1e-4, atol=1e-5)


def test_device_hyperparameters_resolve_and_are_checked() -> None:
    from tunewright_trl.methods import Sft, device_settings

    sft = Sft()
    hp = sft.default_hyperparameters()
    assert (hp["precision"], hp["gradient_checkpointing"], hp["attn_implementation"]) == (
        "auto", None, "auto",
    )  # fmt: skip

    @dataclass
    class R:
        hyperparameters: dict[str, Any]
        quantization: dict[str, Any]
        device: str = "cpu"

    cpu = device_settings(R(hp, {}))
    assert (cpu.cpu, cpu.precision, cpu.gradient_checkpointing, cpu.attention) == (
        True, "fp32", False, "sdpa",
    )  # fmt: skip
    assert device_settings(R(hp, QLORA)).gradient_checkpointing  # QLoRA: on by default
    assert not device_settings(
        R({**hp, "gradient_checkpointing": False}, QLORA)
    ).gradient_checkpointing
    assert device_settings(R({**hp, "precision": "bf16"}, {})).precision == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        device_settings(R({**hp, "precision": "fp16"}, {}))
    with pytest.raises(ValueError, match="flash_attention_2 needs a GPU"):
        device_settings(R({**hp, "attn_implementation": "flash_attention_2"}, {}))

    from tunewright_trl.methods import _set_attention
    from tunewright_trl.models import TinyBaseModel

    model = TinyBaseModel("llama-xxs").causal_lm()
    assert model.config._attn_implementation == "sdpa"  # what auto keeps on CPU
    _set_attention(model, "eager")
    assert model.config._attn_implementation == "eager"

    def problems(**changed: Any) -> list[tuple[str, str]]:
        return sft.preflight(config=None, peft=LORA, quantization=None,
                             hyperparameters={**hp, **changed})  # fmt: skip

    assert problems() == []
    assert problems(precision="fp64") == [
        ("hyperparameters.precision", "must be one of auto, fp32, bf16, fp16; got 'fp64'")
    ]
    assert problems(attn_implementation="flash")[0][0] == "hyperparameters.attn_implementation"
    assert "true, false or unset" in problems(gradient_checkpointing="yes")[0][1]
    assert any(
        "16 bits only" in reason
        for _, reason in problems(attn_implementation="flash_attention_2", precision="fp32")
    )
