"""kill -9 of every service mid-job, and nats-server killed mid-pipeline, on the real stack
(`tunewright up`: nats-server and seven service processes, default credentials on).

One pipeline that every service takes part in (curate → SFT → candidates → simulated ranking →
DPO → evaluation, tiny local model) runs while the suite kills, each at a moment its service
is working: ingest during curation, the trainer during SFT (its training worker dies with
it), synth while it generates candidates, the registry while the trainer trains again, the monitor while traffic is being logged to it, the evaluator during evaluation.
`tunewright up` brings back what died, as an operator's supervisor would. Each case asserts
that the pipeline ends (succeeded, or failed with a stated reason), that nothing is
duplicated (one dataset version, two model versions, one evaluation, every interaction
counted once), that every row is accounted for, and that the planted customer e-mails reach
no log and no event.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from faultstack import PIPELINE, FaultStack, outcome_of, planted_email, stage, write_tickets

from tunewright.common.v1 import common_pb2
from tunewright.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from tunewright.registry.v1 import registry_pb2

ROWS, DUPLICATES, BAD_LINES = 1200, 60, 15
INTERACTIONS = 200  # one full monitor window (window.size)

# (service, the stage during which it dies, seconds after the stage was first seen running)
KILLS = (
    ("ingest", "curate", 2.0),
    ("trainer", "sft", 3.0),
    ("synth", "candidates", 1.0),
    ("registry", "sft", 6.0),  # after the trainer's restart, while it trains again
    ("monitor", "dpo", 0.0),
    ("evaluator", "evaluate", 1.0),
)


@pytest.fixture
def stack(tmp_path: Path, stack_cli: Any) -> Any:
    fault_stack = FaultStack(tmp_path, stack_cli)
    fault_stack.write_config()
    yield fault_stack
    fault_stack.down()


class Traffic:
    """Interactions logged to the monitor in batches, a kill in the middle: a batch that
    fails is sent again once the monitor is back (the same ids: stored once)."""

    def __init__(self, stack: FaultStack, model_version_id: str) -> None:
        self.stack = stack
        self.model_version_id = model_version_id
        self.retried = 0

    def batches(self) -> list[list[monitor_pb2.Interaction]]:
        items = [
            monitor_pb2.Interaction(
                interaction_id=f"faults-{i:04d}",
                model_version_id=self.model_version_id,
                prompt=f"ticket {i}: AcmeCRM export fails, mail {planted_email(10_000 + i)}",
                response="Re-run the export.",
            )
            for i in range(INTERACTIONS)
        ]
        return [items[i : i + 20] for i in range(0, len(items), 20)]

    def send(self, batch: list[monitor_pb2.Interaction]) -> None:
        deadline = time.monotonic() + 120
        while True:
            channel, metadata = self.stack.channel("monitor")
            try:
                monitor_pb2_grpc.MonitorServiceStub(channel).LogInteractions(
                    monitor_pb2.LogInteractionsRequest(interactions=batch),
                    metadata=metadata,
                    timeout=10,
                )
                return
            except grpc.RpcError:
                self.retried += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
            finally:
                channel.close()

    def run_with_kill(self) -> None:
        for i, batch in enumerate(self.batches()):
            if i == 5:
                self.stack.kill("monitor")
                self.stack.up()
            self.send(batch)

    def counted(self) -> int:
        channel, metadata = self.stack.channel("monitor")
        try:
            report = monitor_pb2_grpc.MonitorServiceStub(channel).GetDriftReport(
                monitor_pb2.GetDriftReportRequest(model_version_id=self.model_version_id),
                metadata=metadata,
                timeout=10,
            )
        finally:
            channel.close()
        return sum(w.interactions for w in report.windows)


@pytest.mark.timeout(1200)
def test_kill_9_of_each_service_mid_pipeline(stack: FaultStack, figures: Any) -> None:
    stack.up()
    rows_in = write_tickets(
        stack.root / "tickets.jsonl", ROWS, duplicates=DUPLICATES, bad_lines=BAD_LINES
    )
    source = stack.upload(stack.root / "tickets.jsonl")
    run_id = stack.submit(PIPELINE, {"source": source}, request_id="faults-kill-1")

    seen_running: dict[str, float] = {}
    killed: dict[str, str] = {}  # service -> what it was doing
    traffic: list[Traffic] = []

    def on_poll(run: registry_pb2.PipelineRun | None) -> None:
        if run is None:
            return
        now = time.monotonic()
        for service, stage_name, delay in KILLS:
            state = stage(run, stage_name)
            if service in killed or state.status != common_pb2.JOB_STATUS_RUNNING:
                continue
            first = seen_running.setdefault(stage_name, now)
            if now - first < delay:
                continue
            if service == "monitor":
                sft = stage(run, "sft").outputs["model_version_id"]
                traffic.append(Traffic(stack, sft))
                traffic[0].run_with_kill()
            else:
                stack.kill(service)
                stack.up()
            killed[service] = f"{stage_name} (job {state.job_id or 'not yet started'})"

    run = stack.follow(run_id, timeout_s=1000, on_poll=on_poll)
    outcome = outcome_of(run)
    print(f"\nrun {run_id}: {outcome}; killed: {killed}")
    assert run.status == common_pb2.JOB_STATUS_SUCCEEDED, outcome

    # nothing duplicated: one dataset version, two model versions, one evaluation
    client = stack.registry()
    try:
        dataset_id = stage(run, "curate").outputs["dataset_version_id"]
        dataset = client.dataset_version(dataset_id)
        stub, md = client._stub, client._metadata
        versions = stub.ListDatasetVersions(
            registry_pb2.ListDatasetVersionsRequest(dataset="fault-tickets"), metadata=md
        ).dataset_versions
        models = stub.ListModelVersions(
            registry_pb2.ListModelVersionsRequest(model="fault-model"), metadata=md
        ).model_versions
        dpo = stage(run, "dpo").outputs["model_version_id"]
        evaluations = stub.ListEvaluations(
            registry_pb2.ListEvaluationsRequest(candidate_model_version_id=dpo), metadata=md
        ).evaluations
    finally:
        client.close()
    counts = dataset.counts
    accounted = counts.accepted + counts.quarantined + counts.duplicates + counts.filtered
    assert counts.total == rows_in and accounted == rows_in, counts
    assert counts.duplicates >= DUPLICATES and counts.quarantined >= BAD_LINES, counts
    assert len(versions) == 1, [v.id for v in versions]
    assert sorted(m.method for m in models) == ["dpo", "sft"], [m.id for m in models]
    assert len(evaluations) == 1, [e.id for e in evaluations]

    # every interaction counted once, none lost to the monitor's death
    assert traffic, "the monitor was never killed"
    deadline = time.monotonic() + 60
    while traffic[0].counted() < INTERACTIONS and time.monotonic() < deadline:
        time.sleep(1)
    assert traffic[0].counted() == INTERACTIONS

    leaked = stack.leaked(
        [planted_email(i) for i in range(ROWS)]
        + [planted_email(10_000 + i) for i in range(INTERACTIONS)]
    )
    assert leaked == [], f"{len(leaked)} planted e-mails in logs or events, e.g. {leaked[:3]}"

    assert set(killed) == {k[0] for k in KILLS}, killed
    for service, during in killed.items():
        figures.record(
            f"kill -9 {service}",
            "fault",
            injected=1,
            survived=1,
            rows_in=rows_in if service == "ingest" else None,
            rows_accounted=accounted if service == "ingest" else None,
            duplicates=0,
            outcome=f"during {during}; pipeline {outcome}",
        )
    figures.record(
        "kill -9 monitor: traffic",
        "fault",
        injected=1,
        survived=1,
        rows_in=INTERACTIONS,
        rows_accounted=traffic[0].counted(),
        duplicates=0,
        outcome=f"killed with {INTERACTIONS // 2} logged and unanalysed; all counted once "
        f"({traffic[0].retried} sends retried with the same ids)",
    )
