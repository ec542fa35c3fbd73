"""Registry + trainer + evaluator on real NATS and real gRPC (port 0).

1. An SFT candidate trained on a tiny model is evaluated against its untrained base on a
   held-out split (real generation, real metrics including perplexity and the generation
   smoke test, an LLM-as-judge win rate, paired bootstrap CIs); the gate passes it, the
   registry records it, the report (HTML + PNGs + side-by-side samples) is in the artifact
   store. The same candidate against itself fails the gate; its events stream to the end.
2. Another system asks for an evaluation with a ``tw.evaluator.run.requested`` event, judged by
   the real ``local`` generator running a registered model version, then by the real
   ``openai-compatible`` generator calling a local OpenAI-compatible HTTP server; a queued run
   and a running run are cancelled.

No capable LLM judge can run here, so test 1's judge is a test-only generator plugin
(``test.overlap-judge``, below): a deterministic stand-in that prefers the answer sharing more
words with the reference. It is installed as a distribution with an entry point on sys.path,
so the services' plugin managers load it exactly like a third-party plugin. The judges of test
2 are real but tiny (their verdicts are mostly unreadable, and counted as such): they test the
plumbing.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef, LocalArtifactStore
from tunewright.core.bus import EventBus, event_meta
from tunewright.core.service import RunningService, start_service
from tunewright.core.settings import load_settings
from tunewright.evaluator.server import DEFINITION as EVALUATOR
from tunewright.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunewright.events.v1 import events_pb2
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.trainer.server import DEFINITION as TRAINER
from tunewright.trainer.v1 import trainer_pb2, trainer_pb2_grpc

os.environ.setdefault("OMP_NUM_THREADS", "1")
ANSWERS = {
    "my order is late": "sorry, your order ships today",
    "the app crashes": "please update the app to the latest version",
    "I was charged twice": "a refund for the second charge is on its way",
}

# TEST ONLY: a deterministic judge standing in for an LLM judge (none can run here)
JUDGE_PLUGIN = '''
"""TEST ONLY judge generator (tests/e2e/test_evaluation.py): answers judge prompts by word
overlap with the reference answer. Not an LLM; a deterministic stand-in for one."""

from tunewright.core.plugins import GeneratorRegistry, hookimpl


def _between(text, start, end):
    return text.split(start + "\\n", 1)[1].split("\\n\\n" + end, 1)[0]


class OverlapJudge:
    def __init__(self, **params):
        self.params = params

    def generate(self, *, prompts, **_):
        replies = []
        for messages in prompts:
            text = messages[-1]["content"]
            ref = set(_between(text, "[Reference answer]", "[Answer A]").split())
            a = len(ref & set(_between(text, "[Answer A]", "[Answer B]").split()))
            b = len(ref & set(_between(text, "[Answer B]", "Which answer").split()))
            verdict = "[[A]]" if a > b else "[[B]]" if b > a else "[[TIE]]"
            replies.append([f"Comparing both answers with the reference: {verdict}"])
        return replies


@hookimpl
def tw_register_generators(registry: GeneratorRegistry) -> None:
    registry.add(
        name="test.overlap-judge",
        factory=OverlapJudge,
        dataset_kinds=["judge"],
        description="TEST ONLY: deterministic word-overlap judge standing in for an LLM judge.",
    )
'''


@pytest.fixture
def test_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Install the test-only judge as a distribution with a ``tunewright`` entry point."""
    root = tmp_path / "judge-dist"
    info = root / "tunewright_test_judge-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tunewright-test-judge\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[tunewright]\ntest-judge = tw_test_judge\n")
    (root / "tw_test_judge.py").write_text(textwrap.dedent(JUDGE_PLUGIN))
    monkeypatch.syspath_prepend(str(root))
    yield "test.overlap-judge"
    import sys

    sys.modules.pop("tw_test_judge", None)


def _rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = rng.choice(list(ANSWERS))
        out.append(
            {
                "messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": ANSWERS[q]},
                ]
            }
        )
    return out


async def _jsonl(store: LocalArtifactStore, rows: list[dict[str, Any]]) -> common_pb2.ArtifactRef:
    ref = await store.put_bytes(
        "".join(json.dumps(r) + "\n" for r in rows).encode(), "application/jsonl"
    )
    return common_pb2.ArtifactRef(
        uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes or 0, media_type=ref.media_type
    )


async def _until(fetch, done, limit_s: float = 240):  # type: ignore[no-untyped-def]
    for _ in range(int(limit_s / 0.2)):
        value = await fetch()
        if done(value):
            return value
        await asyncio.sleep(0.2)
    raise AssertionError("not done in time")


