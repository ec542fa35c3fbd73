"""Base models: ``tiny:`` is deterministic and carries ChatML + EOS; ``hf:`` loads a local
safetensors folder without remote code and says why it cannot load anything else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tunewright_trl.chat import EOS_TOKEN
from tunewright_trl.models import HfBaseModel, TinyBaseModel

CORPUS = ["add 2 and 3", "the sum is 5", "hello there"]


def test_registering_the_plugin_imports_no_torch() -> None:
    # only this plugin (and the core's own): other plugins' imports are not ours to test
    code = (
        "import sys, importlib.metadata as md\n"
        "from tunewright.core.plugins import PluginManager\n"
        "others = [e.name for e in md.entry_points(group='tunewright')\n"
        "          if e.name not in ('trl', 'core-artifact-stores')]\n"
        "registries = PluginManager().load(disabled=others)\n"
        "assert 'sft' in registries.training_methods\n"
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tiny_is_deterministic_and_chat_ready() -> None:
    import torch

    a = TinyBaseModel("llama-xxs", corpus=CORPUS, seed=1)
    b = TinyBaseModel("llama-xxs", corpus=CORPUS, seed=1)
    assert a.tokenizer().get_vocab() == b.tokenizer().get_vocab()
    wa, wb = a.causal_lm().state_dict(), b.causal_lm().state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = TinyBaseModel("llama-xxs", corpus=CORPUS, seed=2).causal_lm().state_dict()
    assert not all(torch.equal(wa[k], c[k]) for k in wa)

    tok = a.tokenizer()
    assert tok.eos_token == EOS_TOKEN
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        tokenize=False,
    )
    assert text.endswith(f"hello{EOS_TOKEN}\n")
    assert TinyBaseModel("llama-huge").preflight()[0][0] == "base_model"


def test_hf_loads_a_local_safetensors_folder(tmp_path: Path) -> None:
    tiny = TinyBaseModel("llama-xxs", corpus=CORPUS, seed=0)
    folder = tmp_path / "model"
    tiny.causal_lm().save_pretrained(folder, safe_serialization=True)
    tiny.tokenizer().save_pretrained(folder)

    hf = HfBaseModel(str(folder))
    assert hf.preflight() == []
    assert hf.eos_token == EOS_TOKEN and hf.chat_template
    assert hf.parameter_count() == tiny.parameter_count()
    model = hf.causal_lm()
    assert model.config.model_type == "llama"
    assert hf.tokenizer().eos_token == EOS_TOKEN


def test_hf_explains_what_it_cannot_load(tmp_path: Path) -> None:
    problems = dict(HfBaseModel("org/model-on-the-hub").preflight())
    assert "no hub access" in problems["base_model"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    reasons = [r for _, r in HfBaseModel(str(tmp_path)).preflight()]
    assert any("safetensors" in r for r in reasons)
    assert any("chat template" in r for r in reasons)
