"""The ``vllm serve`` command line, environment and settings (pure functions, no server)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from tunewright_vllm.adapters import Adapter
from tunewright_vllm.command import lora_module, max_lora_rank, serve_command
from tunewright_vllm.config import VllmConfig

README = Path(__file__).resolve().parents[1] / "README.md"
BASE = Path("/models/llama-8b")


def _adapter(mv: str, rank: int = 16, path: str | None = None) -> Adapter:
    return Adapter(mv, mv, Path(path or f"/srv/tw/versions/{mv}/model"), rank, BASE)


def test_realistic_config_gives_this_exact_command_and_environment() -> None:
    config = VllmConfig.from_params(
        {
            "executable": "/opt/vllm/bin/vllm",
            "served_model_name": "llama-8b",
            "dtype": "bfloat16",
            "tensor_parallel_size": 2,
            "gpu_memory_utilization": 0.85,
            "max_model_len": 8192,
            "max_loras": 4,
            "max_cpu_loras": 16,
            "max_lora_rank": 32,
            "extra_args": ["--enforce-eager"],
            "env": {"CUDA_VISIBLE_DEVICES": "0,1"},
        }
    )
    command = serve_command(
        config,
        adapters=[_adapter("mv_01JDA", 16), _adapter("mv_01JDB", 64)],
        port=8123,
        api_key="k3y",
        base_env={"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "7", "HOME": "/home/tw"},
    )
    assert command.argv == [
        "/opt/vllm/bin/vllm",
        "serve",
        "/models/llama-8b",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--served-model-name",
        "llama-8b",
        "--dtype",
        "bfloat16",
        "--tensor-parallel-size",
        "2",
        "--gpu-memory-utilization",
        "0.85",
        "--max-model-len",
        "8192",
        "--enable-lora",
        "--max-loras",
        "4",
        "--max-lora-rank",
        "64",  # raised from 32 to hold mv_01JDB's r=64
        "--max-cpu-loras",
        "16",
        "--lora-modules",
        "mv_01JDA=/srv/tw/versions/mv_01JDA/model",
        "mv_01JDB=/srv/tw/versions/mv_01JDB/model",
        "--enforce-eager",
    ]
    assert command.env == {
        "PATH": "/usr/bin",
        "HOME": "/home/tw",
        "CUDA_VISIBLE_DEVICES": "0,1",  # the settings' env over the inherited one
        "VLLM_API_KEY": "k3y",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    }
    assert command.max_lora_rank == 64
    assert "k3y" not in command.argv  # the key travels in the environment only


def test_defaults_give_the_minimal_command() -> None:
    command = serve_command(
        VllmConfig(), adapters=[_adapter("mv_a", 8)], port=9000, api_key="k", base_env={}
    )
    assert command.argv == [
        "vllm",
        "serve",
        "/models/llama-8b",
        "--host",
        "127.0.0.1",
        "--port",
        "9000",
        "--dtype",
        "auto",
        "--tensor-parallel-size",
        "1",
        "--enable-lora",
        "--max-loras",
        "4",
        "--max-lora-rank",
        "16",
        "--lora-modules",
        "mv_a=/srv/tw/versions/mv_a/model",
    ]


def test_ranks_round_up_to_what_vllm_accepts() -> None:
    config = VllmConfig()
    assert max_lora_rank(config, [_adapter("a", 4)]) == 16  # the configured floor
    assert max_lora_rank(config, [_adapter("a", 17)]) == 32
    assert max_lora_rank(config, [_adapter("a", 300)]) == 320
    assert max_lora_rank(VllmConfig(max_lora_rank=128), [_adapter("a", 8)]) == 128


def test_a_path_with_equals_or_comma_goes_as_json() -> None:
    # vLLM's LoRAParserAction reads name=path only when the item has "=" and no ","
    assert lora_module(_adapter("mv_a", path="/data/run=3/model")) == json.dumps(
        {"name": "mv_a", "path": "/data/run=3/model"}
    )
    assert json.loads(lora_module(_adapter("mv_a", path="/data/a,b/model")))["path"] == (
        "/data/a,b/model"
    )


def test_serve_command_refuses_no_adapter_or_two_bases() -> None:
    with pytest.raises(ValueError, match="needs the adapter"):
        serve_command(VllmConfig(), adapters=[], port=1, api_key="k", base_env={})
    other = Adapter("mv_b", "mv_b", Path("/x/model"), 8, Path("/models/other"))
    with pytest.raises(ValueError, match="more than one base"):
        serve_command(
            VllmConfig(), adapters=[_adapter("mv_a"), other], port=1, api_key="k", base_env={}
        )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_lora": 4}, "unknown vllm backend params: max_lora"),
        ({"max_lora_rank": 24}, "`max_lora_rank` must be one of 1, 8, 16"),
        ({"max_loras": 0}, "`max_loras` must be >= 1, got 0"),
        ({"max_loras": 4, "max_cpu_loras": 2}, "`max_cpu_loras` must be >= max_loras"),
        ({"gpu_memory_utilization": 1.5}, "`gpu_memory_utilization` must be in"),
        ({"dtype": "int4"}, "`dtype` must be one of auto"),
        ({"port": 70000}, "`port` must be in"),
        ({"extra_args": ["--port=9"]}, "`extra_args` is set by the backend"),
        ({"extra_args": ["--lora-modules", "x=/y"]}, "`extra_args` is set by the backend"),
        ({"extra_args": "--enforce-eager"}, "`extra_args` must be a list of strings"),
        ({"env": {"VLLM_API_KEY": "mine"}}, "`env` is set by the backend"),
        ({"startup_timeout_s": 0}, "`startup_timeout_s` must be > 0"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        VllmConfig.from_params(params)


def test_readme_documents_every_param() -> None:
    text = README.read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert documented == {f.name for f in dataclasses.fields(VllmConfig)}