class Stack:
    def __init__(self, services: dict[str, RunningService[Any]], bus: EventBus, store: Any):
        self.services, self.bus, self.store = services, bus, store
        self.channels = {
            name: grpc.aio.insecure_channel(f"127.0.0.1:{svc.port}")
            for name, svc in services.items()
        }
        self.trainer = trainer_pb2_grpc.TrainerServiceStub(self.channels["trainer"])
        self.registry = registry_pb2_grpc.RegistryServiceStub(self.channels["registry"])
        self.evaluator = evaluator_pb2_grpc.EvaluatorServiceStub(self.channels["evaluator"])

    async def run_until_done(self, run_id: str) -> evaluator_pb2.EvaluationRun:
        done = await _until(
            lambda: self.evaluator.GetEvaluationRun(
                evaluator_pb2.GetEvaluationRunRequest(run_id=run_id)
            ),
            lambda r: r.run.status >= common_pb2.JOB_STATUS_SUCCEEDED,
        )
        return done.run  # type: ignore[no-any-return]


@asynccontextmanager
async def _stack(nats_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    data_dir = tmp_path / "data"
    common = {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": data_dir}
    registry = await start_service(REGISTRY, load_settings(REGISTRY.settings_cls, **common))
    trainer = await start_service(TRAINER, load_settings(TRAINER.settings_cls, **common))
    evaluator = await start_service(
        EVALUATOR,
        load_settings(
            EVALUATOR.settings_cls,
            **common,
            evaluator={"registry_address": f"127.0.0.1:{registry.port}"},
        ),
    )
    bus = await EventBus.connect(nats_url, name="e2e-eval")
    stack = Stack(
        {"registry": registry, "trainer": trainer, "evaluator": evaluator},
        bus,
        LocalArtifactStore(data_dir / "artifacts"),
    )
    try:
        yield stack
    finally:
        for channel in stack.channels.values():
            await channel.close()
        await bus.close()
        for running in (evaluator, trainer, registry):
            await running.stop()


async def _train_candidate(stack: Stack, steps: int = 40) -> str:
    """Register the toy Q&A dataset version and train a full fine-tuned SFT candidate."""
    dv = registry_pb2.DatasetVersion(
        id="dv-qa", workspace="default", dataset="qa", content_hash="qa",
        kind=common_pb2.DATASET_KIND_SFT,
    )  # fmt: skip
    dv.splits["train"].CopyFrom(await _jsonl(stack.store, _rows(48, 0)))
    dv.splits["eval"].CopyFrom(await _jsonl(stack.store, _rows(30, 1)))
    await stack.bus.publish(
        subjects.INGEST_DATASET_CURATED,
        events_pb2.IngestDatasetCurated(
            meta=event_meta(producer="test"), job_id="ingest-qa", dataset_version=dv
        ),
        key="dv-qa",
    )
    spec = trainer_pb2.TrainingJobSpec(
        base_model="tiny:llama-xxs", method="sft", output_model="support",
        datasets=[common_pb2.DatasetVersionRef(id="dv-qa")],
        # full fine-tuning: a randomly initialised tiny model learns little through LoRA alone
        peft=trainer_pb2.PeftConfig(type=trainer_pb2.PEFT_TYPE_NONE),
        hyperparameters=trainer_pb2.Hyperparameters(
            max_steps=steps, batch_size=8, max_length=48, learning_rate=2e-3, assistant_only_loss=True
        ),
        seed=1, resources=trainer_pb2.Resources(device="cpu"),
    )  # fmt: skip
    job = (
        await stack.trainer.SubmitTrainingJob(trainer_pb2.SubmitTrainingJobRequest(spec=spec))
    ).job
    job = await _until(
        lambda: stack.trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.id)),
        lambda r: r.job.status >= common_pb2.JOB_STATUS_SUCCEEDED,
    )
    assert job.job.status == common_pb2.JOB_STATUS_SUCCEEDED, job.job.error
    candidate: str = job.job.model_version_id
    await _until(
        lambda: stack.registry.ListModelVersions(registry_pb2.ListModelVersionsRequest()),
        lambda r: any(m.id == candidate for m in r.model_versions),
    )
    return candidate


