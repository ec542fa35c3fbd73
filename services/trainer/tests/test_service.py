"""The trainer service end to end: gRPC submit -> work queue -> child process -> artifacts ->
``tw.trainer.job.succeeded`` with the model version the registry records."""

from __future__ import annotations

import json

import grpc
import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef
from tunewright.trainer.v1 import trainer_pb2

from .conftest import Harness, finished, sft_rows, sft_spec


async def test_sft_job_trains_checkpoints_and_announces_a_model_version(
    harness: Harness, tmp_path
) -> None:
    await harness.start_worker()
    await harness.dataset("dv-sft", "sft", sft_rows(48), sft_rows(8, seed=1))
    spec = sft_spec("dv-sft")
    spec.trackers.add(name="jsonl")
    reply = await harness.stub.SubmitTrainingJob(
        trainer_pb2.SubmitTrainingJobRequest(spec=spec, request_id="r1")
    )
    job = await harness.wait_for(reply.job.id, finished)
    assert job.status == common_pb2.JOB_STATUS_SUCCEEDED, job.error
    assert job.attempt == 1
    assert job.latest_checkpoint.step == 6
    assert job.final_metrics["eval_loss"] < job.final_metrics["initial_eval_loss"]

    (fact,) = await harness.facts(subjects.TRAINER_JOB_SUCCEEDED, expect=1)
    mv = fact.model_version
    assert fact.job_id == job.id and mv.id == job.model_version_id
    assert mv.model == "support-assistant" and mv.method == "sft"
    assert mv.base_model == "tiny:llama-xxs" and list(mv.dataset_version_ids) == ["dv-sft"]
    assert mv.eos_token == "<|im_end|>" and "{% generation %}" in mv.chat_template
    assert mv.labels["seed"] == "7"
    assert [c.step for c in fact.checkpoints] == [3, 6]

    out = await harness.artifacts.get_dir(
        ArtifactRef(mv.weights.sha256, None, mv.weights.media_type), tmp_path / "out"
    )
    assert (out / "model" / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert (out / "config.json").is_file() and (out / "metrics.json").is_file()

    tracked = harness.data_dir / "trainer" / "tracking" / f"{job.id}.jsonl"
    steps = [json.loads(line)["step"] for line in tracked.read_text().splitlines()]
    assert set(steps) == set(range(0, 7))  # the baseline evaluation (step 0), then every step

    # the same request id is the same job, not a second one
    again = await harness.stub.SubmitTrainingJob(
        trainer_pb2.SubmitTrainingJobRequest(spec=sft_spec("dv-sft"), request_id="r1")
    )
    assert again.job.id == job.id

    events = [
        r.event
        async for r in harness.stub.StreamTrainingJobEvents(
            trainer_pb2.StreamTrainingJobEventsRequest(job_id=job.id)
        )
    ]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].status == common_pb2.JOB_STATUS_SUCCEEDED
    assert any(e.kind == common_pb2.EVENT_KIND_METRICS for e in events)


async def test_preflight_rejects_with_field_reasons(harness: Harness) -> None:
    await harness.start_worker()
    await harness.dataset(
        "dv-pref", "preference", [{"prompt": "a", "chosen": "b", "rejected": "c"}]
    )
    spec = sft_spec("dv-pref")
    spec.quantization.bits = trainer_pb2.QUANTIZATION_BITS_4
    spec.peft.type = trainer_pb2.PEFT_TYPE_NONE
    spec.trackers.add(name="nope")
    spec.method_config.update({"packing_strategy": "zigzag"})
    reply = await harness.stub.ValidateTrainingJob(
        trainer_pb2.ValidateTrainingJobRequest(spec=spec)
    )
    fields = {v.field: v.description for v in reply.violations}
    assert not reply.valid
    assert "does not fit method 'sft'" in fields["spec.datasets[0]"]
    assert "packing_strategy" in fields["spec.method_config"]
    assert "spec.trackers[0].name" in fields

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.stub.SubmitTrainingJob(trainer_pb2.SubmitTrainingJobRequest(spec=spec))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    ok = sft_spec("dv-missing")
    reply = await harness.stub.ValidateTrainingJob(trainer_pb2.ValidateTrainingJobRequest(spec=ok))
    assert {v.field for v in reply.violations} == {"spec.datasets[0]"}

    quantized_full = sft_spec("dv-pref", method="dpo")
    quantized_full.quantization.bits = trainer_pb2.QUANTIZATION_BITS_4
    quantized_full.peft.type = trainer_pb2.PEFT_TYPE_NONE
    reply = await harness.stub.ValidateTrainingJob(
        trainer_pb2.ValidateTrainingJobRequest(spec=quantized_full)
    )
    assert "spec.peft.type" in {v.field for v in reply.violations}
    assert reply.estimated_memory_bytes == 0

    big = sft_spec("dv-pref", method="dpo")
    big.resources.memory_limit_bytes = 1000
    reply = await harness.stub.ValidateTrainingJob(trainer_pb2.ValidateTrainingJobRequest(spec=big))
    assert {v.field for v in reply.violations} == {"spec.resources"}
    assert reply.estimated_memory_bytes > 1000


