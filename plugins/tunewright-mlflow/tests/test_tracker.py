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


def test_tracking_uri_must_be_allowed_before_anything_is_made(tmp_path: Path) -> None:
    import pytest
    from tunewright_mlflow.tracker import MlflowTracker, check_tracking_uri

    from tunewright.core.errors import InvalidArgument
    from tunewright.core.settings import OutboundSettings

    root = tmp_path / "tracking"
    for uri in (
        "http://mlflow:5000",  # the default policy: this host only
        "https://mlflow.example",
        "databricks",
        "postgresql://tw@db/mlflow",
        "sqlite:////etc/mlflow.db",
        "sqlite:///../escape.db",
        f"file://{tmp_path / 'elsewhere'}",
        str(tmp_path / "elsewhere"),
        "../../elsewhere",
    ):
        with pytest.raises(InvalidArgument) as err:
            MlflowTracker(job_id="job-1", directory=root, tracking_uri=uri)
        assert err.value.reason == "DESTINATION_NOT_ALLOWED", uri
        assert [v.field for v in err.value.field_violations] == ["params.tracking_uri"]
        assert "outbound.allowed_" in err.value.message
    assert not root.exists()  # refused before any folder, store or request
    # local stores inside the tracker's folder; a server the operator allows
    assert check_tracking_uri("sqlite:///runs.db", directory=root) == (
        f"sqlite:///{root / 'runs.db'}",
        root / "mlflow-artifacts",
    )
    assert check_tracking_uri("mlruns", directory=root) == (str(root / "mlruns"), None)
    policy = OutboundSettings(allowed_urls=["http://mlflow:5000"], allowed_paths=[tmp_path])
    assert check_tracking_uri("http://mlflow:5000", directory=root, outbound=policy) == (
        "http://mlflow:5000",
        None,
    )
    assert check_tracking_uri(
        f"file://{tmp_path / 'elsewhere'}", directory=root, outbound=policy
    ) == ((tmp_path / "elsewhere").as_uri(), None)
    with pytest.raises(InvalidArgument, match="params may not carry outbound"):
        MlflowTracker(job_id="j", directory=root, outbound={"allowed_urls": ["http://x"]})


def test_a_sqlite_store_in_the_folder_keeps_its_artifacts_beside_it(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from tunewright_mlflow.tracker import MlflowTracker

    tracker = MlflowTracker(job_id="job-1", directory=tmp_path, tracking_uri="sqlite:///x.db")
    tracker.log(1, {"loss": 1.0})
    tracker.close()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'x.db'}")
    experiment = client.get_experiment_by_name("tunewright")
    assert experiment.artifact_location == (tmp_path / "mlflow-artifacts").as_uri()


def test_check_is_the_constructors_check_without_side_effects(tmp_path: Path) -> None:
    import pytest
    from tunewright_mlflow.tracker import MlflowTracker

    from tunewright.core.errors import InvalidArgument
    from tunewright.core.settings import OutboundSettings

    root = tmp_path / "tracking"
    with pytest.raises(InvalidArgument, match="http://mlflow:5000 is not an allowed"):
        MlflowTracker.check(directory=root, tracking_uri="http://mlflow:5000")
    policy = OutboundSettings(allowed_urls=["http://mlflow:5000"])
    MlflowTracker.check(directory=root, tracking_uri="http://mlflow:5000", outbound=policy)
    MlflowTracker.check(directory=root, experiment="x")
    with pytest.raises(TypeError):
        MlflowTracker.check(directory=root, tracking_url="http://127.0.0.1:5000")  # type: ignore[call-arg]
    assert not root.exists()
