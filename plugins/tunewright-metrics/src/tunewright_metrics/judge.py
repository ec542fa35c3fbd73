"""LLM-as-judge pairwise win rate (``judge_win_rate``, registered with ``needs="judge"``).

A judge model (any generator plugin, chosen in the evaluation spec) reads the question, the
reference answer and two answers, and names the better one. Every sample is judged twice, with
the candidate first (A) and with the baseline first, which cancels the judge's position bias:
the candidate wins a sample when both orders pick it, loses when both pick the baseline, and
ties when the orders disagree or the judge calls a tie (Zheng et al. 2023, "Judging LLM-as-a-
Judge with MT-Bench and Chatbot Arena": swap positions). A sample with a verdict that cannot be
read in one of its two orders is *unparseable*: counted separately, left out of the rate.

The evaluator calls ``metric.judge(prompts=, references=, candidate=, baseline=, judge=)``
with ``judge(list of chat prompts) -> list of answers``. It returns one row per sample:
``[outcome, parsed, orders disagreed]`` with outcome +1 (candidate wins), 0 (tie), -1 (loses).
``aggregate(rows)`` is the *net* win rate ``(wins - losses) / parsed`` — the candidate's share
``(wins + ties / 2) / parsed`` minus the baseline's — so 0 means parity, which is what the
gate's "CI must exclude 0" tests; ``details(rows)`` gives the counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

Messages = list[dict[str, str]]
Judge = Callable[[list[Messages]], list[str]]
Rows = Sequence[Sequence[float]]

SYSTEM = (
    "You are an impartial judge. Compare two answers to the user's question. Judge "
    "correctness, helpfulness and clarity; ignore length and the order of the answers."
)
INSTRUCTION = (
    "Which answer is better? End your reply with exactly one verdict: [[A]] if answer A is "
    "better, [[B]] if answer B is better, [[TIE]] if they are equally good."
)
# markers the prompt puts around each part; test judges read them back
QUESTION, REFERENCE, ANSWER_A, ANSWER_B = (
    "[Question]",
    "[Reference answer]",
    "[Answer A]",
    "[Answer B]",
)

_BRACKETED = re.compile(r"\[\[\s*(A|B|TIE)\s*\]\]", re.IGNORECASE)
_PHRASED = re.compile(
    r"\b(?:verdict|winner|better answer|best answer|answer|choice|choose|prefer|pick)"
    r"\s*(?:is|:|=|-)?\s*(?:answer\s*)?[\"'(\[]*\s*(A|B)\b",
    re.IGNORECASE,
)
_TIE = re.compile(r"\b(?:tie|equally good|both (?:are )?(?:equally )?good|neither)\b", re.I)
_BARE = re.compile(r"^[\s\"'(\[*]*(A|B|tie)[\s\"')\].!*]*$", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """``"A"``, ``"B"``, ``"tie"`` or None when the reply names no verdict, or several.

    Tried in order: the ``[[A]]``/``[[B]]``/``[[TIE]]`` format the prompt asks for (the last
    one counts: judges often restate the options before deciding), a bare ``A``/``B``/``tie``
    reply, then phrases such as "Answer B is better" or "Verdict: A" and tie wording — only
    when they point one way.
    """
    bracketed = _BRACKETED.findall(text)
    if bracketed:
        return _norm(bracketed[-1])
    bare = _BARE.match(text)
    if bare:
        return _norm(bare.group(1))
    named = {_norm(m) for m in _PHRASED.findall(text)}
    tie = bool(_TIE.search(text))
    if len(named) == 1 and not tie:
        return named.pop()
    if not named and tie:
        return "tie"
    return None


def _norm(value: str) -> str:
    return "tie" if value.lower() == "tie" else value.upper()


def judge_prompt(question: str, reference: str | None, a: str, b: str) -> Messages:
    parts = [f"{QUESTION}\n{question}"]
    if reference is not None:
        parts.append(f"{REFERENCE}\n{reference}")
    parts += [f"{ANSWER_A}\n{a}", f"{ANSWER_B}\n{b}", INSTRUCTION]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def _question(prompt: Sequence[dict[str, str]]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt if m["role"] != "system")


class JudgeWinRate:
    """``factory(with_reference=True)``: show the judge the reference answer or not."""

    def __init__(self, *, with_reference: bool = True, **params: Any) -> None:
        if params:
            raise ValueError(f"judge_win_rate takes only with_reference, got {sorted(params)}")
        self.with_reference = bool(with_reference)

    def judge(
        self,
        *,
        prompts: Sequence[Sequence[dict[str, str]]],
        references: Sequence[str],
        candidate: Sequence[str],
        baseline: Sequence[str],
        judge: Judge,
    ) -> list[list[float]]:
        if not (len(prompts) == len(references) == len(candidate) == len(baseline)):
            raise ValueError("prompts, references, candidate and baseline must pair up")
        asks = []
        for prompt, ref, cand, base in zip(prompts, references, candidate, baseline, strict=True):
            question, shown = _question(prompt), ref if self.with_reference else None
            asks.append(judge_prompt(question, shown, cand, base))  # candidate is A
            asks.append(judge_prompt(question, shown, base, cand))  # candidate is B
        replies = judge(asks)
        if len(replies) != len(asks):
            raise ValueError(f"the judge answered {len(replies)} of {len(asks)} prompts")
        rows = []
        for i in range(len(prompts)):
            first, second = parse_verdict(replies[2 * i]), parse_verdict(replies[2 * i + 1])
            if first is None or second is None:
                rows.append([0.0, 0.0, 0.0])
                continue
            # each order's verdict from the candidate's side: +1 wins, 0 tie, -1 loses
            a = {"A": 1.0, "B": -1.0, "tie": 0.0}[first]
            b = {"A": -1.0, "B": 1.0, "tie": 0.0}[second]
            rows.append([a if a == b else 0.0, 1.0, float(a != b)])
        return rows

    def aggregate(self, rows: Rows) -> float:
        parsed = sum(r[1] for r in rows)
        return sum(r[0] * r[1] for r in rows) / parsed if parsed else 0.0

    def details(self, rows: Rows) -> dict[str, float]:
        parsed = [r for r in rows if r[1]]
        return {
            "wins": float(sum(1 for r in parsed if r[0] > 0)),
            "ties": float(sum(1 for r in parsed if r[0] == 0)),
            "losses": float(sum(1 for r in parsed if r[0] < 0)),
            "position_disagreements": float(sum(1 for r in parsed if r[2])),
            "unparseable": float(len(rows) - len(parsed)),
        }
