"""The tensorboard tracker writes event files that TensorBoard's own reader parses back."""

from __future__ import annotations

from pathlib import Path

from tensorboardX.proto import event_pb2

from tunewright.core.plugins import PluginManager


def _scalars(logdir: Path) -> list[tuple[str, int, float]]:
    import struct

    out = []
    for file in sorted(logdir.glob("events.out.tfevents.*")):
        data = file.read_bytes()
        offset = 0
        while offset < len(data):  # TFRecord framing: length, crc, payload, crc
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            payload = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                out.append((value.tag, event.step, value.simple_value))
    return out


def test_steps_land_in_tensorboard_event_files(tmp_path: Path) -> None:
    factory = PluginManager().load().trackers.get("tensorboard").factory
    tracker = factory(job_id="job-1", directory=tmp_path)
    for step in range(1, 4):
        tracker.log(step, {"loss": 1.0 / step, "rewards/margins": 0.5 * step})
    tracker.close()
    scalars = _scalars(tmp_path / "tensorboard" / "job-1")
    assert [(t, s) for t, s, _ in scalars if t == "loss"] == [("loss", 1), ("loss", 2), ("loss", 3)]
    assert dict(((t, s), v) for t, s, v in scalars)[("rewards/margins", 3)] == 1.5


def test_logdir_must_resolve_inside_an_allowed_folder(tmp_path: Path) -> None:
    import pytest
    from tunewright_tensorboard import TensorboardTracker, check_logdir

    from tunewright.core.errors import InvalidArgument
    from tunewright.core.settings import OutboundSettings

    root = tmp_path / "tracking"
    outside = tmp_path / "outside"
    for logdir in ("/etc", "../..", str(outside), "s3://bucket/runs", "gs://b/x", "ok/../../x"):
        with pytest.raises(InvalidArgument) as err:
            TensorboardTracker(job_id="job-1", directory=root, logdir=logdir)
        assert err.value.reason == "DESTINATION_NOT_ALLOWED", logdir
        assert [v.field for v in err.value.field_violations] == ["params.logdir"]
        assert "outbound.allowed_" in err.value.message
    assert not root.exists() and not outside.exists()
    assert check_logdir("runs", directory=root) == str(root / "runs")
    assert check_logdir(None, directory=root) == str(root / "tensorboard")
    policy = OutboundSettings(allowed_paths=[outside], allowed_urls=["s3://bucket/runs"])
    assert check_logdir(str(outside / "a"), directory=root, outbound=policy) == str(outside / "a")
    assert check_logdir("s3://bucket/runs/", directory=root, outbound=policy) == "s3://bucket/runs"
    tracker = TensorboardTracker(
        job_id="job-2", directory=root, logdir=str(outside), outbound=policy
    )
    tracker.log(1, {"loss": 0.5})
    tracker.close()
    assert _scalars(outside / "job-2") == [("loss", 1, 0.5)]


def test_check_writes_nothing(tmp_path: Path) -> None:
    import pytest
    from tunewright_tensorboard import TensorboardTracker

    from tunewright.core.errors import InvalidArgument

    TensorboardTracker.check(directory=tmp_path / "t", logdir="runs")
    with pytest.raises(InvalidArgument):
        TensorboardTracker.check(directory=tmp_path / "t", logdir="/var/tmp")
    assert not (tmp_path / "t").exists()
