"""Live progress of a pipeline's jobs for ``tunewright run``: reads the progress events the
services publish (``TW_PROGRESS``) and turns those of the run's jobs into progress bars.

It runs its own event loop in a background thread, so the command's gRPC event stream stays a
plain loop. Progress is a nicety: if NATS cannot be reached the run is still followed, and
the command says so once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from nats.js.api import DeliverPolicy
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from tunewright.core import catalog, subjects
from tunewright.core.bus import EventBus
from tunewright.core.settings import NatsSettings
from tunewright.events.v1 import events_pb2

# what each progress event says about a job: (job id, step, total, description)
Reading = tuple[str, float, float, str]


def read(subject: str, data: bytes) -> Reading | None:
    if subject == subjects.TRAINER_JOB_PROGRESSED:
        p = events_pb2.TrainerJobProgressed.FromString(data)
        text = f"step {p.progress.step}/{p.progress.total_steps} loss {p.progress.loss:.4f}"
        if p.progress.tokens_per_second:
            text += f" {p.progress.tokens_per_second:,.0f} tok/s"
        return p.job_id, p.progress.step, p.progress.total_steps, text
    parsers: dict[str, Callable[[bytes], object]] = {
        subjects.INGEST_JOB_PROGRESSED: events_pb2.IngestJobProgressed.FromString,
        subjects.SYNTH_JOB_PROGRESSED: events_pb2.SynthJobProgressed.FromString,
        subjects.EVALUATOR_RUN_PROGRESSED: events_pb2.EvaluatorRunProgressed.FromString,
    }
    parse = parsers.get(subject)
    if parse is None:
        return None
    message = parse(data)
    job_id = getattr(message, "job_id", "") or getattr(message, "run_id", "")
    event = message.event  # type: ignore[attr-defined]
    step = event.metrics.get("step", 0.0)
    total = event.metrics.get("total_steps", 0.0)
    return job_id, step, total, event.message


class ProgressFollower:
    """Progress bars for the jobs in ``jobs`` (job id -> stage name) while the run is followed."""

    def __init__(self, nats: NatsSettings, progress: Progress) -> None:
        self.nats = nats
        self.progress = progress
        self.jobs: dict[str, str] = {}
        self._tasks: dict[str, TaskID] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tw-progress", daemon=True)
        self.problem: str | None = None

    @staticmethod
    def bars() -> Progress:
        return Progress(
            TextColumn("[bold]{task.fields[stage]}[/bold]"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeRemainingColumn(),
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def on_reading(self, reading: Reading) -> None:
        job_id, step, total, text = reading
        stage = self.jobs.get(job_id)
        if stage is None:
            return  # another run's job
        task = self._tasks.get(job_id)
        if task is None:
            task = self.progress.add_task(text, total=total or None, stage=stage)
            self._tasks[job_id] = task
        self.progress.update(task, completed=step, total=total or None, description=text)

    def _run(self) -> None:
        try:
            asyncio.run(self._listen())
        except Exception as exc:  # progress is optional: report once, keep following the run
            self.problem = f"{type(exc).__name__}"

    async def _listen(self) -> None:
        bus = await EventBus.from_settings(self.nats, name="tunewright-cli", wait_for_server_s=2)
        try:

            async def on_message(msg: object) -> None:
                reading = read(msg.subject, msg.data)  # type: ignore[attr-defined]
                if reading is not None:
                    self.on_reading(reading)

            # a read-only ordered consumer from now on: progress of jobs starting after submit
            for subject in catalog.PROGRESS_SUBJECTS:
                await bus.js.subscribe(
                    subject, cb=on_message, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
                )
            await asyncio.to_thread(self._stop.wait)  # set by stop() from the main thread
        finally:
            await bus.close()
