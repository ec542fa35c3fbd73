"""Outages of what the stack depends on, mid-pipeline, on the real stack (`tunewright up`):

- nats-server killed with SIGKILL while the trainer trains, brought back by `up` on the same
  port and store: every client reconnects, the pipeline finishes;
- the registry's database — a private PostgreSQL this test starts with ``initdb``/``pg_ctl``
  (never the machine's shared server) — stopped for 3 minutes (``pg_ctl stop -m immediate``)
  while the trainer trains: the trainer's result fact waits (retried with capped backoff, no
  limit) and is recorded once the database is back; the pipeline finishes.

Each asserts the pipeline succeeded, one dataset version and one model version (nothing
duplicated), every row accounted for, and no planted e-mail in logs or events.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultstack import FaultStack, outcome_of, planted_email, stage, write_tickets

from tunewright.common.v1 import common_pb2
from tunewright.registry.v1 import registry_pb2

ROWS, DUPLICATES, BAD_LINES = 400, 20, 5
OUTAGE_S = 180.0

CURATE_AND_TRAIN = """
name: outage
stages:
  - name: curate
    kind: ingest
    deadline_seconds: 900
    spec:
      dataset: outage-tickets
      source: {uri: "${params.source}"}
      split: {eval_fraction: 0.1, seed: 3}
  - name: sft
    kind: train
    deadline_seconds: 900
    spec:
      method: sft
      base_model: tiny:llama-xxs
      output_model: outage-model
      datasets: [{id: "${stages.curate.dataset_version_id}"}]
      peft: {type: PEFT_TYPE_LORA, r: 4, alpha: 8}
      hyperparameters: {max_steps: STEPS, batch_size: 4, max_length: 64, learning_rate: 0.002}
      seed: 11
      resources: {device: cpu}
