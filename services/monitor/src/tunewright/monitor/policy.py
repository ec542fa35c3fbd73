"""The drift policy: what a detection does (alert only, or start the retraining pipeline) and
the pipeline it starts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from tunewright.monitor.settings import PolicySection
from tunewright.monitor.store import Detection

# shipped beside this module (tunewright.monitor is a namespace shared with the stubs)
RETRAIN_PIPELINE = Path(__file__).with_name("retrain.yaml")


@dataclass(frozen=True)
class Decision:
    action: str  # alert | retrain
    reason: str


def decide(policy: PolicySection, last_retraining: Detection | None) -> Decision:
    if policy.action == "alert":
        return Decision("alert", "policy: alert only")
    if last_retraining is not None and policy.cooldown_s > 0:
        last = datetime.fromisoformat(last_retraining.created_at)
        age = (datetime.now(UTC) - last).total_seconds()
        if age < policy.cooldown_s:
            return Decision(
                "alert",
                f"retraining {last_retraining.pipeline_run_id} was requested {age:.0f} s ago "
                f"(cooldown {policy.cooldown_s:.0f} s)",
            )
    return Decision("retrain", "policy: retrain")


def pipeline_yaml(policy: PolicySection) -> str:
    """The retraining pipeline YAML (without the approve stage unless approval is required)."""
    if policy.pipeline_file is not None:
        text = Path(policy.pipeline_file).read_text()
    else:
        text = RETRAIN_PIPELINE.read_text()
    if policy.require_approval:
        return text
    spec = yaml.safe_load(text)
    spec["stages"] = [s for s in spec.get("stages", []) if s.get("kind") != "approve"]
    return yaml.safe_dump(spec, sort_keys=False)
