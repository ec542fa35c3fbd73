"""The ``jsonl`` tracker writes one object per step, only where the operator allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tunewright_trl.trackers import JsonlTracker

from tunewright.core.errors import InvalidArgument
from tunewright.core.settings import OutboundSettings


def test_steps_land_in_the_default_file(tmp_path: Path) -> None:
    tracker = JsonlTracker(job_id="job-1", directory=tmp_path)
    tracker.log(1, {"loss": 0.5})
    tracker.close()
    (line,) = (tmp_path / "job-1.jsonl").read_text().splitlines()
    assert json.loads(line)["loss"] == 0.5


def test_path_must_resolve_inside_an_allowed_folder(tmp_path: Path) -> None:
    root = tmp_path / "tracking"
    for path in ("/etc/cron.d/x", "../x.jsonl", str(tmp_path / "x.jsonl"), "a/../../x"):
        with pytest.raises(InvalidArgument) as err:
            JsonlTracker(job_id="job-1", directory=root, path=path)
        assert err.value.reason == "DESTINATION_NOT_ALLOWED", path
        assert [v.field for v in err.value.field_violations] == ["params.path"]
    assert not root.exists()
    tracker = JsonlTracker(job_id="job-1", directory=root, path="sub/steps.jsonl")
    tracker.close()
    assert (root / "sub" / "steps.jsonl").exists()
    shared = tmp_path / "shared"
    policy = OutboundSettings(allowed_paths=[shared])
    JsonlTracker(job_id="j", directory=root, path=str(shared / "s.jsonl"), outbound=policy).close()
    assert (shared / "s.jsonl").exists()
    with pytest.raises(InvalidArgument, match="params may not carry outbound"):
        JsonlTracker(job_id="j", directory=root, outbound={"allowed_paths": ["/"]})


def test_check_writes_nothing(tmp_path: Path) -> None:
    JsonlTracker.check(directory=tmp_path / "t", path="steps.jsonl")
    with pytest.raises(InvalidArgument):
        JsonlTracker.check(directory=tmp_path / "t", path="/etc/passwd")
    assert not (tmp_path / "t").exists()