async def test_a_crashing_job_fails_alone_and_the_worker_goes_on(harness: Harness) -> None:
    await harness.start_worker()
    # rows that are not canonical SFT rows: the child process raises
    await harness.dataset("dv-bad", "sft", [{"text": "no messages here"}] * 8)
    await harness.dataset("dv-ok", "sft", sft_rows(16))
    bad = await harness.stub.SubmitTrainingJob(
        trainer_pb2.SubmitTrainingJobRequest(spec=sft_spec("dv-bad"))
    )
    spec = sft_spec("dv-ok")
    spec.hyperparameters.max_steps = 2
    good = await harness.stub.SubmitTrainingJob(trainer_pb2.SubmitTrainingJobRequest(spec=spec))
    failed = await harness.wait_for(bad.job.id, finished)
    assert failed.status == common_pb2.JOB_STATUS_FAILED
    assert failed.error.reason == "TRAINING_ERROR" and "KeyError" in failed.error.message
    (fact,) = await harness.facts(subjects.TRAINER_JOB_FAILED, expect=1)
    assert fact.job_id == bad.job.id and fact.error.reason == "TRAINING_ERROR"
    ok = await harness.wait_for(good.job.id, finished)
    assert ok.status == common_pb2.JOB_STATUS_SUCCEEDED, ok.error

    methods = await harness.stub.ListTrainingMethods(trainer_pb2.ListTrainingMethodsRequest())
    assert {m.name for m in methods.methods} >= {"sft", "dpo", "reward", "rlhf", "kto"}
    assert {"tiny", "hf"} <= set(methods.base_model_schemes)
    listed = await harness.stub.ListTrainingJobs(
        trainer_pb2.ListTrainingJobsRequest(statuses=[common_pb2.JOB_STATUS_FAILED])
    )
    assert [j.id for j in listed.jobs] == [bad.job.id]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.stub.CancelTrainingJob(trainer_pb2.CancelTrainingJobRequest(job_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_tracker_destination_outside_the_allow_lists_is_refused(harness: Harness) -> None:
    await harness.start_worker()
    await harness.dataset("dv-sft", "sft", sft_rows(8))
    spec = sft_spec("dv-sft")
    spec.trackers.add(name="jsonl").params.update({"path": "/etc/cron.d/steps"})
    spec.trackers.add(name="jsonl").params.update({"path": "steps/ok.jsonl"})
    spec.trackers.add(name="jsonl").params.update({"nope": 1})
    reply = await harness.stub.ValidateTrainingJob(
        trainer_pb2.ValidateTrainingJobRequest(spec=spec)
    )
    fields = {v.field: v.description for v in reply.violations}
    assert "outbound.allowed_paths" in fields["spec.trackers[0].params.path"]
    assert "nope" in fields["spec.trackers[2].params"]
    assert not any(f.startswith("spec.trackers[1]") for f in fields)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.stub.SubmitTrainingJob(trainer_pb2.SubmitTrainingJobRequest(spec=spec))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not (harness.data_dir / "trainer" / "tracking" / "steps").exists()
