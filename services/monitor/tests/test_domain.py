"""Monitor domain pieces without a network: windows close on size, on age, and hand a failed
close back to every waiting handler; the family-wise level is split over the detectors that
run; only allow-listed columns leave with a window; the drift policy and its pipeline."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunewright.core.errors import InvalidArgument, Unavailable
from tunewright.core.settings import load_settings
from tunewright.monitor import analysis, policy, traffic
from tunewright.monitor.server import canary_spec
from tunewright.monitor.settings import MonitorSettings, PolicySection
from tunewright.monitor.store import Detection
from tunewright.monitor.windows import WindowBuffer
from tunewright.registry import pipelines


def _item(i: int, model: str = "mv-1") -> traffic.Interaction:
    return traffic.Interaction(f"i{i}", model, f"prompt {i}", f"answer {i}")


async def test_a_window_closes_when_full_and_every_handler_waits_for_it() -> None:
    closed: list[tuple[str, str, list[str]]] = []

    async def close(workspace: str, model: str, items: list[traffic.Interaction]) -> None:
        closed.append((workspace, model, [i.interaction_id for i in items]))

    buffer = WindowBuffer(size=3, max_wait_s=60, close=close, capacity=10)
    first = asyncio.create_task(buffer.add("default", _item(1)))
    other_model = asyncio.create_task(buffer.add("default", _item(9, "mv-2")))
    await asyncio.sleep(0.01)
    assert not first.done()  # not acked before the window is handed over
    await asyncio.gather(
        first,
        buffer.add("default", _item(1)),  # a redelivery joins once
        buffer.add("default", _item(2)),
        buffer.add("default", _item(3)),
    )
    assert closed == [("default", "mv-1", ["i1", "i2", "i3"])]
    assert buffer.open_counts() == {("default", "mv-2"): 1}
    other_model.cancel()


async def test_an_old_window_closes_partly_full_and_a_failed_close_fails_its_handlers() -> None:
    calls = 0

    async def close(workspace: str, model: str, items: list[traffic.Interaction]) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("artifact store down")

    buffer = WindowBuffer(size=100, max_wait_s=0.05, close=close)
    results = await asyncio.gather(
        buffer.add("default", _item(1)), buffer.add("default", _item(2)), return_exceptions=True
    )
    assert calls == 1
    # both messages go back, retryable: a dead letter would keep their raw text for its TTL
    assert all(isinstance(r, Unavailable) for r in results)
    assert all(r.reason == "WINDOW_CLOSE_FAILED" for r in results if isinstance(r, Unavailable))


async def test_with_every_slot_waiting_the_fullest_window_closes_early() -> None:
    closed: list[tuple[str, list[str]]] = []

    async def close(workspace: str, model: str, items: list[traffic.Interaction]) -> None:
        closed.append((model, [i.interaction_id for i in items]))

    # four consumer slots, windows of four, three model versions: no window can fill
    buffer = WindowBuffer(size=4, max_wait_s=60, close=close, capacity=4)
    waiting = [
        asyncio.create_task(buffer.add("default", _item(i, model)))
        for i, model in [(1, "mv-1"), (2, "mv-2"), (3, "mv-2"), (4, "mv-3")]
    ]
    await asyncio.wait_for(asyncio.gather(waiting[1], waiting[2]), timeout=1)
    assert closed == [("mv-2", ["i2", "i3"])]  # the fullest, long before max_wait_s
    assert not waiting[0].done() and not waiting[3].done()
    assert buffer.open_counts() == {("default", "mv-1"): 1, ("default", "mv-3"): 1}
    # the slots it freed take new traffic; the next time all four wait, mv-1 is fullest
    more = [asyncio.create_task(buffer.add("default", _item(i, "mv-1"))) for i in (5, 6)]
    await asyncio.wait_for(asyncio.gather(waiting[0], *more), timeout=1)
    assert closed[-1] == ("mv-1", ["i1", "i5", "i6"])
    waiting[3].cancel()


@dataclass
class _Fixed:
    baseline: str
    p_value: float
    seen: list[float] = field(default_factory=list)

    def detect(self, reference: Any, current: Any, *, alpha: float) -> Any:
        self.seen.append(alpha)
        return type("R", (), {"statistic": 1.0, "p_value": self.p_value, "summary": "s",
                              "evidence": {"n": 1}})()  # fmt: skip


def test_the_family_level_is_split_over_the_detectors_that_run() -> None:
    training, traffic_based = _Fixed("training", 0.007), _Fixed("traffic", 0.2)
    detectors = [
        analysis.NamedDetector("a", training),
        analysis.NamedDetector("b", traffic_based),
    ]
    first = analysis.analyse(
        detectors, training=[{"prompt": "x"}], baseline=None, current=[{}], family_alpha=0.01
    )
    assert [r["detector"] for r in first] == ["a"]  # no baseline window yet
    assert first[0]["alpha"] == 0.01 and first[0]["drifted"]
    later = analysis.analyse(
        detectors, training=[{"prompt": "x"}], baseline=[{}], current=[{}], family_alpha=0.01
    )
    assert [r["alpha"] for r in later] == [0.005, 0.005]
    # p = 0.007 is drift at 0.01 alone, not once two detectors share the level
    assert not analysis.drifted(later, 1)
    assert analysis.drifted(first, 1) and not analysis.drifted(first, 2)


def test_only_allow_listed_columns_leave_with_a_window() -> None:
    item = traffic.Interaction(
        "i1",
        "mv-1",
        "my card is 4111 1111 1111 1111",
        "ok",
        thumbs=-1,
        escalated=True,
        attributes={"category": "billing", "customer_email": "a@b.example"},
    )
    (row,) = [json.loads(line) for line in traffic.window_jsonl([item], ["category"]).splitlines()]
    assert row["category"] == "billing" and "customer_email" not in row
    assert row["thumbs"] == "-1" and row["escalated"] == "true"
    back = traffic.detector_row(row)
    assert back is not None and back["thumbs"] == -1 and back["escalated"] is True
    data, count = traffic.negatives_jsonl([back, {**back, "thumbs": 1, "escalated": False}], 10)
    assert count == 1 and b"customer_email" not in data


def test_synthetic_training_rows_are_not_part_of_the_reference() -> None:
    def row(text: str, category: str, synthetic: str | None) -> dict[str, Any]:
        messages = [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]
        extra = {} if synthetic is None else {"synthetic": synthetic}
        return {"messages": json.dumps(messages), "category": category, **extra}

    rows = [
        row("my invoice is wrong", "billing", None),
        row("I cannot log in", "login", "false"),
        row("generated: refund for a duplicate charge", "refunds", "true"),
    ]
    reference = traffic.reference_rows(rows)
    assert [r["category"] for r in reference] == ["billing", "login"]
    assert not any(r["synthetic"] for r in reference)


def test_the_policy_retrains_once_per_cooldown_and_can_drop_the_approval() -> None:
    retrain = PolicySection(action="retrain", cooldown_s=3600)
    assert policy.decide(PolicySection(), None).action == "alert"
    assert policy.decide(retrain, None).action == "retrain"
    recent = Detection("d1", "default", "mv-1", "w1", [], "retrain", "pipe-1",
                       datetime.now(UTC).isoformat())  # fmt: skip
    decision = policy.decide(retrain, recent)
    assert decision.action == "alert" and "pipe-1" in decision.reason
    old = Detection("d0", "default", "mv-1", "w0", [], "retrain", "pipe-0",
                    (datetime.now(UTC) - timedelta(hours=2)).isoformat())  # fmt: skip
    assert policy.decide(retrain, old).action == "retrain"

    kinds = [s["kind"] for s in yaml.safe_load(policy.pipeline_yaml(retrain))["stages"]]
    assert kinds == ["ingest", "candidates", "feedback", "train", "evaluate", "approve", "promote"]
    unattended = PolicySection(action="retrain", require_approval=False)
    assert "approve" not in [
        s["kind"] for s in yaml.safe_load(policy.pipeline_yaml(unattended))["stages"]
    ]


@pytest.mark.parametrize("require_approval", [True, False])
def test_the_shipped_retraining_pipeline_is_valid_and_gates_on_the_reviewers_pairs(
    require_approval: bool,
) -> None:
    text = policy.pipeline_yaml(PolicySection(action="retrain", require_approval=require_approval))
    params = {  # what Monitor.request_retraining submits
        "negatives": "file:///negatives.jsonl",
        "production_model": "mv-1",
        "model_name": "support",
        "base_model": "tiny:llama-xxs",
        "feedback_backend": "argilla",
        "detection_id": "drift-1",
    }
    spec = pipelines.parse_spec(text, params)  # the registry's own validation
    stages = {s.name: s.config for s in spec.stages}
    # people need time: the feedback stage waits for rankings (a simulated backend does not)
    collect = stages["feedback"]["spec"]["feedback_collection"]
    assert collect["wait_timeout_seconds"] >= 3600 and collect["poll_interval_seconds"] > 0
    assert 0 < collect["min_records"] <= PolicySection().min_negatives
    # some pairs are held out: DPO trains on the train split, the gate scores the eval split
    assert (
        0 < collect["eval_fraction"] < 1
        and round(collect["min_records"] * collect["eval_fraction"]) >= 1
    )
    assert stages["dpo"]["spec"]["datasets"] == [{"id": "${stages.feedback.dataset_version_id}"}]
    # scored on the held-out preference pairs, not on overlap with the thumbs-down answers
    evaluate = stages["evaluate"]["spec"]
    assert evaluate["dataset"] == {"id": "${stages.feedback.dataset_version_id}"}
    assert evaluate["split"] == "eval"
    assert [m["name"] for m in evaluate["metrics"]] == ["preference_accuracy"]
    (rule,) = evaluate["gate"]["rules"]
    assert rule["metric"] == "preference_accuracy" and rule["baseline"] == "production"
    assert rule["ci_excludes_zero"] is True


def test_a_canary_spec_names_the_watched_model() -> None:
    spec = canary_spec(
        {"candidate": {"role": "production", "model": {"id": "${model}"}}, "max_samples": 50},
        "mv-7",
    )
    assert spec.candidate.model.id == "mv-7" and spec.max_samples == 50
    with pytest.raises(InvalidArgument, match=r"canary\.spec"):
        canary_spec({"nonsense": 1}, "mv-7")


def test_the_example_settings_file_loads() -> None:
    path = Path(__file__).resolve().parents[1] / "monitor.example.yaml"
    settings = load_settings(MonitorSettings, path)
    assert settings.monitor.policy.action == "retrain"
    spec = canary_spec(settings.monitor.canary.spec, "mv-1")
    assert spec.candidate.model.id == "mv-1" and spec.gate.rules[0].min_delta == 0.05
