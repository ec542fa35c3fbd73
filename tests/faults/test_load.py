"""100 concurrent pipeline submissions on the real stack (`tunewright up`), plus 20 of them
sent again with the same request id while the first ones are in flight (a client retrying).

Every run must end succeeded; the retries must not make runs of their own (100 runs, not
120); the 100 curations of the same content must leave one dataset version (its id is the
content's hash), each run's row counts must add up, and the planted e-mails reach no log and
no event.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from faultstack import CURATE_ONLY, FINAL, FaultStack, planted_email, stage, write_tickets

from tunewright.common.v1 import common_pb2
from tunewright.registry.v1 import registry_pb2

SUBMISSIONS, RETRIED = 100, 20
ROWS, DUPLICATES, BAD_LINES = 30, 5, 3


@pytest.fixture
def stack(tmp_path: Path, stack_cli: Any) -> Iterator[FaultStack]:
    fault_stack = FaultStack(tmp_path, stack_cli)
    fault_stack.write_config()
    yield fault_stack
    fault_stack.down()


@pytest.mark.timeout(1200)
def test_100_concurrent_pipeline_submissions(stack: FaultStack, figures: Any) -> None:
    stack.up()
    rows_in = write_tickets(
        stack.root / "t.jsonl", ROWS, duplicates=DUPLICATES, bad_lines=BAD_LINES
    )
    source = stack.upload(stack.root / "t.jsonl")
    parameters = {"source": source, "dataset": "load-tickets"}

    def submit(i: int) -> str:
        return stack.submit(CURATE_ONLY, parameters, request_id=f"load-{i:03d}")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=25) as pool:
        first = list(pool.map(submit, range(SUBMISSIONS)))
        again = list(pool.map(submit, range(RETRIED)))
    submitted_s = time.monotonic() - started
    assert len(set(first)) == SUBMISSIONS, "two submissions got the same run"
    assert again == first[:RETRIED], "a retried submission made a run of its own"

    pending = set(first)
    runs: dict[str, Any] = {}
    deadline = time.monotonic() + 1000
    while pending and time.monotonic() < deadline:
        for run_id in list(pending):
            run = stack.get_run(run_id)
            if run is not None and run.status in FINAL:
                runs[run_id] = run
                pending.discard(run_id)
        time.sleep(1)
    elapsed = time.monotonic() - started
    assert not pending, f"{len(pending)} of {SUBMISSIONS} runs did not end in time"
    failed = {i: r.error.message for i, r in runs.items()
              if r.status != common_pb2.JOB_STATUS_SUCCEEDED}  # fmt: skip
    assert not failed, f"{len(failed)} runs failed, e.g. {list(failed.values())[:3]}"

    dataset_ids = {stage(r, "curate").outputs["dataset_version_id"] for r in runs.values()}
    client = stack.registry()
    try:
        listed = client._stub.ListPipelineRuns(
            registry_pb2.ListPipelineRunsRequest(
                page=common_pb2.PageRequest(page_size=SUBMISSIONS + RETRIED + 10)
            ),
            metadata=client._metadata,
        ).runs
        versions = client._stub.ListDatasetVersions(
            registry_pb2.ListDatasetVersionsRequest(dataset="load-tickets"),
            metadata=client._metadata,
        ).dataset_versions
        counts = client.dataset_version(next(iter(dataset_ids))).counts
    finally:
        client.close()
    assert len(listed) == SUBMISSIONS, f"{len(listed)} runs listed"
    assert len(dataset_ids) == 1 and len(versions) == 1, (dataset_ids, [v.id for v in versions])
    accounted = counts.accepted + counts.quarantined + counts.duplicates + counts.filtered
    assert counts.total == rows_in == accounted, counts
    leaked = stack.leaked([planted_email(i) for i in range(ROWS)])
    assert leaked == [], f"{len(leaked)} planted e-mails in logs or events, e.g. {leaked[:3]}"
    print(f"\n{SUBMISSIONS} runs (+{RETRIED} retries) submitted in {submitted_s:.1f} s, "
          f"all ended in {elapsed:.0f} s")  # fmt: skip
    figures.record(
        f"{SUBMISSIONS} concurrent submissions (+{RETRIED} retried)",
        "load",
        injected=SUBMISSIONS + RETRIED,
        survived=SUBMISSIONS + RETRIED,
        rows_in=rows_in * SUBMISSIONS,
        rows_accounted=int(accounted) * SUBMISSIONS,
        duplicates=0,
        outcome=f"{SUBMISSIONS} runs succeeded in {elapsed:.0f} s; retries deduplicated; "
        "one dataset version",
    )
