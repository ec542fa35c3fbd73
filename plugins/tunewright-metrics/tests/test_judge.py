"""LLM-as-judge pairwise win rate with deterministic judges (no real LLM judge runs here):
both orders, ties when they disagree, robust verdict parsing, unparseable replies apart."""

from __future__ import annotations

import pytest
from tunewright_metrics.judge import ANSWER_A, ANSWER_B, REFERENCE, JudgeWinRate, parse_verdict

from tunewright.core.plugins import PluginManager

PROMPTS = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]
REFERENCES = ["the order ships today"] * 6
# candidate better on 0-2, equal on 3, worse on 4-5
CANDIDATE = ["the order ships today"] * 3 + ["ships"] + ["no idea"] * 2
BASELINE = ["no idea"] * 3 + ["ships"] + ["the order ships today"] * 2


def _part(text: str, start: str, end: str) -> str:
    return text.split(start + "\n", 1)[1].split("\n\n" + end, 1)[0]


def overlap_judge(asks: list[list[dict[str, str]]]) -> list[str]:
    """Test judge: prefers the answer sharing more words with the reference; ties on equal."""
    replies = []
    for messages in asks:
        text = messages[-1]["content"]
        ref = set(_part(text, REFERENCE, ANSWER_A).split())
        a = len(ref & set(_part(text, ANSWER_A, ANSWER_B).split()))
        b = len(ref & set(_part(text, ANSWER_B, "Which").split()))
        replies.append("[[A]]" if a > b else "[[B]]" if b > a else "[[TIE]]")
    return replies


def test_win_rate_counts_wins_ties_losses() -> None:
    metric = JudgeWinRate()
    rows = metric.judge(
        prompts=PROMPTS,
        references=REFERENCES,
        candidate=CANDIDATE,
        baseline=BASELINE,
        judge=overlap_judge,
    )
    assert [r[0] for r in rows] == [1, 1, 1, 0, -1, -1]
    assert metric.aggregate(rows) == pytest.approx((3 - 2) / 6)
    assert metric.details(rows) == {
        "wins": 3,
        "ties": 1,
        "losses": 2,
        "position_disagreements": 0,
        "unparseable": 0,
    }


def test_a_judge_that_always_says_a_gives_only_ties() -> None:
    # pure position bias: the swapped order disagrees every time, so nothing is won or lost
    metric = JudgeWinRate()
    rows = metric.judge(
        prompts=PROMPTS,
        references=REFERENCES,
        candidate=CANDIDATE,
        baseline=BASELINE,
        judge=lambda asks: ["[[A]]"] * len(asks),
    )
    assert metric.aggregate(rows) == 0.0
    assert metric.details(rows)["ties"] == 6
    assert metric.details(rows)["position_disagreements"] == 6


def test_unparseable_replies_are_counted_apart() -> None:
    def flaky(asks: list[list[dict[str, str]]]) -> list[str]:
        replies = overlap_judge(asks)
        replies[0] = "I am not sure what you mean."  # sample 0, first order
        return replies

    metric = JudgeWinRate()
    rows = metric.judge(
        prompts=PROMPTS, references=REFERENCES, candidate=CANDIDATE, baseline=BASELINE, judge=flaky
    )
    assert metric.details(rows)["unparseable"] == 1
    assert metric.aggregate(rows) == pytest.approx((2 - 2) / 5)


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("[[A]]", "A"),
        ("After comparing, [[ b ]]", "B"),
        ("Options are [[A]], [[B]] or [[TIE]]. My verdict: [[B]]", "B"),
        ("[[TIE]]", "tie"),
        ("A", "A"),
        ("  b.", "B"),
        ("Tie", "tie"),
        ("Answer B is better because it names the refund.", "B"),
        ("Verdict: A", "A"),
        ("I prefer answer A.", "A"),
        ("Both are equally good.", "tie"),
        ("Answer A is shorter but answer B is right.", None),
        ("I cannot decide.", None),
        ("", None),
    ],
)
def test_parse_verdict(reply: str, verdict: str | None) -> None:
    assert parse_verdict(reply) == verdict


def test_registered_as_a_judge_metric() -> None:
    spec = PluginManager().load().metrics.get("judge_win_rate")
    assert spec.needs == "judge" and spec.higher_is_better
    with pytest.raises(ValueError, match="with_reference"):
        spec.factory(temperature=0)
