"""Fixtures of the vllm backend tests: trained folders as the trainer writes them (a PEFT
``model/adapter_config.json`` or full weights, ``tokenizer/``), an ``hf:`` base folder, and
the fake vLLM (``fake_vllm.py``) either on PATH as the ``vllm`` executable or in a thread.

vLLM itself cannot run here (no GPU, not installed): the fake stands in for it, speaking the
same HTTP routes, status codes and stream format (see fake_vllm.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tunewright.core.model_versions import TrainedChain

HERE = Path(__file__).resolve().parent
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"


def load_fake_vllm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tw_vllm_fake_vllm", HERE / "fake_vllm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tokenizer(folder: Path, template: str = TEMPLATE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": template, "eos_token": "</s>"})
    )


@pytest.fixture
def base_folder(tmp_path: Path) -> Path:
    """An hf: base model folder (config.json + tokenizer files; no weights needed here)."""
    folder = tmp_path / "models" / "llama-8b"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    write_tokenizer(folder)
    return folder


TrainFolder = Callable[..., Path]


@pytest.fixture
def trained(tmp_path: Path) -> TrainFolder:
    """``trained(model_version_id, r=16, lora=True, **adapter_config)``: a trained folder."""

    def make(
        mv: str, r: int = 16, *, lora: bool = True, template: str = TEMPLATE, **extra: Any
    ) -> Path:
        folder = tmp_path / "versions" / mv
        model = folder / "model"
        model.mkdir(parents=True)
        if lora:
            config = {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": r,
                "lora_alpha": 2 * r,
                "target_modules": ["q_proj", "v_proj"],
                "modules_to_save": None,
                **extra,
            }
            (model / "adapter_config.json").write_text(json.dumps(config))
            (model / "adapter_model.safetensors").write_bytes(b"\0" * 8)
        else:
            (model / "config.json").write_text("{}")
            (model / "model.safetensors").write_bytes(b"\0" * 8)
        write_tokenizer(folder / "tokenizer", template)
        return folder

    return make


def chain(mv: str, base: Path | str, *folders: Path) -> TrainedChain:
    base_model = base if isinstance(base, str) else f"hf:{base}"
    return TrainedChain(mv, base_model, 0, tuple(folders))


@pytest.fixture
def make_chain() -> Callable[..., TrainedChain]:
    """``make_chain(model_version_id, base folder or URI, *trained folders)``."""
    return chain


@pytest.fixture
def fake_vllm_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``vllm`` executable on PATH that runs fake_vllm.py; returns the record file it
    appends to (one JSON object a line)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vllm"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_vllm.py"}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    record = tmp_path / "fake-vllm-record.jsonl"
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    return record


def read_record(path: Path) -> list[dict[str, Any]]:
    """The entries fake_vllm.py appended to ``path``."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture
def records() -> Callable[[Path], list[dict[str, Any]]]:
    return read_record


@dataclass
class FakeServer:
    base_url: str
    api_key: str
    record: Path

    def requests(self) -> list[dict[str, Any]]:
        return [e for e in read_record(self.record) if "path" in e]


@pytest.fixture
def fake_server(tmp_path: Path, base_folder: Path, trained: TrainFolder) -> Iterator[FakeServer]:
    """The fake vLLM in a thread on port 0, serving adapter ``mv_a`` of ``base_folder``."""
    fake = load_fake_vllm()
    folder = trained("mv_a")
    record = tmp_path / "server-record.jsonl"
    args = fake.parse_args(
        [
            "serve",
            str(base_folder),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--enable-lora",
            "--lora-modules",
            f"mv_a={folder / 'model'}",
        ]
    )
    environ = {
        "VLLM_API_KEY": "test-key",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "FAKE_VLLM_RECORD": str(record),
    }
    server = fake.build_server(args, environ)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeServer(f"http://127.0.0.1:{server.server_address[1]}", "test-key", record)
    finally:
        server.shutdown()
        server.server_close()
