"""The simulated annotator ranks by its documented rule, deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunewright.core.plugins import PluginManager


def test_ranks_by_token_f1_then_length_and_marks_itself(tmp_path: Path) -> None:
    backend = PluginManager().load().feedback_backends.get("simulated").factory(directory=tmp_path)
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