def _spec(
    candidate: str,
    baseline: evaluator_pb2.EvaluatedModel,
    metrics: tuple[str, ...] = ("rouge_l", "token_f1"),
    judge: common_pb2.PluginRef | None = None,
    max_new_tokens: int = 16,
) -> evaluator_pb2.EvaluationSpec:
    return evaluator_pb2.EvaluationSpec(
        candidate=evaluator_pb2.EvaluatedModel(
            role="candidate", model=common_pb2.ModelVersionRef(id=candidate)
        ),
        baselines=[baseline],
        dataset=common_pb2.DatasetVersionRef(id="dv-qa"),
        metrics=[common_pb2.PluginRef(name=m) for m in metrics],
        generation=common_pb2.GenerationConfig(max_new_tokens=max_new_tokens, batch_size=8),
        gate=evaluator_pb2.GatePolicy(
            rules=[
                evaluator_pb2.GateRule(
                    metric="rouge_l", baseline=baseline.role, min_delta=0.05, ci_excludes_zero=True
                )
            ]
        ),
        judge=judge,
        bootstrap_samples=500,
        seed=1,
    )


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


async def test_sft_candidate_beats_its_base_and_the_gate_says_so(
    nats_url: str, tmp_path: Path, test_judge: str
) -> None:
    async with _stack(nats_url, tmp_path) as stack:
        listed = await stack.evaluator.ListMetrics(evaluator_pb2.ListMetricsRequest())
        needs = {m.name: m.needs for m in listed.metrics}
        assert needs["perplexity"] == needs["generation_smoke"] == "model"
        assert needs["judge_win_rate"] == "judge" and needs["rouge_l"] == "outputs"

        candidate = await _train_candidate(stack)
        base = evaluator_pb2.EvaluatedModel(role="base", base_model="tiny:llama-xxs")
        spec = _spec(
            candidate,
            base,
            metrics=("rouge_l", "token_f1", "perplexity", "generation_smoke", "judge_win_rate"),
            judge=common_pb2.PluginRef(name=test_judge),
        )
        submitted = (
            await stack.evaluator.SubmitEvaluationRun(
                evaluator_pb2.SubmitEvaluationRunRequest(spec=spec)
            )
        ).run
        run = await stack.run_until_done(submitted.id)
        assert run.status == common_pb2.JOB_STATUS_SUCCEEDED, run.error
        by_metric = {c.metric: c for c in run.comparisons}
        for c in run.comparisons:
            print(f"\n{c.metric}: candidate {c.candidate_value:.3f} vs base {c.baseline_value:.3f}, "
                  f"delta {c.delta:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}] {dict(c.details)}")  # fmt: skip
        rouge = by_metric["rouge_l"]
        assert run.verdict.passed, list(run.verdict.reasons)
        assert rouge.ci_low > 0
        # the trained model predicts the answers far better than random weights ...
        ppl = by_metric["perplexity"]
        assert not ppl.higher_is_better and ppl.candidate_value < ppl.baseline_value / 10
        assert ppl.ci_high < 0
        # ... stops at EOS without template leftovers, which the untrained base never does
        smoke = by_metric["generation_smoke"]
        assert smoke.candidate_value > 0.9 and smoke.baseline_value == 0.0
        # the test judge prefers the candidate in both orders on every sample
        judged = by_metric["judge_win_rate"]
        assert judged.details["wins"] == 30 and judged.details["unparseable"] == 0
        assert judged.delta == 1.0 and judged.candidate_value == 1.0

        report = json.loads(await stack.store.get_bytes(ArtifactRef.from_uri(run.report_json.uri)))
        assert len(report["samples"]) == 30
        assert set(report["samples"][0]["outputs"]) == {"candidate", "base"}
        assert report["details"]["judge_win_rate/base"]["wins"] == 30
        html = await stack.store.get_bytes(ArtifactRef.from_uri(run.report_html.uri))
        assert b"PASSED" in html and b"data:image/png;base64," in html
        assert b"<h2>Samples</h2>" in html and b"perplexity" in html and b"unparseable" in html

        # the registry recorded it, so the candidate may now be promoted
        await _until(
            lambda: stack.registry.ListEvaluations(
                registry_pb2.ListEvaluationsRequest(candidate_model_version_id=candidate)
            ),
            lambda r: len(r.evaluations) == 1,
        )
        promoted = await stack.registry.Promote(
            registry_pb2.PromoteRequest(model_version_id=candidate, alias="production")
        )
        assert promoted.evaluation_id == run.id

        # the candidate against itself: identical outputs, CI [0, 0], the gate refuses; its
        # events stream from queued to succeeded and the stream ends with the run
        same = evaluator_pb2.EvaluatedModel(
            role="production", model=common_pb2.ModelVersionRef(alias="production", model="support")
        )
        again = (
            await stack.evaluator.SubmitEvaluationRun(
                evaluator_pb2.SubmitEvaluationRunRequest(spec=_spec(candidate, same))
            )
        ).run
        events = [
            r.event
            async for r in stack.evaluator.StreamEvaluationRunEvents(
                evaluator_pb2.StreamEvaluationRunEventsRequest(run_id=again.id)
            )
        ]
        statuses = [e.status for e in events if e.kind == common_pb2.EVENT_KIND_STATUS]
        assert statuses == [
            common_pb2.JOB_STATUS_QUEUED,
            common_pb2.JOB_STATUS_RUNNING,
            common_pb2.JOB_STATUS_SUCCEEDED,
        ]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert any("generating with production" in e.message for e in events)
        again = await stack.run_until_done(again.id)
        assert not again.verdict.passed
        assert "95% CI includes 0" in again.verdict.reasons[0]
        # resuming after the last event yields nothing more for a finished run
        rest = [
            r
            async for r in stack.evaluator.StreamEvaluationRunEvents(
                evaluator_pb2.StreamEvaluationRunEventsRequest(
                    run_id=again.id, after_sequence=events[-1].sequence
                )
            )
        ]
        assert rest == []


