"""The multi-GPU launch setting: the exact command each launcher and strategy gets, checked
against the launchers' own argument parsers, and a job trained by two ranks under torchrun.

No GPU here: the two-rank job runs DDP on CPU (gloo), which is the same code path the GPU run
takes (HF Trainer reads the ranks from the launcher's environment); FSDP and DeepSpeed need
GPUs (and deepspeed), so for them the test shows the command, parsed by accelerate itself.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.settings import SettingsError, load_settings
from tunewright.trainer.launch import child_command
from tunewright.trainer.settings import LaunchSettings, TrainerSettings
from tunewright.trainer.v1 import trainer_pb2

from .conftest import Harness, finished, sft_rows, sft_spec

PY = "/opt/venv/bin/python"
WD = Path("/data/trainer/work/job-1")
CHILD = ["-m", "tunewright.trainer.child", str(WD), str(WD / "channel.fifo")]


def _cmd(**launch: object) -> list[str]:
    return child_command(PY, LaunchSettings(**launch), WD, str(WD / "channel.fifo"))


def test_default_is_one_child_process_on_the_inherited_pipe() -> None:
    settings = load_settings(TrainerSettings)
    assert settings.trainer.launch.launcher == "none"
    command = child_command(PY, settings.trainer.launch, WD, "7")
    assert command == [PY, "-m", "tunewright.trainer.child", str(WD), "7"]


ACCELERATE = [PY, "-m", "accelerate.commands.launch"]

# the commands, written as they would be typed (workdir and FIFO appended: CHILD)
EXPECTED = {
    "torchrun ddp": (
        {"launcher": "torchrun", "nproc_per_node": 4},
        [
            PY,
            *"-m torch.distributed.run --standalone --nnodes 1 --nproc_per_node 4".split(),
            *CHILD,
        ],
    ),
    "accelerate ddp": (
        {"launcher": "accelerate", "nproc_per_node": 4},
        [
            *ACCELERATE,
            *"--num_machines 1 --num_processes 4 --mixed_precision bf16 --multi_gpu".split(),
            *CHILD,
        ],
    ),
    "accelerate fsdp": (
        {"launcher": "accelerate", "nproc_per_node": 8, "strategy": "fsdp"},
        [
            *ACCELERATE,
            *"--num_machines 1 --num_processes 8 --mixed_precision bf16 --use_fsdp".split(),
            *"--fsdp_version 2 --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP".split(),
            *"--fsdp_reshard_after_forward true --fsdp_state_dict_type SHARDED_STATE_DICT".split(),
            *"--fsdp_cpu_ram_efficient_loading true".split(),
            *CHILD,
        ],
    ),
    "accelerate deepspeed-zero2": (
        {"launcher": "accelerate", "nproc_per_node": 2, "strategy": "deepspeed-zero2"},
        [
            *ACCELERATE,
            *"--num_machines 1 --num_processes 2 --mixed_precision bf16 --use_deepspeed".split(),
            *"--zero_stage 2 --offload_optimizer_device none --offload_param_device none".split(),
            *CHILD,
        ],
    ),
    "accelerate deepspeed-zero3 with cpu offload, config file, extra args": (
        {
            "launcher": "accelerate",
            "nproc_per_node": 8,
            "strategy": "deepspeed-zero3",
            "offload": "cpu",
            "mixed_precision": "fp16",
            "accelerate_config_file": "/etc/tunewright/accelerate.yaml",
            "extra_args": ["--main_process_port", "29600"],
        },
        [
            *ACCELERATE,
            *"--config_file /etc/tunewright/accelerate.yaml".split(),
            *"--num_machines 1 --num_processes 8 --mixed_precision fp16 --use_deepspeed".split(),
            *"--zero_stage 3 --offload_optimizer_device cpu --offload_param_device cpu".split(),
            *"--zero3_init_flag true --zero3_save_16bit_model true".split(),
            *"--main_process_port 29600".split(),
            *CHILD,
        ],
    ),
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_launch_command_per_strategy(case: str) -> None:
    launch, expected = EXPECTED[case]
    command = _cmd(**launch)
    print(f"{case}: {' '.join(command)}")  # shown with pytest -s
    assert command == expected
    # the launcher's own parser accepts it and reads the values we meant
    args = command[3:]
    if command[2] == "torch.distributed.run":
        from torch.distributed.run import get_args_parser

        parsed = get_args_parser().parse_args(args)
        assert parsed.nproc_per_node == str(launch["nproc_per_node"]) and parsed.standalone
    else:
        from accelerate.commands.launch import launch_command_parser

        parsed = launch_command_parser().parse_args(args)
        assert parsed.num_processes == launch["nproc_per_node"]
        assert parsed.use_fsdp == (launch.get("strategy") == "fsdp")
        assert parsed.use_deepspeed == str(launch.get("strategy", "")).startswith("deepspeed")
    assert parsed.module
    assert parsed.training_script == "tunewright.trainer.child"
    assert parsed.training_script_args == [str(WD), str(WD / "channel.fifo")]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TW_TRAINER__LAUNCH__NPROC_PER_NODE": "2"}, "launcher is 'none'"),
        (
            {"TW_TRAINER__LAUNCH__LAUNCHER": "torchrun", "TW_TRAINER__LAUNCH__STRATEGY": "fsdp"},
            "needs trainer.launch.launcher 'accelerate'",
        ),
        ({"TW_TRAINER__LAUNCH__LAUNCHR": "torchrun"}, "did you mean 'trainer.launch.launcher'"),
    ],
)
def test_bad_launch_settings_are_named(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(TrainerSettings)


async def test_a_job_trained_by_two_ranks_under_torchrun(harness: Harness) -> None:
    """Real torchrun, two processes (DDP over gloo on CPU): rank 0 reports, the job succeeds."""
    await harness.start_worker(
        python=sys.executable, launch={"launcher": "torchrun", "nproc_per_node": 2}
    )
    await harness.dataset("dv-ddp", "sft", sft_rows(48), sft_rows(8, seed=1))
    reply = await harness.stub.SubmitTrainingJob(
        trainer_pb2.SubmitTrainingJobRequest(spec=sft_spec("dv-ddp"), request_id="ddp")
    )
    job = await harness.wait_for(reply.job.id, finished, timeout_s=180)
    log = harness.data_dir / "trainer" / "work" / job.id / "child.log"
    detail = log.read_text()[-3000:] if log.exists() else ""
    assert job.status == common_pb2.JOB_STATUS_SUCCEEDED, f"{job.error}\n{detail}"
    (fact,) = await harness.facts(subjects.TRAINER_JOB_SUCCEEDED, expect=1)
    assert [c.step for c in fact.checkpoints] == [3, 6]
    # two ranks of batch 4 take 8 of the 48 rows a step: 6 steps are one epoch (one rank: 0.5)
    assert job.final_metrics["epoch"] == pytest.approx(1.0)
    assert fact.model_version.id == job.model_version_id


def _rank_processes(job_id: str) -> list[int]:
    """Live processes of the job's child (launcher or rank): its work folder is in argv."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tunewright.trainer.child" in argv and any(job_id.encode() in a for a in argv):
            pids.append(int(proc.name))
    return pids


