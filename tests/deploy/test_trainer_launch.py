"""From compose/.env to the command the trainer starts a job with: the launch choices of
compose/gpu.yml, resolved by docker-compose, loaded as the trainer's settings, turned into
the child's command line (services/trainer/tests/test_launch.py checks each command against
the launchers' own parsers and trains a job with two ranks under torchrun)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunewright.core.settings import ENV_PREFIX, SettingsError, load_settings
from tunewright.trainer.launch import child_command
from tunewright.trainer.settings import TrainerSettings

from .conftest import compose_config

WORKDIR = Path("/data/trainer/work/job-1")
FIFO = str(WORKDIR / "channel.fifo")

PREFIX = ["python", "-m"]
CHILD = ["-m", "tunewright.trainer.child", str(WORKDIR), FIFO]

CASES = {
    "default: one process": ({}, ["python", *CHILD]),
    "torchrun DDP on 2 GPUs": (
        {"TRAINER_LAUNCHER": "torchrun", "TRAINER_GPUS_PER_JOB": "2"},
        [*PREFIX, *"torch.distributed.run --standalone --nnodes 1 --nproc_per_node 2".split()],
    ),
    "accelerate FSDP on 8 GPUs": (
        {"TRAINER_LAUNCHER": "accelerate", "TRAINER_GPUS_PER_JOB": "8", "TRAINER_STRATEGY": "fsdp"},
        [
            *PREFIX,
            *"accelerate.commands.launch --num_machines 1 --num_processes 8".split(),
            *"--mixed_precision bf16 --use_fsdp".split(),
        ],
    ),
    "accelerate DeepSpeed ZeRO-3 on 4 GPUs, fp16": (
        {
            "TRAINER_LAUNCHER": "accelerate",
            "TRAINER_GPUS_PER_JOB": "4",
            "TRAINER_STRATEGY": "deepspeed-zero3",
            "TRAINER_MIXED_PRECISION": "fp16",
        },
        [
            *PREFIX,
            *"accelerate.commands.launch --num_machines 1 --num_processes 4".split(),
            *"--mixed_precision fp16 --use_deepspeed --zero_stage 3".split(),
        ],
    ),
}


def _trainer_env(env_file: Path, choices: dict[str, str]) -> dict[str, Any]:
    with env_file.open("a") as f:
        f.writelines(f"{key}={value}\n" for key, value in choices.items())
    result = compose_config(env_file)
    assert result.returncode == 0, result.stderr
    environment: dict[str, Any] = yaml.safe_load(result.stdout)["services"]["trainer"][
        "environment"
    ]
    return environment


def _load(environment: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> TrainerSettings:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for key, value in environment.items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, str(value))
    return load_settings(TrainerSettings)


@pytest.mark.parametrize("case", list(CASES))
def test_gpu_override_choices_become_the_launch_command(
    case: str, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    choices, expected_start = CASES[case]
    settings = _load(_trainer_env(env_file, choices), monkeypatch)
    command = child_command("python", settings.trainer.launch, WORKDIR, FIFO)
    assert command[: len(expected_start)] == expected_start
    assert command[-4:] == CHILD


def test_a_strategy_the_launcher_cannot_run_stops_the_trainer(
    env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = _trainer_env(
        env_file,
        {"TRAINER_LAUNCHER": "torchrun", "TRAINER_GPUS_PER_JOB": "2", "TRAINER_STRATEGY": "fsdp"},
    )
    with pytest.raises(SettingsError, match=r"needs trainer\.launch\.launcher 'accelerate'"):
        _load(environment, monkeypatch)
