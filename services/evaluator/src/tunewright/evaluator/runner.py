"""One evaluation run: samples from a dataset version's held-out split, answers from the
candidate and every baseline with the same decoding settings, metrics with bootstrap CIs,
paired deltas, the gate's verdict, and the report files.

Transport-free: model versions, dataset versions and training runs are looked up through a
:class:`Lookup` (the service gives it a registry gRPC client); files come from the artifact
store. Generation comes from the `local` generator plugin and runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import json_format

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactRef, ArtifactStore
from tunewright.core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from tunewright.core.model_versions import fetch_chain
from tunewright.core.plugins import Registries
from tunewright.core.splits import read_split_rows
from tunewright.evaluator.comparison import Delta, Metric, MetricValue, paired_delta, score
from tunewright.evaluator.gate import GatePolicy, GateRule, decide
from tunewright.evaluator.report import Report, Sample, render
from tunewright.evaluator.v1 import evaluator_pb2
from tunewright.registry.v1 import registry_pb2

DEFAULT_METRICS = ("rouge_l", "bleu", "token_f1")
Progress = Callable[[str], Awaitable[None]]


class Lookup(Protocol):
    async def model_version(
        self, ref: common_pb2.ModelVersionRef, workspace: str
    ) -> registry_pb2.ModelVersion: ...
    async def dataset_version(
        self, ref: common_pb2.DatasetVersionRef, workspace: str
    ) -> registry_pb2.DatasetVersion: ...
    async def training_run(self, run_id: str) -> registry_pb2.TrainingRun | None: ...


@dataclass(frozen=True)
class Outcome:
    run: evaluator_pb2.EvaluationRun
    files: Mapping[str, ArtifactRef]


def _ref(ref: common_pb2.ArtifactRef) -> ArtifactRef:
    return ArtifactRef.from_uri(
        ref.uri,
        size_bytes=ref.size_bytes or None,
        media_type=ref.media_type or "application/octet-stream",
    )


def _pb_ref(ref: ArtifactRef) -> common_pb2.ArtifactRef:
    return common_pb2.ArtifactRef(
        uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes or 0, media_type=ref.media_type
    )


Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 64
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


def samples_from(rows: Sequence[Mapping[str, Any]]) -> list[tuple[Messages, str]]:
    """(prompt messages, reference answer) for chat rows; prompt/completion rows too."""
    out = []
    for row in rows:
        messages = row.get("messages")
        if isinstance(messages, str):
            messages = json.loads(messages)
        if isinstance(messages, list) and messages and messages[-1].get("role") == "assistant":
            prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
            out.append((prompt, str(messages[-1]["content"])))
        elif "prompt" in row and "completion" in row:
            prompt = (
                row["prompt"]
                if isinstance(row["prompt"], list)
                else [{"role": "user", "content": str(row["prompt"])}]
            )
            completion = row["completion"]
            reference = (
                completion[-1]["content"] if isinstance(completion, list) else str(completion)
            )
            out.append((prompt, reference))
    return out


def policy_from(spec: evaluator_pb2.GatePolicy) -> GatePolicy:
    return GatePolicy(
        rules=tuple(
            GateRule(
                metric=r.metric,
                baseline=r.baseline,
                min_delta=r.min_delta if r.HasField("min_delta") else 0.0,
                ci_excludes_zero=r.ci_excludes_zero,
            )
            for r in spec.rules
        ),
        max_regression=spec.max_regression if spec.HasField("max_regression") else None,
    )


def validate(spec: evaluator_pb2.EvaluationSpec, plugins: Registries) -> None:
    bad = []
    if not (spec.candidate.model.id or spec.candidate.model.model):
        bad.append(FieldViolation("spec.candidate.model", "a registered model version is required"))
    if not (spec.dataset.id or spec.dataset.dataset):
        bad.append(FieldViolation("spec.dataset", "required"))
    if not spec.baselines:
        bad.append(FieldViolation("spec.baselines", "at least one baseline (e.g. the base model)"))
    roles = [b.role for b in spec.baselines]
    if len(set(roles)) != len(roles) or "" in roles or "candidate" in roles:
        bad.append(
            FieldViolation("spec.baselines", "roles must be unique, non-empty, not 'candidate'")
        )
    for i, metric in enumerate(spec.metrics):
        if metric.name not in plugins.metrics:
            bad.append(
                FieldViolation(
                    f"spec.metrics[{i}].name",
                    f"unknown metric; registered: {', '.join(plugins.metrics.names())}",
                )
            )
    names = {m.name for m in spec.metrics} or set(DEFAULT_METRICS)
    for i, rule in enumerate(spec.gate.rules):
        if rule.metric not in names:
            bad.append(
                FieldViolation(f"spec.gate.rules[{i}].metric", "not one of the run's metrics")
            )
        if rule.baseline not in roles:
            bad.append(
                FieldViolation(
                    f"spec.gate.rules[{i}].baseline", f"not a baseline role ({', '.join(roles)})"
                )
            )
    if not spec.gate.rules:
        bad.append(FieldViolation("spec.gate.rules", "a gate needs at least one rule"))
    if bad:
        raise InvalidArgument(
            "invalid evaluation spec", reason="EVALUATION_SPEC_INVALID", field_violations=bad
        )


class Evaluation:
    def __init__(
        self, *, lookup: Lookup, artifacts: ArtifactStore, plugins: Registries, workdir: Path
    ) -> None:
        self.lookup = lookup
        self.artifacts = artifacts
        self.plugins = plugins
        self.workdir = workdir

    def _base(self, uri: str, seed: int) -> Any:
        scheme, _, rest = uri.partition(":")
        if scheme not in self.plugins.base_models:
            raise FailedPrecondition(
                f"no base-model plugin for {uri!r}", reason="UNKNOWN_BASE_MODEL"
            )
        return self.plugins.base_models.get(scheme).factory(rest, seed=seed)

    async def run(
        self, run_id: str, spec: evaluator_pb2.EvaluationSpec, progress: Progress
    ) -> Outcome:
        validate(spec, self.plugins)
        workspace = spec.workspace or "default"
        candidate = await self.lookup.model_version(spec.candidate.model, workspace)
        dataset = await self.lookup.dataset_version(spec.dataset, workspace)
        split = spec.split or ("eval" if "eval" in dataset.splits else "train")
        if split not in dataset.splits:
            raise FailedPrecondition(
                f"dataset version {dataset.id} has no {split!r} split", reason="SPLIT_NOT_FOUND"
            )
        ref = dataset.splits[split]
        samples = samples_from(
            read_split_rows(await self.artifacts.get_bytes(_ref(ref)), ref.media_type)
        )
        if spec.max_samples:
            samples = samples[: spec.max_samples]
        if not samples:
            raise FailedPrecondition(
                f"no chat samples in split {split!r} of {dataset.id}", reason="NO_SAMPLES"
            )
        await progress(
            f"{len(samples)} samples from {dataset.dataset} v{dataset.version} ({split})"
        )

        gen = spec.generation
        decoding = Decoding(
            max_new_tokens=gen.max_new_tokens or 64,
            batch_size=gen.batch_size or 8,
            do_sample=gen.do_sample if gen.HasField("do_sample") else False,
            temperature=gen.temperature if gen.HasField("temperature") else 1.0,
            top_p=gen.top_p if gen.HasField("top_p") else 1.0,
            seed=gen.seed or spec.seed,
        )
        prompts = [p for p, _ in samples]
        references = [r for _, r in samples]
        outputs: dict[str, list[str]] = {}
        versions: dict[str, str] = {"candidate": candidate.id}
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            folders = Path(tmp)

            async def by_id(model_version_id: str) -> registry_pb2.ModelVersion:
                ref = common_pb2.ModelVersionRef(id=model_version_id)
                return await self.lookup.model_version(ref, workspace)

            cand = await fetch_chain(candidate, by_id, self.artifacts, folders)
            # (role, base model, seed, trained folders root first, tokenizer folder)
            plans: list[tuple[str, str, int, list[Path], Path]] = [
                ("candidate", cand.base_model, cand.seed, list(cand.folders), cand.tokenizer)
            ]
            for baseline in spec.baselines:
                if baseline.model.id or baseline.model.model:
                    mv = await self.lookup.model_version(baseline.model, workspace)
                    chain = await fetch_chain(mv, by_id, self.artifacts, folders)
                    versions[baseline.role] = mv.id
                    plans.append(
                        (
                            baseline.role,
                            chain.base_model,
                            chain.seed,
                            list(chain.folders),
                            chain.tokenizer,
                        )
                    )
                else:
                    # the bare base: what the candidate was trained from, with its tokenizer
                    base = baseline.base_model or cand.base_model
                    plans.append((baseline.role, base, cand.seed, [], cand.tokenizer))
            for role, base_uri, seed, chain, tok_dir in plans:
                await progress(f"generating with {role} ({len(samples)} samples)")
                outputs[role] = await asyncio.to_thread(
                    self._answers, base_uri, seed, chain, tok_dir, prompts, decoding
                )

        metrics = self._metrics(spec)
        samples_n = spec.bootstrap_samples or 1000
        values: list[MetricValue] = [
            score(m, role, preds, references, samples=samples_n, seed=spec.seed)
            for m in metrics
            for role, preds in outputs.items()
        ]
        deltas: list[Delta] = [
            paired_delta(
                m,
                b.role,
                outputs["candidate"],
                outputs[b.role],
                references,
                samples=samples_n,
                seed=spec.seed,
            )
            for m in metrics
            for b in spec.baselines
        ]
        verdict = decide(policy_from(spec.gate), deltas)
        await progress(("PASSED: " if verdict.passed else "FAILED: ") + "; ".join(verdict.reasons))

        report = Report(
            run_id=run_id,
            candidate=candidate.id,
            values=values,
            deltas=deltas,
            verdict=verdict,
            samples=[
                Sample(
                    prompt=json.dumps(p, ensure_ascii=False),
                    reference=r,
                    outputs={role: out[i] for role, out in outputs.items()},
                )
                for i, (p, r) in enumerate(samples)
            ],
            loss_curve=await self._loss_curve(candidate),
        )
        files = {}
        for name, data in render(report).items():
            media = {
                "json": "application/json",
                "md": "text/markdown",
                "html": "text/html",
                "png": "image/png",
            }[name.rsplit(".", 1)[1]]
            files[name] = await self.artifacts.put_bytes(data, media)
        return Outcome(self._run_pb(run_id, spec, values, deltas, verdict, versions, files), files)

    def _answers(
        self,
        base_uri: str,
        seed: int,
        chain: list[Path],
        tok_dir: Path,
        prompts: list[Messages],
        decoding: Decoding,
    ) -> list[str]:
        if "local" not in self.plugins.generators:
            raise FailedPrecondition(
                "no 'local' generator plugin is installed", reason="NO_GENERATOR"
            )
        generator = self.plugins.generators.get("local").factory()
        answers = generator.generate(
            base=self._base(base_uri, seed),
            weights=chain,
            tokenizer=tok_dir,
            prompts=prompts,
            max_new_tokens=decoding.max_new_tokens,
            batch_size=decoding.batch_size,
            do_sample=decoding.do_sample,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            seed=decoding.seed,
        )
        return [a[0] for a in answers]

    def _metrics(self, spec: evaluator_pb2.EvaluationSpec) -> list[Metric]:
        out = []
        for ref in spec.metrics or [common_pb2.PluginRef(name=n) for n in DEFAULT_METRICS]:
            entry = self.plugins.metrics.get(ref.name)
            params = json_format.MessageToDict(ref.params) if ref.HasField("params") else {}
            out.append(Metric(ref.name, entry.factory(**params), entry.higher_is_better))
        return out

    async def _loss_curve(self, candidate: registry_pb2.ModelVersion) -> list[tuple[float, float]]:
        if not candidate.training_run_id:
            return []
        run = await self.lookup.training_run(candidate.training_run_id)
        if run is None or not run.metrics_log.uri:
            return []
        curve = []
        for row in read_split_rows(
            await self.artifacts.get_bytes(_ref(run.metrics_log)), "application/jsonl"
        ):
            if "loss" in row and "step" in row:
                curve.append((float(row["step"]), float(row["loss"])))
        return curve

    @staticmethod
    def _run_pb(
        run_id: str,
        spec: evaluator_pb2.EvaluationSpec,
        values: list[MetricValue],
        deltas: list[Delta],
        verdict: Any,
        versions: dict[str, str],
        files: Mapping[str, ArtifactRef],
    ) -> evaluator_pb2.EvaluationRun:
        run = evaluator_pb2.EvaluationRun(
            id=run_id,
            workspace=spec.workspace or "default",
            spec=spec,
            status=common_pb2.JOB_STATUS_SUCCEEDED,
        )
        for role in dict.fromkeys(v.role for v in values):
            run.results.append(
                evaluator_pb2.ModelMetrics(
                    role=role,
                    model_version_id=versions.get(role, ""),
                    metrics=[
                        common_pb2.MetricValue(
                            name=v.metric, value=v.value, ci_low=v.ci_low, ci_high=v.ci_high, n=v.n
                        )
                        for v in values
                        if v.role == role
                    ],
                )
            )
        run.comparisons.extend(
            evaluator_pb2.Comparison(
                metric=d.metric,
                baseline=d.baseline,
                candidate_value=d.candidate_value,
                baseline_value=d.baseline_value,
                delta=d.delta,
                ci_low=d.ci_low,
                ci_high=d.ci_high,
                higher_is_better=d.higher_is_better,
            )
            for d in deltas
        )
        run.verdict.passed = verdict.passed
        run.verdict.reasons.extend(verdict.reasons)
        run.report_json.CopyFrom(_pb_ref(files["report.json"]))
        run.report_html.CopyFrom(_pb_ref(files["report.html"]))
        run.finished_at.GetCurrentTime()
        return run
