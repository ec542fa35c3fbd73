"""The command line that starts a job's child process: one process, or one per GPU.

With ``trainer.launch.launcher: none`` (the default) the worker runs
``python -m tunewright.trainer.child WORKDIR FD`` and the child reports over the inherited pipe
``FD``. With ``accelerate`` or ``torchrun`` the same module runs once per GPU under that
launcher (``accelerate launch … -m tunewright.trainer.child WORKDIR CHANNEL``); the launchers
close inherited descriptors, so the report channel is then a FIFO path in the work folder that
only rank 0 writes to. The training code is unchanged: the HF Trainer reads the distributed
setup (DDP, FSDP, DeepSpeed ZeRO) from the environment the launcher prepares.

References: ``accelerate launch --help`` (accelerate 1.15), ``torchrun --help`` (torch 2.13),
https://huggingface.co/docs/accelerate/usage_guides/fsdp and …/deepspeed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from tunewright.trainer.settings import LaunchSettings

CHILD_MODULE: Final = "tunewright.trainer.child"

# FSDP for transformers models: wrap each decoder layer (the model's _no_split_modules),
# keep original parameters (LoRA mixes frozen and trainable ones), load weights on rank 0 only
_FSDP_ARGS: Final = (
    "--use_fsdp",
    "--fsdp_version",
    "2",
    "--fsdp_auto_wrap_policy",
    "TRANSFORMER_BASED_WRAP",
    "--fsdp_reshard_after_forward",
    "true",
    "--fsdp_state_dict_type",
    "SHARDED_STATE_DICT",
    "--fsdp_cpu_ram_efficient_loading",
    "true",
)


def child_command(python: str, launch: LaunchSettings, workdir: Path, channel: str) -> list[str]:
    """argv of the job's child: ``channel`` is the pipe's fd number or the FIFO's path."""
    script = ["-m", CHILD_MODULE, str(workdir), channel]
    if launch.launcher == "none":
        return [python, *script]
    if launch.launcher == "torchrun":
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes",
            "1",
            "--nproc_per_node",
            str(launch.nproc_per_node),
            *launch.extra_args,
            *script,
        ]
    return [
        python,
        "-m",
        "accelerate.commands.launch",
        *_accelerate_args(launch),
        *launch.extra_args,
        *script,
    ]


def _accelerate_args(launch: LaunchSettings) -> list[str]:
    args: list[str] = []
    if launch.accelerate_config_file is not None:
        # the file describes the setup; the flags below still win where they are given
        args += ["--config_file", str(launch.accelerate_config_file)]
    args += [
        "--num_machines",
        "1",
        "--num_processes",
        str(launch.nproc_per_node),
        "--mixed_precision",
        launch.mixed_precision,
    ]
    if launch.strategy == "ddp":
        args.append("--multi_gpu")
    elif launch.strategy == "fsdp":
        args += _FSDP_ARGS
    else:  # deepspeed-zero2 / deepspeed-zero3 (needs the deepspeed package in the image)
        stage = launch.strategy.removeprefix("deepspeed-zero")
        args += ["--use_deepspeed", "--zero_stage", stage]
        args += ["--offload_optimizer_device", launch.offload, "--offload_param_device"]
        args.append(launch.offload if stage == "3" else "none")
        if stage == "3":
            # build the model sharded, and gather a 16-bit copy for save_model()
            args += ["--zero3_init_flag", "true", "--zero3_save_16bit_model", "true"]
    return args
