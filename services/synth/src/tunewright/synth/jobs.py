"""Synth job state: a small SQLite file, ``<data_dir>/synth/jobs.sqlite``.

The store itself is :class:`tunewright.core.job_store.JobStore`: a row per ``SynthJob``, job
events with a ``sequence`` per job so a stream resumes with ``after_sequence`` (the same
events go out on NATS, ``tw.synth.job.progressed``), and the cancel flag a worker polls.
"""

from __future__ import annotations

from pathlib import Path

from tunewright.core import job_store
from tunewright.core.job_store import TERMINAL, now_ts
from tunewright.synth.v1 import synth_pb2

__all__ = ["TERMINAL", "JobStore", "now_ts"]


class JobStore(job_store.JobStore[synth_pb2.SynthJob]):
    def __init__(self, path: Path) -> None:
        super().__init__(path, synth_pb2.SynthJob.FromString, kind="synth")
