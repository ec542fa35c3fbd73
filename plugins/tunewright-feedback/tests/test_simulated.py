"""The simulated annotator ranks by its documented rule, deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest
from tunewright_feedback import rubric_score

from tunewright.core.plugins import PluginManager


def test_token_f1_rule_ranks_by_f1_then_length_and_marks_itself(tmp_path: Path) -> None:
    backend = (
        PluginManager()
        .load()
        .feedback_backends.get("simulated")
        .factory(directory=tmp_path, rule="token-f1")
    )
    assert backend.simulated is True
    where = backend.publish(
        "prefs-1",
        [
            {
                "record_id": "r1",
                "prompt": [{"role": "user", "content": "my order is late"}],
                "reference": "sorry, your order ships today",
                "responses": [
                    "no idea",
                    "your order ships today, sorry!",
                    "sorry your order ships today ok",
                ],
            }
        ],
    )
    assert Path(where).is_file()
    (ranking,) = backend.collect("prefs-1")
    assert ranking == {"record_id": "r1", "ranking": [1, 2, 0], "annotator": "simulated:token-f1"}
    assert backend.collect("prefs-1") == [ranking]  # deterministic
    assert backend.collect("nothing-yet") == []
    with pytest.raises(ValueError, match="must be"):
        backend.publish("../escape", [])


TICKET = [{"role": "user", "content": "Hi, the AcmeCRM export drops the last page. Help!"}]
GOOD = (
    "Hi Ana, thanks for reaching out about AcmeCRM.\n"
    "1. Run the export again and download it from the Exports history page.\n"
    "2. Set the page size to A4 or Letter under Export settings to keep the last page.\n"
    "3. Contact us again if the page is still missing.\n"
    "Best regards, Acme Support"
)


def test_rubric_never_reads_the_reference_and_checks_each_point(tmp_path: Path) -> None:
    backend = (
        PluginManager()
        .load()
        .feedback_backends.get("simulated")
        .factory(directory=tmp_path, key_terms=["AcmeCRM", "AcmeDesk"])
    )
    assert backend.rule == "rubric"
    responses = [
        GOOD.replace("AcmeCRM", "AcmeDesk"),  # the wrong product
        GOOD + " Refunds of $20 are issued within 5 days at https://acme.example/refund.",
        GOOD.rsplit("\n", 2)[0] + "\n3. Contact us again if the",  # cut off mid-sentence
        GOOD,
        "Please contact support.",  # no steps, too short
    ]
    record = {"record_id": "r1", "prompt": TICKET, "responses": responses}
    backend.publish("prefs-r", [{**record, "reference": GOOD}])
    backend.publish("prefs-r2", [{**record, "record_id": "r2", "reference": "unrelated words"}])
    first, second = backend.collect("prefs-r"), backend.collect("prefs-r2")
    assert first[0]["ranking"] == second[0]["ranking"]  # the reference plays no part
    assert first[0]["ranking"][0] == 3 and first[0]["annotator"] == "simulated:rubric"
    assert first[0]["ranking"][-1] == 4
    ticket = TICKET[0]["content"]
    scores = [rubric_score(r, ticket, ["AcmeCRM", "AcmeDesk"]) for r in responses]
    assert scores[3] == 4.5  # product, steps, whole-sentence steps, clean end, length
    assert scores[0] == 2.5  # misses the ticket's product and names another
    assert scores[1] == 3.0  # a price, a promise and a URL the ticket never gave
    assert scores[2] == 3.333333  # cut off: no clean end, one step a fragment
    loop = "Hi, about AcmeCRM.\n" + "\n".join(f"{i}. The error code is 401." for i in (1, 2, 3))
    assert rubric_score(loop, ticket, ["AcmeCRM"]) < scores[3] - 1  # repeats itself
    with pytest.raises(ValueError, match="unknown simulated rule"):
        backend.__class__(directory=tmp_path, rule="vibes")


def test_reviews_accept_every_published_row_once_and_say_they_were_simulated(
    tmp_path: Path,
) -> None:
    backend = PluginManager().load().feedback_backends.get("simulated").factory(directory=tmp_path)
    row = {"record_id": "syn-1-0", "request": "Where is it?", "answer": "In the depot.",
           "category": "shipping", "generator": "local:mv-1"}  # fmt: skip
    where = backend.publish_review("review-1", [row, {**row, "record_id": "syn-1-3"}])
    assert Path(where).is_file()
    backend.publish_review("review-1", [row])  # published again (a redelivery): still once
    assert backend.collect_reviews("review-1") == [
        {"record_id": "syn-1-0", "accepted": True, "annotator": "simulated:accept-filtered"},
        {"record_id": "syn-1-3", "accepted": True, "annotator": "simulated:accept-filtered"},
    ]
    assert backend.collect_reviews("nothing-here") == []
    assert backend.records("review-1") == []  # reviews and rankings are kept apart
    with pytest.raises(ValueError, match="must be"):
        backend.publish_review("../escape", [row])
