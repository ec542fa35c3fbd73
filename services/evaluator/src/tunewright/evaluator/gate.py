"""The promotion gate: a policy (YAML or the API's GatePolicy) applied to paired deltas.

A rule names a metric and a baseline role, a minimum improvement (in the metric's better
direction) and whether the 95% CI of the delta must exclude 0. ``max_regression`` bounds how
much any compared metric without a rule may get worse. The verdict passes only when every rule
passes and nothing regressed beyond the bound; every rule and every regression check leaves
one line of reasons with its numbers.

Example::

    rules:
      - {metric: rouge_l, baseline: base, min_delta: 0.02, ci_excludes_zero: true}
    max_regression: 1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunewright.core.errors import FieldViolation, InvalidArgument
from tunewright.evaluator.comparison import Delta


@dataclass(frozen=True)
class GateRule:
    metric: str
    baseline: str
    min_delta: float = 0.0
    ci_excludes_zero: bool = True


@dataclass(frozen=True)
class GatePolicy:
    rules: tuple[GateRule, ...]
    max_regression: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GatePolicy:
        bad: list[FieldViolation] = []
        for key in sorted(set(data) - {"rules", "max_regression"}):
            bad.append(
                FieldViolation(f"gate.{key}", "unknown key (allowed: rules, max_regression)")
            )
        rules = []
        raw_rules = data.get("rules")
        if not isinstance(raw_rules, list) or not raw_rules:
            bad.append(FieldViolation("gate.rules", "at least one rule is required"))
            raw_rules = []
        for i, raw in enumerate(raw_rules):
            where = f"gate.rules[{i}]"
            if not isinstance(raw, dict):
                bad.append(FieldViolation(where, "must be a mapping"))
                continue
            unknown = set(raw) - {"metric", "baseline", "min_delta", "ci_excludes_zero"}
            bad += [FieldViolation(f"{where}.{k}", "unknown key") for k in sorted(unknown)]
            if not isinstance(raw.get("metric"), str) or not isinstance(raw.get("baseline"), str):
                bad.append(FieldViolation(where, "metric and baseline (a role) are required"))
                continue
            try:
                rules.append(
                    GateRule(
                        metric=raw["metric"],
                        baseline=raw["baseline"],
                        min_delta=float(raw.get("min_delta", 0.0)),
                        ci_excludes_zero=bool(raw.get("ci_excludes_zero", True)),
                    )
                )
            except (TypeError, ValueError):
                bad.append(FieldViolation(f"{where}.min_delta", "must be a number"))
        max_regression = data.get("max_regression")
        if max_regression is not None and not isinstance(max_regression, int | float):
            bad.append(FieldViolation("gate.max_regression", "must be a number"))
            max_regression = None
        if bad:
            raise InvalidArgument(
                "invalid gate policy", reason="GATE_POLICY_INVALID", field_violations=bad
            )
        return cls(tuple(rules), None if max_regression is None else float(max_regression))


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)


def _fmt(value: float) -> str:
    return f"{value:+.4f}"


def decide(policy: GatePolicy, deltas: Sequence[Delta]) -> Verdict:
    by_key = {(d.metric, d.baseline): d for d in deltas}
    reasons: list[str] = []
    passed = True
    ruled = set()
    for rule in policy.rules:
        ruled.add((rule.metric, rule.baseline))
        delta = by_key.get((rule.metric, rule.baseline))
        if delta is None:
            passed = False
            reasons.append(f"FAIL {rule.metric} vs {rule.baseline}: not measured")
            continue
        low, high = delta.improvement_ci
        ok_size = delta.improvement >= rule.min_delta
        ok_ci = low > 0 if rule.ci_excludes_zero else True
        verdict = "PASS" if ok_size and ok_ci else "FAIL"
        why = []
        if not ok_size:
            why.append(f"improvement below the minimum {_fmt(rule.min_delta)}")
        if not ok_ci:
            why.append("95% CI includes 0")
        reasons.append(
            f"{verdict} {rule.metric} vs {rule.baseline}: {_fmt(delta.improvement)} "
            f"(95% CI {_fmt(low)}..{_fmt(high)}), min {_fmt(rule.min_delta)}"
            + (f": {'; '.join(why)}" if why else "")
        )
        passed = passed and ok_size and ok_ci
    if policy.max_regression is not None:
        for delta in deltas:
            if (delta.metric, delta.baseline) in ruled:
                continue
            if delta.improvement < -policy.max_regression:
                passed = False
                reasons.append(
                    f"FAIL {delta.metric} vs {delta.baseline}: regressed {_fmt(delta.improvement)}, "
                    f"more than the allowed {policy.max_regression:g}"
                )
    return Verdict(passed, reasons)
