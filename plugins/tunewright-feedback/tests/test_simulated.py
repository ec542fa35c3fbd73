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
