"""Running one training job: claim it, prepare its inputs, train it in a child process.

A :class:`Worker` runs one job at a time. It claims the job in the job store (so two workers
never run it together), resolves the plan again (pre-flight), downloads datasets, parent /
reward models and the last checkpoint, and starts ``python -m tunewright.trainer.child`` (once,
or once per GPU under accelerate / torchrun: ``trainer.launch``, see :mod:`.launch`).
While the child trains, the worker turns its reports into rate-limited progress events,
uploads each checkpoint to the artifact store, marks the job alive (heartbeat) and carries out
pause / cancel requests. At the end it stores the output (adapter or weights + tokenizer +
resolved config + metrics) and announces the model version through :class:`JobEvents`.

No grpc or nats here: events go through the :class:`JobEvents` protocol (server.py publishes
them on NATS).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tunewright.core.artifacts import (
    ArtifactRef,
    ArtifactStore,
    open_private,
    private_dir,
    write_private,
)
from tunewright.core.errors import PermanentError
from tunewright.core.ids import new_id, stable_id
from tunewright.core.plugins import PluginManager
from tunewright.trainer.jobs import Checkpoint, Job, JobSpec, JobStatus, Progress, Transition
from tunewright.trainer.launch import child_command
from tunewright.trainer.preflight import DatasetResolver, Plan, preflight
from tunewright.trainer.settings import TrainerSettings
from tunewright.trainer.store import JobStore

log = logging.getLogger(__name__)
#: the training child's umask: what transformers / TRL / PEFT write (checkpoints, the adapter)
#: is owner-only whatever umask this service inherited
CHILD_UMASK = 0o077


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """What a finished job produced; becomes a ``registry.v1.ModelVersion``."""

    model_version_id: str
    model: str
    weights: ArtifactRef
    tokenizer: ArtifactRef
    metrics_log: ArtifactRef
    chat_template: str
    eos_token: str
    metrics: dict[str, float]
    checkpoints: list[Checkpoint]
    #: trainer.v1.RunEnvironment's fields (libraries, git commit, base-weight sha256, device)
    environment: dict[str, Any] = field(default_factory=dict)


class JobEvents(Protocol):
    """Facts about jobs; server.py publishes them on NATS."""

    async def started(self, job: Job, *, resumed_from_step: int) -> None: ...
    async def progressed(self, job: Job) -> None: ...
    async def checkpointed(self, job: Job, checkpoint: Checkpoint) -> None: ...
    async def paused(self, job: Job) -> None: ...
    async def succeeded(self, job: Job, output: ModelOutput) -> None: ...
    async def failed(self, job: Job) -> None: ...
    async def cancelled(self, job: Job, *, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class JobView:
    """What lifecycle hooks see of a job (``tunewright.core.hookspecs.TrainJobView``)."""

    id: str
    method: str
    base_model: str


class ModelIndex:
    """Model versions this trainer produced (parent / reward models of later jobs)."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    def model_output(self, model_version_id: str) -> ArtifactRef | None:
        job = self._producer(model_version_id)
        return job.output if job is not None else None

    def producer_spec(self, model_version_id: str) -> JobSpec | None:
        """The spec of the job that trained the version (its base model and seed resolved)."""
        job = self._producer(model_version_id)
        return job.spec if job is not None else None

    def _producer(self, model_version_id: str) -> Job | None:
        for job in self._store.list(statuses=[JobStatus.SUCCEEDED], limit=100_000):
            if job.model_version_id == model_version_id and job.output is not None:
                return job
        return None


def new_worker_id() -> str:
    """``<host>.<pid>.<random>``: a dead worker on this host is recognised by its pid."""
    return f"{socket.gethostname()}.{os.getpid()}.{new_id('w')[-6:].lower()}"


def worker_alive(job: Job, *, now: float, orphan_after_s: float) -> bool:
    host, _, rest = job.worker_id.partition(".")
    pid_text = rest.partition(".")[0]
    if host == socket.gethostname() and pid_text.isdigit():
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # someone else's process: alive
    return now - job.heartbeat_at < orphan_after_s


def transition(job: Job, status: JobStatus, reason: str = "") -> None:
    job.status = status
    job.history.append(Transition(status, time.time(), reason))
    if status.terminal:
        job.finished_at = time.time()


