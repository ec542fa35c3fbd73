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
