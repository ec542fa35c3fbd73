"""The job's child process: ``python -m tunewright.trainer.child WORKDIR FD``.

It trains one job with the method plugin and reports over file descriptor ``FD`` as JSON lines
(``progress``, ``checkpoint``, ``done``, ``paused``, ``error``). A crash, an OOM kill or a
cancel (SIGKILL from the worker) ends this process only. SIGUSR1 asks for a pause: a
checkpoint at the next step, then exit. If the worker dies, this process exits too (it polls
its parent), so an orphan never trains on.

Under accelerate / torchrun (``trainer.launch``) every rank runs this module with a FIFO path
instead of ``FD``: rank 0 reports through it (its ``ready`` carries its pid, so the worker
signals the pause to it) and the other ranks stay silent; a pause request is agreed on by all
ranks at each step, so they stop at the same one. A rank's parent is the launcher's agent.

``WORKDIR`` holds ``plan.json`` (written by :mod:`tunewright.trainer.runner`), the dataset
rows under ``data/``, parent / reward model folders, the checkpoint to resume from, and
receives ``out/`` (model + tokenizer) and ``checkpoints/``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tunewright.core.logs import scrub_error_message
from tunewright.core.splits import read_split_rows

# quiet, offline libraries: set before transformers / datasets are imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_PARENT_POLL_S = 0.5


@dataclass
class ChildRun:
    """The ``run`` object a method plugin trains from (see services/trainer/README.md)."""

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
    resume_from: Path | None
    checkpoint_every: int
    parent_model: Path | None
    reward_model: Path | None
    device: str
    channel: IO[str]
    pause: threading.Event = field(default_factory=threading.Event)
    #: one of several ranks: a pause counts once every rank has heard of it
    distributed: bool = False

    def _send(self, **message: Any) -> None:
        self.channel.write(json.dumps(message) + "\n")
        self.channel.flush()

    def progress(
        self, *, step: int, total_steps: int, epoch: float, metrics: dict[str, float]
    ) -> None:
        self._send(
            type="progress", step=step, total_steps=total_steps, epoch=epoch, metrics=metrics
        )

    def checkpoint(self, *, step: int, path: Path, metrics: dict[str, float]) -> None:
        self._send(type="checkpoint", step=step, path=str(path), metrics=metrics)

    def stop_requested(self) -> str | None:
        wanted = self.pause.is_set()
        if self.distributed:
            wanted = _any_rank(wanted)
        return "pause" if wanted else None


def _any_rank(flag: bool) -> bool:
    """True on every rank if it is true on one (a collective: every rank calls it in step)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = "cpu"
    if "nccl" in str(dist.get_backend()):
        device = f"cuda:{torch.cuda.current_device()}"
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Canonical rows from a downloaded split file (JSONL or Parquet)."""
    return read_split_rows(path.read_bytes(), "parquet" if path.suffix == ".parquet" else "")


def texts(rows: list[dict[str, Any]]) -> Iterator[str]:
    """Every string in the rows (tokenizer training corpus for tiny models)."""
    stack: list[Any] = list(rows)
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(_PARENT_POLL_S)


def main(argv: list[str]) -> int:
    workdir = Path(argv[1])
    launched = not argv[2].isdigit()  # a FIFO path: one of the ranks of a launcher
    if not launched:
        channel = os.fdopen(int(argv[2]), "w", buffering=1, encoding="utf-8")
    elif int(os.environ.get("RANK", "0")) == 0:
        channel = open(argv[2], "w", buffering=1, encoding="utf-8")
    else:
        channel = open(os.devnull, "w", encoding="utf-8")
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    pause = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: pause.set())
    # the worker sends SIGUSR1 only after this (its default action would kill us)
    ready: dict[str, Any] = {"type": "ready"}
    if launched:
        ready["pid"] = os.getpid()
    channel.write(json.dumps(ready) + "\n")
    channel.flush()
    try:
        return _train(workdir, channel, pause, distributed=launched)
    except Exception as exc:  # reported to the worker, which fails the job with it
        # it becomes the job's error in events and the registry: no quoted row text or PII
        message = scrub_error_message(str(exc))
        channel.write(
            json.dumps({"type": "error", "error": type(exc).__name__, "message": message}) + "\n"
        )
        channel.flush()
        raise


def _train(
    workdir: Path, channel: IO[str], pause: threading.Event, *, distributed: bool = False
) -> int:
    from tunewright.core.plugins import PluginManager

    plan = json.loads((workdir / "plan.json").read_text())
    registries = PluginManager().load(disabled=plan["plugins_disabled"])
    train_rows = [r for p in plan["train_files"] for r in read_rows(Path(p))]
    eval_rows = read_rows(Path(plan["eval_file"])) if plan["eval_file"] else None
    max_eval = int(plan["hyperparameters"].get("max_eval_samples") or 0)
    if eval_rows and max_eval:
        eval_rows = eval_rows[:max_eval]  # the split's own (seeded) order
    base = registries.base_models.get(plan["base_scheme"]).factory(
        plan["base_reference"], corpus=sorted(set(texts(train_rows))), seed=plan["seed"]
    )
    method_spec = registries.training_methods.get(plan["method"])
    method = method_spec.factory()
    run = ChildRun(
        job_id=plan["job_id"],
        seed=plan["seed"],
        base=base,
        config=method_spec.config_cls(**plan["method_config"]),
        hyperparameters=plan["hyperparameters"],
        peft=plan["peft"],
        quantization=plan["quantization"],
        train_rows=train_rows,
        eval_rows=eval_rows,
        output_dir=workdir / "out",
        checkpoint_dir=workdir / "checkpoints",
        resume_from=Path(plan["resume_from"]) if plan["resume_from"] else None,
        checkpoint_every=plan["checkpoint_every"],
        parent_model=Path(plan["parent_model"]) if plan["parent_model"] else None,
        reward_model=Path(plan["reward_model"]) if plan["reward_model"] else None,
        device=plan["device"],
        channel=channel,
        pause=pause,
        distributed=distributed,
    )
    # hashing the base weights (GiBs for a real model) overlaps with training
    base_digest: dict[str, str] = {}
    hasher = threading.Thread(
        target=lambda: base_digest.update(sha256=base.weights_sha256()), daemon=True
    )
    hasher.start()
    metrics = method.train(run)
    if metrics.get("paused"):
        run._send(type="paused")
        return 0
    hasher.join()
    environment = run_environment(plan["device"])
    environment["base_weights_sha256"] = base_digest.get("sha256", "")
    run._send(type="done", metrics=metrics, environment=environment)
    return 0


#: distributions whose versions decide what a run computes
_RECORDED_DISTRIBUTIONS = (
    "torch", "transformers", "peft", "trl", "accelerate", "datasets", "tokenizers",
    "safetensors", "bitsandbytes", "gguf", "numpy", "tunewright-core", "tunewright-trainer",
)  # fmt: skip


def run_environment(device: str) -> dict[str, Any]:
    """Library versions, the code's git commit and the device: RunEnvironment's fields."""
    import platform
    from importlib import metadata

    import torch

    from tunewright.core.plugins import ENTRY_POINT_GROUP

    versions = {}
    for name in _RECORDED_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    # every installed tunewright plugin distribution (tunewright-trl, third-party ones)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.dist is not None:
            versions.setdefault(entry.dist.name, entry.dist.version)
    if device != "cpu" and torch.cuda.is_available():
        where = f"cuda:{torch.cuda.get_device_name(0)}"
    else:
        where = "cpu"
    return {
        "code_version": versions.get("tunewright-trainer", ""),
        "git_commit": _git_commit(),
        "library_versions": versions,
        "python_version": platform.python_version(),
        "device": where,
    }


def _git_commit() -> str:
    """HEAD of the checkout this code runs from, "-dirty" when it has changes; "" outside one."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}-dirty" if dirty else head


if __name__ == "__main__":
    sys.exit(main(sys.argv))
