"""Production traffic for the support-ticket model: interactions (prompt, the model's answer,
helpdesk category, user feedback), in distribution or shifted.

In distribution: the tickets of ``examples/support-tickets/ticketgen.py`` (clean rows: no
junk or duplicates, PII as planted there), answered well (the ticket's own solution), with
few thumbs-down (8%) and escalations (5%).

Shifted (``shift=0.5``: half the traffic): Acme has launched **AcmeVoice** (cloud telephony)
and customers ask new kinds of questions (``call_quality``, ``voice_assistant``,
``data_residency``) that the model never saw. It answers them with a refusal or a generic
line, and users react: 45% thumbs-down, 30% escalated.

Same seed, same rows. Run::

    python bench/monitor/trafficgen.py --rows 200 --shift 0.5 --out /tmp/traffic.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _ticketgen() -> ModuleType:
    if "ticketgen" in sys.modules:
        return sys.modules["ticketgen"]
    spec = importlib.util.spec_from_file_location(
        "ticketgen", ROOT / "examples" / "support-tickets" / "ticketgen.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ticketgen"] = module
    spec.loader.exec_module(module)
    return module


NEW_PRODUCT = "AcmeVoice"
NEW_PROBLEMS: dict[str, list[str]] = {
    "call_quality": [
        "calls placed through {product} drop after about thirty seconds",
        "customers hear an echo on every {product} call from our London office",
        "the audio on {product} conference calls is choppy and delayed",
        "outbound calls from {product} show the wrong caller number",
    ],
    "voice_assistant": [
        "the {product} voice assistant keeps transferring callers to the wrong queue",
        "how do I train the {product} voice bot to recognise our product names",
        "the {product} voicemail transcription is in the wrong language",
        "can the {product} assistant book appointments in our calendar",
    ],
    "data_residency": [
        "where are {product} call recordings stored and can we keep them in the EU",
        "we need a data processing agreement that covers {product} recordings",
        "how long does {product} retain call transcripts and can we shorten it",
        "our auditor asks which subprocessors {product} uses for speech recognition",
    ],
}
WEAK_ANSWERS = (
    "Sorry, I can only help with AcmeCRM, AcmeDesk, AcmeBilling and AcmeSync questions.",
    "Unfortunately I cannot help with that product. Please contact your account manager.",
    "Please try again later.",
    "Have you tried signing out and back in?",
)


@dataclass(frozen=True)
class Profile:
    negative: float
    positive: float
    escalated: float


GOOD = Profile(negative=0.08, positive=0.5, escalated=0.05)
BAD = Profile(negative=0.45, positive=0.1, escalated=0.30)


class TrafficGenerator:
    """Interactions one at a time from ``seed``; ``shift`` is the share of new-product rows."""

    def __init__(self, seed: int = 0, shift: float = 0.0, model_version_id: str = "") -> None:
        tg = _ticketgen()
        clean = tg.Mix(exact_duplicate=0, near_duplicate=0, mislabeled=0, junk=0)
        self.tickets = tg.TicketGenerator(seed=seed, mix=clean)
        self.tg = tg
        self.rng = random.Random(seed + 7919)
        self.shift = shift
        self.model_version_id = model_version_id

    def _feedback(self, profile: Profile) -> dict[str, Any]:
        r = self.rng.random()
        thumbs = (
            -1 if r < profile.negative else (1 if r < profile.negative + profile.positive else 0)
        )
        escalated = self.rng.random() < profile.escalated
        return {"thumbs": thumbs, "escalated": escalated, "resolved": thumbs >= 0 and not escalated}

    def _new_ticket(self, index: int) -> tuple[str, str, str]:
        tg, r = self.tg, self.tickets.rng
        category = r.choice(sorted(NEW_PROBLEMS))
        first, last = self.tickets._person()
        email = f"{first.lower()}.{last.lower()}@{r.choice(tg.DOMAINS)}"
        query = " ".join(
            [
                r.choice(tg.OPENINGS),
                f"this is {first} {last} from {r.choice(tg.COMPANIES)}.",
                tg._sentence(r.choice(NEW_PROBLEMS[category]).format(product=NEW_PRODUCT)),
                r.choice(tg.DETAILS),
                f"You can reach me at {email} or call {self.tickets._phone()}.",
                r.choice(tg.CLOSINGS),
            ]
        )
        return query, category, r.choice(WEAK_ANSWERS)

    def interaction(self, index: int) -> dict[str, Any]:
        if self.rng.random() < self.shift:
            prompt, category, response = self._new_ticket(index)
            product, profile = NEW_PRODUCT, BAD
        else:
            ticket = self.tickets.ticket(index)
            prompt, category, response = ticket.query, ticket.category, ticket.solution
            product, profile = ticket.product, GOOD
        return {
            "interaction_id": f"I{index:08d}",
            "model_version_id": self.model_version_id,
            "prompt": prompt,
            "response": response,
            "attributes": {"category": category, "product": product},
            "feedback": self._feedback(profile),
        }

    def interactions(self, rows: int, start: int = 0) -> Iterator[dict[str, Any]]:
        for i in range(start, start + rows):
            yield self.interaction(i)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    gen = TrafficGenerator(seed=args.seed, shift=args.shift)
    with args.out.open("w") as f:
        for row in gen.interactions(args.rows):
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