"""


def _start(stack: FaultStack, *, steps: int) -> tuple[int, str]:
    """Up, upload the tickets, submit the pipeline: (rows written, run id)."""
    stack.write_config()
    stack.up()
    rows_in = write_tickets(
        stack.root / "t.jsonl", ROWS, duplicates=DUPLICATES, bad_lines=BAD_LINES
    )
    source = stack.upload(stack.root / "t.jsonl")
    return rows_in, stack.submit(CURATE_AND_TRAIN.replace("STEPS", str(steps)), {"source": source})


def _check_outcome(stack: FaultStack, run: Any, rows_in: int) -> int:
    """Assert what every outage case promises; returns the rows accounted for."""
    assert run.status == common_pb2.JOB_STATUS_SUCCEEDED, outcome_of(run)
    client = stack.registry()
    try:
        dataset = client.dataset_version(stage(run, "curate").outputs["dataset_version_id"])
        md = client._metadata
        versions = client._stub.ListDatasetVersions(
            registry_pb2.ListDatasetVersionsRequest(dataset="outage-tickets"), metadata=md
        ).dataset_versions
        models = client._stub.ListModelVersions(
            registry_pb2.ListModelVersionsRequest(model="outage-model"), metadata=md
        ).model_versions
    finally:
        client.close()
    c = dataset.counts
    accounted = c.accepted + c.quarantined + c.duplicates + c.filtered
    assert c.total == rows_in == accounted, c
    assert len(versions) == 1 and len(models) == 1, ([v.id for v in versions], len(models))
    leaked = stack.leaked([planted_email(i) for i in range(ROWS)])
    assert leaked == [], f"{len(leaked)} planted e-mails in logs or events, e.g. {leaked[:3]}"
    return int(accounted)


def _when_training(stack: FaultStack, run: Any, after_s: float, since: dict[str, float]) -> bool:
    """True once the sft stage has been running for ``after_s``."""
    if run is None or stage(run, "sft").status != common_pb2.JOB_STATUS_RUNNING:
        return False
    first = since.setdefault("sft", time.monotonic())
    return time.monotonic() - first >= after_s


@pytest.fixture
def stack(tmp_path: Path, stack_cli: Any) -> Iterator[FaultStack]:
    fault_stack = FaultStack(tmp_path, stack_cli)
    yield fault_stack
    fault_stack.down()


@pytest.mark.timeout(900)
def test_nats_killed_mid_pipeline(stack: FaultStack, figures: Any) -> None:
    rows_in, run_id = _start(stack, steps=80)
    since: dict[str, float] = {}
    done: list[int] = []

    def on_poll(run: Any) -> None:
        if not done and _when_training(stack, run, 3.0, since):
            done.append(stack.kill("nats"))
            time.sleep(2)  # the services see it gone and start reconnecting
            stack.up()  # brings back nats-server on its port, with its store

    run = stack.follow(run_id, timeout_s=800, on_poll=on_poll)
    assert done, f"the pipeline ended before nats-server could be killed: {outcome_of(run)}"
    accounted = _check_outcome(stack, run, rows_in)
    figures.record(
        "kill -9 nats-server",
        "fault",
        injected=1,
        survived=1,
        rows_in=rows_in,
        rows_accounted=accounted,
        duplicates=0,
        outcome=f"during sft; restarted on its port and store; pipeline {outcome_of(run)}",
    )


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    on_path = shutil.which(name)
    if on_path is None:
        _unavailable(f"PostgreSQL's {name} is not installed")
    assert on_path is not None
    return on_path


def _unavailable(why: str) -> None:
    """Skip on a machine without PostgreSQL; fail where it is required (CI)."""
    if os.environ.get("TUNEWRIGHT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{why}, and TUNEWRIGHT_REQUIRE_POSTGRES=1")
    pytest.skip(why)


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own (initdb in tmp, its own port and socket dir);
    run as the ``postgres`` user when the test runs as root (initdb refuses root)."""

    def __init__(self, port: int) -> None:
        # outside pytest's tmp folders, which pytest makes 0700 (and prunes) at each session
        # start: the postgres user must reach this folder for as long as the test runs
        root = Path(tempfile.mkdtemp(prefix="tw-faults-pg-"))
        root.chmod(0o755)
        self.root = root
        self.dir = root / "pg"
        self.socket_dir = root / "pg-socket"
        self.port = port
        self.log = root / "pg.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                _unavailable("running as root without runuser: initdb refuses root")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        result = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{cmd[0]}: {result.stdout}\n{result.stderr}"

    def init(self) -> None:
        for path in (self.dir, self.socket_dir):
            path.mkdir(mode=0o700)
            if self._as:
                shutil.chown(path, "postgres", "postgres")
        self.log.touch()
        if self._as:
            shutil.chown(self.log, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "tw", "--no-sync")
        self.start()
        self._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "tw",
                  "tunewright")  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir), "-l", str(self.log), "-o", options,
                  "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(AssertionError):  # stopped already
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://tw@127.0.0.1:{self.port}/tunewright"


@pytest.mark.timeout(1200)
def test_registry_database_down_for_3_minutes_mid_pipeline(
    stack: FaultStack, stack_cli: Any, figures: Any
) -> None:
    pg = PrivatePostgres(stack_cli.free_ports(1)[0])
    pg.init()
    try:
        stack.env = {"TW_REGISTRY__DATABASE_URL": pg.url}
        rows_in, run_id = _start(stack, steps=40)
        since: dict[str, float] = {}
        outage: list[float] = []

        def on_poll(run: Any) -> None:
            if not outage and _when_training(stack, run, 2.0, since):
                pg.stop()
                began = time.monotonic()
                # the trainer finishes and publishes while the registry cannot write
                time.sleep(OUTAGE_S)
                pg.start()
                outage.append(time.monotonic() - began)

        run = stack.follow(run_id, timeout_s=1000, on_poll=on_poll)
        assert outage, f"the pipeline ended before the database went down: {outcome_of(run)}"
        accounted = _check_outcome(stack, run, rows_in)
        registry_log = (stack.data_dir / "logs" / "registry.log").read_text()
        figures.record(
            f"registry PostgreSQL down {outage[0]:.0f} s",
            "fault",
            injected=1,
            survived=1,
            rows_in=rows_in,
            rows_accounted=accounted,
            duplicates=0,
            outcome=f"during sft; {registry_log.count('retry')} retries logged; "
            f"pipeline {outcome_of(run)}",
        )
    finally:
        stack.down()
        pg.remove()