async def _next_fact(sub: Any, message_type: Any, run_id: str, limit_s: float = 120) -> Any:
    async def read() -> Any:
        while True:
            msg = await sub.next_msg(timeout=limit_s)
            fact = message_type.FromString(msg.data)  # a plain subscriber: no JetStream ack
            found = fact.run.id if message_type is events_pb2.EvaluatorRunCompleted else fact.run_id
            if found == run_id:
                return fact

    return await asyncio.wait_for(read(), limit_s)


@dataclass
class ChatServer:
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def _chat_server(tmp_path: Path, model: str) -> Iterator[ChatServer]:
    """A real OpenAI-compatible ``POST /v1/chat/completions`` server (stdlib HTTP, port 0)
    answering with greedy generations of an untrained tiny Llama through the ``local``
    generator; the minimal part of plugins/tunewright-openai/tests/conftest.py's server."""
    from tunewright_trl.generation import LocalGenerator
    from tunewright_trl.models import TinyBaseModel

    base = TinyBaseModel("llama-xxs", corpus=["Which answer is better? [[A]] [[B]]"], seed=1)
    base.tokenizer().save_pretrained(str(tmp_path / "judge-model" / "tokenizer"))
    generator, lock, state = LocalGenerator(), threading.Lock(), ChatServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            status, reply = 404, {"error": {"type": "model_not_found", "message": "?"}}
            if self.path == "/v1/chat/completions" and body.get("model") == model:
                with lock:  # one generation at a time (torch on a shared CPU)
                    text = generator.generate(
                        base=base,
                        weights=[],
                        tokenizer=tmp_path / "judge-model",
                        prompts=[body["messages"]],
                        max_new_tokens=int(body["max_tokens"]),
                    )[0][0]
                status, reply = (
                    200,
                    {
                        "id": f"chatcmpl-{len(state.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "length",
                            }
                        ],
                    },
                )
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