class Worker:
    def __init__(
        self,
        *,
        settings: TrainerSettings,
        store: JobStore,
        artifacts: ArtifactStore,
        plugins: PluginManager,
        events: JobEvents,
        datasets: DatasetResolver,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.plugins = plugins
        self.events = events
        self.datasets = datasets
        self.models = ModelIndex(store)
        self.worker_id = worker_id or new_worker_id()
        self.work_root = settings.data_dir / "trainer" / "work"
        self._current: _Attempt | None = None

    # --- control ---

    def control(self, job_id: str, action: str) -> bool:
        """Pause or cancel the job if this worker runs it; False when it does not."""
        attempt = self._current
        if attempt is None or attempt.job_id != job_id:
            return False
        if action == "cancel":
            attempt.cancel()
        elif action == "pause":
            attempt.pause()
        return True

    # --- one request ---

    async def run(self, job_id: str) -> None:
        """Run (or resume) ``job_id`` unless it is finished, paused or held by a live worker."""
        decision = self._claim(job_id)
        if decision is None:
            return
        job, cancel = decision
        if cancel:
            await self.finish_cancelled(job, "cancelled before it started")
            return
        attempt = _Attempt(self, job)
        self._current = attempt
        try:
            await attempt.run()
        finally:
            self._current = None

    def _claim(self, job_id: str) -> tuple[Job, bool] | None:
        now = time.time()
        outcome: list[str] = []

        def claim(job: Job) -> bool:
            if job.status.terminal or job.status is JobStatus.PAUSED:
                outcome.append(f"already {job.status.value}")
                return False
            if job.requested_control == "cancel":
                outcome.append("cancel")
                return False
            if (
                job.status is JobStatus.RUNNING
                and job.worker_id != self.worker_id
                and worker_alive(job, now=now, orphan_after_s=self.settings.trainer.orphan_after_s)
            ):
                outcome.append("held by a live worker")
                return False
            job.attempt += 1
            job.worker_id = self.worker_id
            job.heartbeat_at = now
            job.started_at = job.started_at or now
            transition(job, JobStatus.RUNNING, f"attempt {job.attempt} on {self.worker_id}")
            return True

        job = self.store.update(job_id, claim)
        if outcome == ["cancel"]:
            return job, True
        if outcome:
            log.info("job not run job_id=%s reason=%s", job_id, outcome[0])
            return None
        return job, False

    # --- endings shared with the servicer ---

    async def finish_cancelled(self, job: Job, reason: str) -> Job:
        def cancel(j: Job) -> bool:
            if j.status.terminal:
                return False
            j.requested_control = ""
            transition(j, JobStatus.CANCELLED, reason)
            return True

        from tunewright.core.bus import publish_until_acked  # retries only; no nats use here

        # announced first (until NATS takes it), stored after: a job stored as cancelled has
        # announced it, so a NATS blip cannot leave a pipeline waiting for the fact
        announced = self.store.get(job.id)
        if not cancel(announced):
            return announced
        await publish_until_acked(
            lambda: self.events.cancelled(announced, reason=reason),
            what=f"training job {job.id} cancelled",
        )
        changed = False

        def cancel_stored(j: Job) -> bool:
            nonlocal changed
            changed = cancel(j)
            return changed

        job = self.store.update(job.id, cancel_stored)
        if changed:
            self.store.add_event(
                job.id, message=f"cancelled: {reason}", kind="status", status=JobStatus.CANCELLED
            )
        return job


class _Attempt:
    """One attempt at a job on this worker: inputs, child process, outcome."""

    def __init__(self, worker: Worker, job: Job) -> None:
        self.w = worker
        self.job = job
        self.job_id = job.id
        self.workdir = worker.work_root / job.id
        self.proc: asyncio.subprocess.Process | None = None
        self._ready = False
        # under a launcher the child is the launcher: pause goes to rank 0 (its pid in "ready")
        self._rank0_pid: int | None = None
        self._pause_wanted = False
        self._cancel_wanted = False
        self._deadline_hit = False
        self._error: tuple[str, str] | None = None
        self._final: dict[str, float] | None = None
        self._environment: dict[str, Any] = {}
        self._paused = False
        self._metrics_log: list[dict[str, Any]] = []
        self._last_published = 0.0
        self._tokens: tuple[float, float] | None = None  # (time, num_tokens) of last report
        self._started = time.monotonic()
        self._trackers: list[Any] = []

    # control (called from the control listener)

    def pause(self) -> None:
        self._pause_wanted = True
        if self._ready and self.proc is not None and self.proc.returncode is None:
            if self._rank0_pid is None:
                self.proc.send_signal(signal.SIGUSR1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._rank0_pid, signal.SIGUSR1)

    def cancel(self) -> None:
        self._cancel_wanted = True
        self._kill()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    # the attempt

    async def run(self) -> None:
        w, job = self.w, self.job
        pf = await preflight(
            job.spec,
            registries=w.plugins.registries,
            datasets=w.datasets,
            models=w.models,
            default_checkpoint_every=w.settings.trainer.checkpoint_every_steps,
            outbound=w.settings.outbound,
            tracking_dir=w.settings.data_dir / "trainer" / "tracking",
        )
        if pf.plan is None:
            reasons = "; ".join(f"{f}: {d}" for f, d in pf.violations)
            await self._fail("INVALID_SPEC", reasons)
            return
        try:
            w.plugins.before_train(job=JobView(job.id, job.spec.method, job.spec.base_model))
        except Exception as exc:
            await self._fail("VETOED_BY_PLUGIN", f"{type(exc).__name__}: {exc}")
            return
        heartbeat = asyncio.create_task(self._heartbeat())  # downloads can take long too
        try:
            await self._run_child(pf.plan)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _run_child(self, plan: Plan) -> None:
        w, job = self.w, self.job
        try:
            resumed_from = await self._prepare(plan)
        except PermanentError as exc:  # a missing or corrupted input artifact
            await self._fail("INPUT_UNAVAILABLE", exc.message)
            return
        self.w.store.add_event(
            job.id,
            message=f"attempt {job.attempt} started on {w.worker_id}"
            + (f", resuming from step {resumed_from}" if resumed_from else ""),
            kind="status",
            status=JobStatus.RUNNING,
        )
        await w.events.started(job, resumed_from_step=resumed_from)
        self._open_trackers()
        try:
            rc = await self._train()
        finally:
            for tracker in self._trackers:
                tracker.close()
        await self._finish(rc)

    async def _prepare(self, plan: Plan) -> int:
        """Fill the work folder; returns the step it resumes from (0 = fresh).

        The work folder holds the job's datasets and weights: it is owner-only (0700), and so
        is everything in it (the child runs with umask 077).
        """
        wd = self.workdir
        if wd.exists():
            shutil.rmtree(wd)
        private_dir(self.w.work_root)
        private_dir(wd / "data")
        train_files = []
        for i, info in enumerate(plan.datasets):
            dest = wd / "data" / f"train-{i}{_suffix(info.train)}"
            await self.w.artifacts.get_file(info.train, dest)
            train_files.append(str(dest))
        eval_file = ""
        eval_ref = plan.eval_dataset.train if plan.eval_dataset is not None else None
        if eval_ref is None:  # else the first dataset's own eval split, when it has one
            eval_ref = next((d.eval for d in plan.datasets if d.eval is not None), None)
        if eval_ref is not None:
            dest = wd / "data" / f"eval{_suffix(eval_ref)}"
            await self.w.artifacts.get_file(eval_ref, dest)
            eval_file = str(dest)
        parent = reward = ""
        if plan.parent_model is not None:
            parent = str(await self.w.artifacts.get_dir(plan.parent_model, wd / "parent"))
        if plan.reward_model is not None:
            reward = str(await self.w.artifacts.get_dir(plan.reward_model, wd / "reward"))
        resume_from = ""
        latest = self.job.latest_checkpoint
        if latest is not None:
            dest = wd / "checkpoints" / f"checkpoint-{latest.step}"
            await self.w.artifacts.get_dir(latest.artifact, dest)
            resume_from = str(dest)
        self.plan = plan
        document = {
            **dataclasses.asdict(plan),
            "job_id": self.job.id,
            "plugins_disabled": list(self.w.settings.plugins.disabled),
            "train_files": train_files,
            "eval_file": eval_file,
            "parent_model": parent,
            "reward_model": reward,
            "resume_from": resume_from,
        }
        write_private(wd / "plan.json", json.dumps(document, indent=1, default=_json_default))
        return latest.step if latest is not None else 0

    def _open_trackers(self) -> None:
        registry = self.w.plugins.registries.trackers
        for name, params in self.job.spec.trackers:
            factory = registry.get(name).factory
            self._trackers.append(
                factory(
                    job_id=self.job.id,
                    directory=self.w.settings.data_dir / "trainer" / "tracking",
                    outbound=self.w.settings.outbound,
                    **params,
                )
            )

    async def _train(self) -> int:
        python = self.w.settings.trainer.python or sys.executable
        launch = self.w.settings.trainer.launch
        if launch.launcher != "none":
            return await self._train_launched(python)
        read_fd, write_fd = os.pipe()
        with open_private(self.workdir / "child.log", "ab") as child_log:
            self.proc = await asyncio.create_subprocess_exec(
                *child_command(python, launch, self.workdir, str(write_fd)),
                pass_fds=(write_fd,),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=child_log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel kills all of it
                umask=CHILD_UMASK,
            )
        os.close(write_fd)
        if self._cancel_wanted:
            self._kill()
        await self._read_reports(read_fd)
        return await self.proc.wait()

    async def _train_launched(self, python: str) -> int:
        """One process per GPU under accelerate / torchrun; rank 0 reports through a FIFO.

        The launchers close inherited descriptors, so the pipe of the one-process path cannot
        reach the ranks. This side holds a write end of its own until the launcher exits:
        reading the FIFO does not end before rank 0 has opened it, and does end once rank 0
        (and the launcher) are gone.
        """
        fifo = self.workdir / "channel.fifo"
        os.mkfifo(fifo, 0o600)
        read_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        hold_fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            with open_private(self.workdir / "child.log", "ab") as child_log:
                self.proc = await asyncio.create_subprocess_exec(
                    *child_command(python, self.w.settings.trainer.launch, self.workdir, str(fifo)),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=child_log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # cancel kills the launcher's group; ranks follow
                    umask=CHILD_UMASK,  # the ranks inherit it
                )
        except BaseException:
            os.close(read_fd)
            os.close(hold_fd)
            raise
        if self._cancel_wanted:
            self._kill()
        proc = self.proc

        async def release_when_exited() -> None:
            try:
                await proc.wait()
            finally:
                os.close(hold_fd)

        releaser = asyncio.create_task(release_when_exited())
        try:
            await self._read_reports(read_fd)
        finally:
            releaser.cancel()  # done already unless reading stopped early (cancelled, failed)
            with contextlib.suppress(asyncio.CancelledError):
                await releaser
        return await proc.wait()

    async def _read_reports(self, read_fd: int) -> None:
        """The child's JSON lines until every writer has closed the channel."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**24)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb")
        )
        try:
            while line := await reader.readline():
                await self._on_message(json.loads(line))
        finally:
            transport.close()

    async def _on_message(self, msg: Mapping[str, Any]) -> None:
        kind = msg["type"]
        if kind == "ready":
            self._ready = True
            if "pid" in msg:
                self._rank0_pid = int(msg["pid"])
            if self._pause_wanted:
                self.pause()
        elif kind == "progress":
            await self._on_progress(msg)
        elif kind == "checkpoint":
            await self._on_checkpoint(int(msg["step"]), Path(msg["path"]), msg["metrics"])
        elif kind == "done":
            self._final = {k: float(v) for k, v in msg["metrics"].items()}
            self._environment = dict(msg.get("environment") or {})
        elif kind == "paused":
            self._paused = True
        elif kind == "error":
            self._error = (msg["error"], msg["message"])

    async def _on_progress(self, msg: Mapping[str, Any]) -> None:
        now = time.monotonic()
        metrics: dict[str, float] = {k: float(v) for k, v in msg["metrics"].items()}
        step, total = int(msg["step"]), int(msg["total_steps"])
        record = {"step": step, "epoch": msg["epoch"], **metrics}
        self._metrics_log.append(record)
        for tracker in self._trackers:
            tracker.log(step, metrics)
        tokens_per_s = self.job.progress.tokens_per_second
        if "num_tokens" in metrics:
            if self._tokens is not None and now > self._tokens[0]:
                tokens_per_s = (metrics["num_tokens"] - self._tokens[1]) / (now - self._tokens[0])
            self._tokens = (now, metrics["num_tokens"])
        elapsed = now - self._started
        eta = elapsed / step * (total - step) if step and total > step else 0.0
        progress = Progress(
            step=step,
            total_steps=total,
            epoch=float(msg["epoch"]),
            loss=metrics.get("loss", self.job.progress.loss),
            learning_rate=metrics.get("learning_rate", self.job.progress.learning_rate),
            tokens_per_second=tokens_per_s,
            eta_seconds=eta,
            # the last report of a run carries only totals: keep what earlier steps measured
            metrics={
                **self.job.progress.metrics,
                **{k: v for k, v in metrics.items() if k not in ("loss", "learning_rate", "epoch")},
            },
        )
        self.job.progress = progress
        interval = self.w.settings.trainer.progress_interval_s
        if now - self._last_published < interval and step < total:
            return  # rate limit: the metrics log keeps every step
        self._last_published = now

        def set_progress(job: Job) -> None:
            job.progress = progress

        self.job = self.w.store.update(self.job_id, set_progress)
        self.w.store.add_event(
            self.job_id,
            message=f"step {step}/{total}",
            kind="metrics",
            metrics={"step": step, "loss": progress.loss, **progress.metrics},
        )
        await self.w.events.progressed(self.job)

    async def _on_checkpoint(self, step: int, path: Path, metrics: Mapping[str, Any]) -> None:
        ref = await self.w.artifacts.put_dir(path)
        checkpoint = Checkpoint(
            step=step,
            artifact=ref,
            created_at=time.time(),
            metrics={k: float(v) for k, v in metrics.items()},
        )
        self.job = self.w.store.add_checkpoint(self.job_id, checkpoint)
        self.w.store.add_event(self.job_id, message=f"checkpoint at step {step}")
        await self.w.events.checkpointed(self.job, checkpoint)
        # the checkpoint is safe in the artifact store: older local ones are not needed
        for old in path.parent.glob("checkpoint-*"):
            suffix = old.name.removeprefix("checkpoint-")
            if suffix.isdigit() and int(suffix) < step:
                shutil.rmtree(old, ignore_errors=True)

    async def _heartbeat(self) -> None:
        timeout = self.job.spec.timeout_seconds
        while True:
            await asyncio.sleep(self.w.settings.trainer.heartbeat_s)

            def beat(job: Job, now: float = time.time()) -> None:
                job.heartbeat_at = now

            job = self.w.store.update(self.job_id, beat)
            if job.requested_control == "cancel" and not self._cancel_wanted:
                self.cancel()  # asked while no control listener saw it (e.g. before start)
            elif job.requested_control == "pause" and not self._pause_wanted:
                self.pause()
            if timeout and time.monotonic() - self._started > timeout:
                self._deadline_hit = True
                self._kill()

    # --- outcome ---

    async def _finish(self, rc: int) -> None:
        if self._cancel_wanted:
            await self.w.finish_cancelled(self.job, "cancelled while running")
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self._deadline_hit:
            await self._fail(
                "DEADLINE_EXCEEDED", f"ran longer than {self.job.spec.timeout_seconds} s"
            )
        elif rc == 0 and self._paused:
            await self._pause_done()
        elif rc == 0 and self._final is not None:
            await self._succeed(self._final)
        elif self._error is not None:
            await self._fail("TRAINING_ERROR", f"{self._error[0]}: {self._error[1]}")
        elif rc < 0:
            name = signal.Signals(-rc).name
            await self._fail("CHILD_KILLED", f"training process killed by {name} (OOM?)")
        else:
            await self._fail("CHILD_EXITED", f"training process exited with code {rc}")

    async def _pause_done(self) -> None:
        def pause(job: Job) -> None:
            job.requested_control = ""
            transition(job, JobStatus.PAUSED, "paused on request")

        self.job = self.w.store.update(self.job_id, pause)
        step = self.job.latest_checkpoint.step if self.job.latest_checkpoint else 0
        self.w.store.add_event(
            self.job_id,
            message=f"paused at step {step}",
            kind="status",
            status=JobStatus.PAUSED,
        )
        await self.w.events.paused(self.job)

    async def _succeed(self, metrics: dict[str, float]) -> None:
        out = self.workdir / "out"
        spec = self.job.spec
        write_private(
            out / "config.json",
            json.dumps(
                {"job_id": self.job_id, "spec": dataclasses.asdict(spec), **_plan_doc(self)},
                indent=1,
                default=_json_default,
            ),
        )
        write_private(out / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True))
        weights = await self.w.artifacts.put_dir(out)
        tokenizer = await self.w.artifacts.put_dir(out / "tokenizer")
        log_bytes = "".join(json.dumps(r) + "\n" for r in self._metrics_log).encode()
        metrics_log = await self.w.artifacts.put_bytes(log_bytes, "application/jsonl")
        chat_template, eos_token = _template_and_eos(out / "tokenizer")
        output = ModelOutput(
            model_version_id=stable_id("mv", self.job_id),
            model=spec.output_model or f"{spec.method}-{self.job_id}",
            weights=weights,
            tokenizer=tokenizer,
            metrics_log=metrics_log,
            chat_template=chat_template,
            eos_token=eos_token,
            metrics=metrics,
            checkpoints=self.w.store.checkpoints(self.job_id),
            environment={
                **self._environment,
                "seed": spec.seed,
                "base_model": spec.base_model,
            },
        )
        self.w.plugins.after_train(
            job=JobView(self.job_id, spec.method, spec.base_model),
            result={
                "metrics": metrics,
                "model_version_id": output.model_version_id,
                "weights": weights.uri,
                "tokenizer": tokenizer.uri,
            },
        )

        def record(job: Job) -> None:
            job.output = weights
            job.tokenizer = tokenizer
            job.model_version_id = output.model_version_id
            job.final_metrics = metrics

        self.job = self.w.store.update(self.job_id, record)
        # announce first: a crash before the status is stored re-runs from the last
        # checkpoint and re-announces under the same message id (deduplicated)
        await self.w.events.succeeded(self.job, output)

        def done(job: Job) -> None:
            transition(job, JobStatus.SUCCEEDED)

        self.job = self.w.store.update(self.job_id, done)
        self.w.store.add_event(
            self.job_id,
            message=f"succeeded: model version {output.model_version_id}",
            kind="status",
            status=JobStatus.SUCCEEDED,
        )
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def _fail(self, reason: str, message: str) -> None:
        def fail(job: Job) -> None:
            job.error_reason = reason
            job.error_message = message
            transition(job, JobStatus.FAILED, reason)

        from tunewright.core.bus import publish_until_acked  # retries only; no nats use here

        # announced first (until NATS takes it), stored after: a job stored as failed has
        # announced it; one interrupted before is still running here, so its redelivered
        # request runs it again (the fact's message id drops a repeated announcement)
        announced = self.w.store.get(self.job_id)
        fail(announced)
        await publish_until_acked(
            lambda: self.w.events.failed(announced), what=f"training job {self.job_id} {reason}"
        )
        self.job = self.w.store.update(self.job_id, fail)
        self.w.store.add_event(
            self.job_id,
            message=f"failed: {reason}",
            level="error",
            kind="status",
            status=JobStatus.FAILED,
        )
        log.warning("training job failed job_id=%s reason=%s", self.job_id, reason)


def _suffix(ref: ArtifactRef) -> str:
    return ".parquet" if "parquet" in ref.media_type else ".jsonl"


def _plan_doc(attempt: _Attempt) -> dict[str, Any]:
    plan = getattr(attempt, "plan", None)
    return {"plan": dataclasses.asdict(plan)} if plan is not None else {}


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, ArtifactRef):
        return value.uri
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _template_and_eos(tokenizer_dir: Path) -> tuple[str, str]:
    config_file = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    template = config.get("chat_template") or ""
    jinja = tokenizer_dir / "chat_template.jinja"
    if not template and jinja.is_file():
        template = jinja.read_text()
    eos = config.get("eos_token") or ""
    if isinstance(eos, dict):
        eos = eos.get("content", "")
    return str(template), str(eos)
