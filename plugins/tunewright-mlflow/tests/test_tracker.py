"""The mlflow tracker logs every step to a local MLflow store and is found by the trainer's
plugin lookup."""

from __future__ import annotations

from pathlib import Path

from tunewright.core.plugins import PluginManager


def test_steps_land_in_a_local_mlflow_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    factory = PluginManager().load().trackers.get("mlflow").factory
    tracker = factory(job_id="job-1", directory=tmp_path, flush_every=3)
    for step in range(1, 8):
        tracker.log(step, {"loss": 1.0 / step, "rewards/margins": 0.1 * step})
    tracker.close()

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["tw.job_id"] == "job-1"
    losses = client.get_metric_history(tracker.run_id, "loss")
    assert [m.step for m in losses] == list(range(1, 8))
    assert client.get_metric_history(tracker.run_id, "rewards/margins")[-1].value == 0.1 * 7

    again = factory(job_id="job-2", directory=tmp_path)  # same experiment, a new run
    again.close()
    assert again.run_id != tracker.run_id