async def test_outside_request_with_a_local_judge_and_cancellation(
    nats_url: str, tmp_path: Path
) -> None:
    async with _stack(nats_url, tmp_path) as stack:
        candidate = await _train_candidate(stack, steps=20)
        completed = await stack.bus.nc.subscribe(subjects.EVALUATOR_RUN_COMPLETED)
        failed = await stack.bus.nc.subscribe(subjects.EVALUATOR_RUN_FAILED)
        base = evaluator_pb2.EvaluatedModel(role="base", base_model="tiny:llama-xxs")

        # another system asks over NATS; the judge is the real `local` generator running a
        # registered model version (a tiny model: its verdicts are not meant to be good, the
        # point is the plumbing, and what it cannot answer is counted as unparseable)
        judge = common_pb2.PluginRef(
            name="local", params=_struct({"model_version_id": candidate, "max_new_tokens": 8})
        )
        spec = _spec(candidate, base, metrics=("rouge_l", "judge_win_rate"), judge=judge)
        spec.max_samples = 6
        await stack.bus.publish(
            subjects.EVALUATOR_RUN_REQUESTED,
            events_pb2.EvaluatorRunRequested(
                meta=event_meta(producer="another-system"), run_id="eval-outside-1", spec=spec
            ),
            key="eval-outside-1",
        )
        fact = await _next_fact(completed, events_pb2.EvaluatorRunCompleted, "eval-outside-1")
        judged = next(c for c in fact.run.comparisons if c.metric == "judge_win_rate")
        counted = sum(judged.details[k] for k in ("wins", "ties", "losses", "unparseable"))
        assert counted == 6, dict(judged.details)
        print(f"\nlocal tiny judge on 6 samples: {dict(judged.details)}")
        assert fact.run.verdict.passed  # rouge_l still decides the gate

        # the judge is an OpenAI-compatible endpoint: its `model` is the name the endpoint
        # serves (not a registered model), and every judge prompt goes over HTTP
        with _chat_server(tmp_path, "Qwen/Qwen2.5-72B-Instruct") as server:
            judge = common_pb2.PluginRef(
                name="openai-compatible",
                params=_struct(
                    {
                        "base_url": server.base_url,
                        "model": "Qwen/Qwen2.5-72B-Instruct",
                        "max_new_tokens": 8,
                        "max_retries": 0,
                    }
                ),
            )
            spec = _spec(candidate, base, metrics=("rouge_l", "judge_win_rate"), judge=judge)
            spec.max_samples = 6
            await stack.bus.publish(
                subjects.EVALUATOR_RUN_REQUESTED,
                events_pb2.EvaluatorRunRequested(
                    meta=event_meta(producer="another-system"), run_id="eval-outside-2", spec=spec
                ),
                key="eval-outside-2",
            )
            fact = await _next_fact(completed, events_pb2.EvaluatorRunCompleted, "eval-outside-2")
        judged = next(c for c in fact.run.comparisons if c.metric == "judge_win_rate")
        counted = sum(judged.details[k] for k in ("wins", "ties", "losses", "unparseable"))
        assert counted == 6, dict(judged.details)
        print(f"openai-compatible tiny judge on 6 samples: {dict(judged.details)}")
        # both orders of each sample, greedy, with the judge's reply budget
        assert len(server.requests) == 12
        assert all(r["max_tokens"] == 8 and r["temperature"] == 0.0 for r in server.requests)
        prompts = [r["messages"][-1]["content"] for r in server.requests]
        assert all("[[A]]" in p and "[Reference answer]" in p for p in prompts)

        # cancellation: a long run is cancelled while it runs, the one queued behind it
        # (one run at a time per worker) is cancelled before it starts
        slow = _spec(candidate, base, metrics=("rouge_l", "perplexity", "generation_smoke"))
        slow.generation.max_new_tokens = 64
        first = (
            await stack.evaluator.SubmitEvaluationRun(
                evaluator_pb2.SubmitEvaluationRunRequest(spec=slow, request_id="slow-1")
            )
        ).run
        second = (
            await stack.evaluator.SubmitEvaluationRun(
                evaluator_pb2.SubmitEvaluationRunRequest(spec=slow, request_id="slow-2")
            )
        ).run
        stream = stack.evaluator.StreamEvaluationRunEvents(
            evaluator_pb2.StreamEvaluationRunEventsRequest(run_id=first.id)
        )
        async for response in stream:  # wait until it really runs
            if "generating with candidate" in response.event.message:
                break
        stream.cancel()
        cancel = await stack.evaluator.CancelEvaluationRun(
            evaluator_pb2.CancelEvaluationRunRequest(run_id=second.id, reason="not needed")
        )
        assert cancel.run.status == common_pb2.JOB_STATUS_CANCELLED
        await stack.evaluator.CancelEvaluationRun(
            evaluator_pb2.CancelEvaluationRunRequest(run_id=first.id, reason="changed my mind")
        )
        first = await stack.run_until_done(first.id)
        assert first.status == common_pb2.JOB_STATUS_CANCELLED
        assert first.error.reason == "CANCELLED" and first.error.message == "changed my mind"
        fact = await _next_fact(failed, events_pb2.EvaluatorRunFailed, first.id)
        assert fact.error.reason == "CANCELLED"

        # the worker skips the cancelled queued run when its request arrives
        await asyncio.sleep(1.0)
        second = await stack.run_until_done(second.id)
        assert second.status == common_pb2.JOB_STATUS_CANCELLED
        statuses = [
            r.event.status
            async for r in stack.evaluator.StreamEvaluationRunEvents(
                evaluator_pb2.StreamEvaluationRunEventsRequest(run_id=second.id)
            )
            if r.event.kind == common_pb2.EVENT_KIND_STATUS
        ]
        assert statuses == [common_pb2.JOB_STATUS_QUEUED, common_pb2.JOB_STATUS_CANCELLED]

        with pytest.raises(grpc.aio.AioRpcError) as finished:
            await stack.evaluator.CancelEvaluationRun(
                evaluator_pb2.CancelEvaluationRunRequest(run_id=first.id)
            )
        assert finished.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stack.evaluator.CancelEvaluationRun(
                evaluator_pb2.CancelEvaluationRunRequest(run_id="eval-nope")
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
