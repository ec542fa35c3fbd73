"""The ``vllm`` backend's settings: ``serve.backend.params`` of the serve service, checked once.

Every field names the ``vllm serve`` option it becomes (see :mod:`tunewright_vllm.command`).
Unknown keys and bad values raise :class:`ValueError` naming the key and the value, so a typo
in the serve settings stops the service at start-up instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: the ranks ``--max-lora-rank`` takes (``MaxLoRARanks`` in vllm/config/lora.py)
ALLOWED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: ``--dtype`` choices of vLLM's engine arguments
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
#: flags the backend sets itself; ``extra_args`` may not repeat them
MANAGED_FLAGS = (
    "--host",
    "--port",
    "--uds",
    "--model",
    "--api-key",
    "--served-model-name",
    "--dtype",
    "--tensor-parallel-size",
    "-tp",
    "--gpu-memory-utilization",
    "--max-model-len",
    "--enable-lora",
    "--max-loras",
    "--max-lora-rank",
    "--max-cpu-loras",
    "--lora-modules",
)
#: environment variables the backend sets itself; ``env`` may not override them
MANAGED_ENV = ("VLLM_API_KEY", "VLLM_ALLOW_RUNTIME_LORA_UPDATING")


@dataclass(frozen=True, slots=True)
class VllmConfig:
    executable: str = field(
        default="vllm", metadata={"help": "the `vllm` command (a name on PATH or a path)"}
    )
    port: int = field(
        default=0, metadata={"help": "port of the child server on 127.0.0.1; 0 = a free one"}
    )
    served_model_name: str | None = field(
        default=None,
        metadata={"help": "`--served-model-name` of the base model (default: its folder)"},
    )
    dtype: str = field(default="auto", metadata={"help": "`--dtype`"})
    tensor_parallel_size: int = field(
        default=1, metadata={"help": "`--tensor-parallel-size` (GPUs per model)"}
    )
    gpu_memory_utilization: float | None = field(
        default=None, metadata={"help": "`--gpu-memory-utilization`, in (0, 1]"}
    )
    max_model_len: int | None = field(
        default=None, metadata={"help": "`--max-model-len` (prompt + answer tokens)"}
    )
    max_loras: int = field(
        default=4, metadata={"help": "`--max-loras`: adapters (model versions) in one batch"}
    )
    max_cpu_loras: int | None = field(
        default=None,
        metadata={"help": "`--max-cpu-loras`: adapters cached in CPU memory (>= max_loras)"},
    )
    max_lora_rank: int = field(
        default=16,
        metadata={
            "help": "smallest `--max-lora-rank` to start with; raised to cover the adapters "
            "known at start. One of 1, 8, 16, 32, 64, 128, 256, 320, 512"
        },
    )
    extra_args: tuple[str, ...] = field(
        default=(),
        metadata={"help": 'more `vllm serve` arguments, e.g. ["--enforce-eager"]'},
    )
    env: Mapping[str, str] = field(
        default_factory=dict,
        metadata={"help": "environment of the child process, e.g. CUDA_VISIBLE_DEVICES"},
    )
    startup_timeout_s: float = field(
        default=900.0, metadata={"help": "how long to wait for GET /health after the start"}
    )
    stop_timeout_s: float = field(
        default=30.0, metadata={"help": "SIGTERM grace before SIGKILL on close"}
    )
    request_timeout_s: float = field(
        default=600.0, metadata={"help": "per HTTP read (a token of a stream, an adapter load)"}
    )
    log_file: str | None = field(
        default=None,
        metadata={
            "help": "vLLM's stdout/stderr (appended); default $TMPDIR/tunewright-vllm-<pid>.log"
        },
    )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> VllmConfig:
        """The config for ``serve.backend.params``; unknown keys raise :class:`ValueError`."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(
                f"unknown vllm backend params: {', '.join(unknown)} (known: {', '.join(names)})"
            )
        values = dict(params)
        if "extra_args" in values:
            extra = values["extra_args"]
            if isinstance(extra, str) or not all(isinstance(a, str) for a in extra):
                raise ValueError(f"`extra_args` must be a list of strings, got {extra!r}")
            values["extra_args"] = tuple(extra)
        if "env" in values:
            values["env"] = dict(values["env"] or {})
        return cls(**values)

    def __post_init__(self) -> None:
        _check(bool(self.executable), "executable", self.executable, "must not be empty")
        _check(0 <= self.port <= 65535, "port", self.port, "must be in [0, 65535]")
        _check(self.dtype in DTYPES, "dtype", self.dtype, f"must be one of {', '.join(DTYPES)}")
        _check(self.tensor_parallel_size >= 1, "tensor_parallel_size", self.tensor_parallel_size)
        if self.gpu_memory_utilization is not None:
            _check(
                0 < self.gpu_memory_utilization <= 1,
                "gpu_memory_utilization",
                self.gpu_memory_utilization,
                "must be in (0, 1]",
            )
        if self.max_model_len is not None:
            _check(self.max_model_len >= 1, "max_model_len", self.max_model_len)
        _check(self.max_loras >= 1, "max_loras", self.max_loras)
        if self.max_cpu_loras is not None:
            _check(
                self.max_cpu_loras >= self.max_loras,
                "max_cpu_loras",
                self.max_cpu_loras,
                f"must be >= max_loras ({self.max_loras})",
            )
        _check(
            self.max_lora_rank in ALLOWED_LORA_RANKS,
            "max_lora_rank",
            self.max_lora_rank,
            f"must be one of {', '.join(map(str, ALLOWED_LORA_RANKS))}",
        )
        for arg in self.extra_args:
            flag = arg.split("=", 1)[0]
            _check(
                flag not in MANAGED_FLAGS,
                "extra_args",
                arg,
                "is set by the backend (use the param of the same name)",
            )
        for key, value in self.env.items():
            _check(key not in MANAGED_ENV, "env", key, "is set by the backend")
            _check(isinstance(value, str), f"env.{key}", value, "must be a string")
        for name in ("startup_timeout_s", "stop_timeout_s", "request_timeout_s"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")


def _check(ok: bool, name: str, value: object, problem: str = "must be >= 1") -> None:
    if not ok:
        raise ValueError(f"vllm backend param `{name}` {problem}, got {value!r}")