def _running(job: trainer_pb2.TrainingJob) -> bool:
    return job.status == common_pb2.JOB_STATUS_RUNNING and job.progress.step >= 1


async def test_pause_and_cancel_reach_every_rank(harness: Harness) -> None:
    """Pause: the ranks agree on the step (else DDP would hang) and stop at one checkpoint.
    Cancel: the launcher's group is killed and the ranks, its children, exit too."""
    await harness.start_worker(
        python=sys.executable, launch={"launcher": "torchrun", "nproc_per_node": 2}
    )
    await harness.dataset("dv-ctl", "sft", sft_rows(32))
    spec = sft_spec("dv-ctl", checkpoint_every_steps=1000)
    spec.hyperparameters.max_steps = 5000
    spec.hyperparameters.batch_size = 2
    first = await harness.stub.SubmitTrainingJob(trainer_pb2.SubmitTrainingJobRequest(spec=spec))
    await harness.wait_for(first.job.id, _running, timeout_s=120)
    await harness.stub.PauseTrainingJob(trainer_pb2.PauseTrainingJobRequest(job_id=first.job.id))
    paused = await harness.wait_for(
        first.job.id, lambda j: j.status == common_pb2.JOB_STATUS_PAUSED, timeout_s=60
    )
    assert 0 < paused.latest_checkpoint.step < 5000

    spec.seed = 8  # another job: run it and cancel it mid-training
    second = await harness.stub.SubmitTrainingJob(trainer_pb2.SubmitTrainingJobRequest(spec=spec))
    await harness.wait_for(second.job.id, _running, timeout_s=120)
    assert len(_rank_processes(second.job.id)) >= 3  # torchrun + two ranks
    await harness.stub.CancelTrainingJob(
        trainer_pb2.CancelTrainingJobRequest(job_id=second.job.id, reason="test")
    )
    job = await harness.wait_for(second.job.id, finished, timeout_s=30)
    assert job.status == common_pb2.JOB_STATUS_CANCELLED
    for _ in range(50):  # the ranks poll their parent every 0.5 s
        if not _rank_processes(second.job.id):
            break
        await asyncio.sleep(0.1)
    assert _rank_processes(second.job.id) == []
