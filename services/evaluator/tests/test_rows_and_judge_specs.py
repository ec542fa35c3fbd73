"""Bootstrap CIs for row metrics (model and judge metrics) against a direct numpy computation,
preference rows as samples, judge spec validation, and side-by-side samples in the Markdown."""

from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf import struct_pb2

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import InvalidArgument
from tunewright.core.plugins import PluginManager, Registries
from tunewright.core.settings import OutboundSettings
from tunewright.evaluator.comparison import Metric, judged_delta, paired_delta_rows, score_rows
from tunewright.evaluator.gate import Verdict
from tunewright.evaluator.report import Report, Sample, markdown
from tunewright.evaluator.runner import EvalSample, _judge_params, samples_from, validate
from tunewright.evaluator.v1 import evaluator_pb2


class CorpusPerplexity:
    """Rows [nll, tokens]; like the trl plugin's perplexity, without needing torch here."""

    def aggregate(self, rows):  # type: ignore[no-untyped-def]
        return math.exp(sum(r[0] for r in rows) / sum(r[1] for r in rows))


rng = np.random.default_rng(3)
CAND = [
    [float(x), float(t)]
    for x, t in zip(rng.uniform(5, 10, 40), rng.integers(5, 15, 40), strict=True)
]
BASE = [[r[0] + float(d), r[1]] for r, d in zip(CAND, rng.uniform(1, 4, 40), strict=True)]


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def test_row_metrics_bootstrap_like_numpy() -> None:
    metric = Metric("perplexity", CorpusPerplexity(), higher_is_better=False, needs="model")
    idx = np.random.default_rng(0).integers(0, 40, size=(300, 40))
    cand, base = np.array(CAND), np.array(BASE)

    def ppl(table: np.ndarray) -> np.ndarray:
        return np.exp(table[idx, 0].sum(axis=1) / table[idx, 1].sum(axis=1))

    value = score_rows(metric, "candidate", CAND, samples=300, seed=0)
    assert value.value == pytest.approx(math.exp(cand[:, 0].sum() / cand[:, 1].sum()))
    assert (value.ci_low, value.ci_high) == pytest.approx(_percentiles(ppl(cand)))

    delta = paired_delta_rows(metric, "base", CAND, BASE, samples=300, seed=0)
    assert (delta.ci_low, delta.ci_high) == pytest.approx(_percentiles(ppl(cand) - ppl(base)))
    assert delta.delta < 0 and delta.improvement > 0 and delta.improvement_ci[0] > 0


def test_judged_delta_is_the_net_win_rate() -> None:
    from tunewright_metrics.judge import JudgeWinRate

    rows = [[1.0, 1.0, 0.0]] * 6 + [[0.0, 1.0, 1.0]] * 2 + [[-1.0, 1.0, 0.0]] * 2 + [[0, 0, 0]]
    metric = Metric("judge_win_rate", JudgeWinRate(), higher_is_better=True, needs="judge")
    delta = judged_delta(metric, "base", rows, samples=300, seed=0)
    assert delta.delta == pytest.approx((6 - 2) / 10)
    assert delta.candidate_value == pytest.approx(0.7) and delta.baseline_value == pytest.approx(
        0.3
    )
    assert delta.ci_low <= delta.delta <= delta.ci_high
    # the values are win rates with ties counted half: (wins + ties / 2) / judged
    counts = JudgeWinRate().details(rows)
    judged = counts["wins"] + counts["ties"] + counts["losses"]
    assert delta.candidate_value == pytest.approx((counts["wins"] + counts["ties"] / 2) / judged)
    assert delta.baseline_value == pytest.approx((counts["losses"] + counts["ties"] / 2) / judged)


def test_preference_rows_become_samples_with_their_rejected_answer() -> None:
    rows = [
        {"prompt": "my order is late", "chosen": "it ships today", "rejected": "no"},
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "assistant", "content": "go away"}],
        },
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    ]
    assert samples_from(rows) == [
        EvalSample([{"role": "user", "content": "my order is late"}], "it ships today", "no"),
        EvalSample([{"role": "user", "content": "hi"}], "hello", "go away"),
        EvalSample([{"role": "user", "content": "q"}], "a", None),
    ]


@pytest.fixture(scope="module")
def plugins() -> Registries:
    return PluginManager().load()


def _spec(judge: common_pb2.PluginRef | None) -> evaluator_pb2.EvaluationSpec:
    return evaluator_pb2.EvaluationSpec(
        candidate=evaluator_pb2.EvaluatedModel(model=common_pb2.ModelVersionRef(id="mv-1")),
        baselines=[evaluator_pb2.EvaluatedModel(role="base", base_model="tiny:llama-xxs")],
        dataset=common_pb2.DatasetVersionRef(id="dv-1"),
        metrics=[common_pb2.PluginRef(name="judge_win_rate")],
        gate=evaluator_pb2.GatePolicy(
            rules=[evaluator_pb2.GateRule(metric="judge_win_rate", baseline="base")]
        ),
        judge=judge,
    )


@pytest.mark.parametrize(
    ("judge", "problem"),
    [
        (None, "a judge metric needs a judge generator"),
        (common_pb2.PluginRef(name="gpt-judge"), "unknown generator; registered:"),
        (common_pb2.PluginRef(name="local"), "the local judge runs a registered model version"),
    ],
)
def test_a_judge_metric_needs_a_usable_judge(
    plugins: Registries, judge: common_pb2.PluginRef | None, problem: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate(_spec(judge), plugins)
    assert any(problem in v.description for v in refused.value.field_violations)


def test_bad_metric_params_fail_the_submission(plugins: Registries) -> None:
    spec = _spec(common_pb2.PluginRef(name="local"))
    params = struct_pb2.Struct()
    params.update({"beta": -1})
    spec.metrics.add(name="preference_accuracy", params=params)
    with pytest.raises(InvalidArgument) as refused:
        validate(spec, plugins)
    assert any(
        v.field == "spec.metrics[1].params" and "beta must be > 0" in v.description
        for v in refused.value.field_violations
    )


def test_a_local_judge_with_a_model_version_is_valid(plugins: Registries) -> None:
    params = struct_pb2.Struct()
    params.update({"model": "judge", "alias": "production"})
    validate(_spec(common_pb2.PluginRef(name="local", params=params)), plugins)


def _judge(name: str, params: dict[str, object]) -> common_pb2.PluginRef:
    struct = struct_pb2.Struct()
    struct.update(params)
    return common_pb2.PluginRef(name=name, params=struct)


def test_an_endpoint_judge_keeps_its_model_param() -> None:
    # the endpoint's `model` is the name it serves, not a registered model version
    endpoint = {"base_url": "http://vllm:8000/v1", "model": "Qwen/Qwen2.5-72B-Instruct"}
    model, params = _judge_params(_judge("openai-compatible", {**endpoint, "max_new_tokens": 32}))
    assert model == {} and params == endpoint
    model, params = _judge_params(
        _judge("local", {"model": "judge", "alias": "production", "max_new_tokens": 32})
    )
    assert model == {"model": "judge", "alias": "production"} and params == {}


def test_an_endpoint_judge_is_checked_by_its_generator(plugins: Registries) -> None:
    good = {"base_url": "http://vllm:8000/v1", "model": "Qwen/Qwen2.5-72B-Instruct"}
    allowed = OutboundSettings(allowed_urls=["http://vllm:8000/v1"])
    validate(_spec(_judge("openai-compatible", {**good, "max_new_tokens": 32})), plugins, allowed)
    with pytest.raises(InvalidArgument) as refused:
        validate(_spec(_judge("openai-compatible", {"base_url": good["base_url"]})), plugins)
    assert [(v.field, v.description) for v in refused.value.field_violations] == [
        ("spec.judge.params", "openai-compatible generator needs model")
    ]
    # the default policy allows this host only: the endpoint is refused at submit time
    with pytest.raises(InvalidArgument) as refused:
        validate(_spec(_judge("openai-compatible", good)), plugins)
    ((field, description),) = [(v.field, v.description) for v in refused.value.field_violations]
    assert field == "spec.judge.params" and "outbound.allowed_urls" in description


def test_markdown_shows_samples_side_by_side_and_counts() -> None:
    report = Report(
        run_id="eval-1",
        candidate="mv-1",
        values=[],
        deltas=[],
        verdict=Verdict(True, ["PASS"]),
        samples=[Sample("question | one", "ref\nanswer", {"base": "b", "candidate": "c"})],
        details={"judge_win_rate/base": {"wins": 3.0, "unparseable": 1.0}},
    )
    text = markdown(report)
    assert "| # | prompt | reference | candidate | base |" in text
    assert "| 1 | question \\| one | ref<br>answer | c | b |" in text
    assert "| judge_win_rate/base | wins 3, unparseable 1 |" in text
