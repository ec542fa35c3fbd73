"""One evaluation run: samples from a dataset version's held-out split, answers from the
candidate and every baseline with the same decoding settings, metrics with bootstrap CIs,
paired deltas, the gate's verdict, and the report files.

Metrics come in three kinds (``MetricSpec.needs``): ``outputs`` metrics score the generated
answers against the references; ``model`` metrics score each model itself (perplexity,
preference accuracy, the generation smoke test) with the same rebuilt model the generator
uses; ``judge`` metrics ask the spec's judge (any generator plugin, by name) to compare the
candidate's answers with each baseline's.

Transport-free: model versions, dataset versions and training runs are looked up through a
:class:`Lookup` (the service gives it a registry gRPC client); files come from the artifact
store. Generation comes from the `local` generator plugin and runs in a worker thread, as do
model and judge metrics. ``progress`` is awaited between steps; it may raise to stop the run
(the service raises :class:`RunCancelled` there when the run is cancelled).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactRef, ArtifactStore
from tunewright.core.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    TunewrightError,
)
from tunewright.core.model_versions import base_model, fetch_chain
from tunewright.core.params import plugin_params
from tunewright.core.plugins import Registries
from tunewright.core.registry_client import VersionLookup
from tunewright.core.settings import OutboundSettings
from tunewright.core.splits import read_split_rows
from tunewright.evaluator.comparison import (
    Delta,
    Metric,
    MetricValue,
    judged_delta,
    paired_delta,
    paired_delta_rows,
    score,
    score_rows,
)
from tunewright.evaluator.gate import GatePolicy, GateRule, decide
from tunewright.evaluator.report import Report, Sample, render
from tunewright.evaluator.v1 import evaluator_pb2
from tunewright.registry.v1 import registry_pb2

DEFAULT_METRICS = ("rouge_l", "bleu", "token_f1")
DEFAULT_JUDGE_TOKENS = 64
#: params of the ``local`` judge that name the registered model version it runs; any other
#: judge's params (an endpoint's ``model`` among them) go to its generator factory untouched
LOCAL_JUDGE_MODEL_PARAMS = ("model_version_id", "model", "version", "alias")
Progress = Callable[[str], Awaitable[None]]


class RunCancelled(Exception):
    """Raised from ``progress`` to stop a run between steps."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Lookup(VersionLookup, Protocol):
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
Judge = Callable[[list[Messages]], list[str]]


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 64
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class EvalSample:
    prompt: Messages
    reference: str
    #: the rejected answer of a preference pair (``preference_accuracy`` needs it)
    rejected: str | None = None


def _text(value: Any) -> str:
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return str(value[-1]["content"]) if isinstance(value, list) else str(value)


def _prompt(value: Any) -> Messages:
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if isinstance(value, list):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    return [{"role": "user", "content": str(value)}]


def samples_from(rows: Sequence[Mapping[str, Any]]) -> list[EvalSample]:
    """Chat rows (the last assistant turn is the reference), prompt/completion rows, and
    preference rows (prompt/chosen/rejected: chosen is the reference)."""
    out = []
    for row in rows:
        messages = row.get("messages")
        if isinstance(messages, str):
            messages = json.loads(messages)
        if isinstance(messages, list) and messages and messages[-1].get("role") == "assistant":
            out.append(EvalSample(_prompt(messages[:-1]), str(messages[-1]["content"])))
        elif "prompt" in row and "chosen" in row and "rejected" in row:
            out.append(
                EvalSample(_prompt(row["prompt"]), _text(row["chosen"]), _text(row["rejected"]))
            )
        elif "prompt" in row and "completion" in row:
            out.append(EvalSample(_prompt(row["prompt"]), _text(row["completion"])))
    return out


@dataclass(frozen=True)
class ModelPlan:
    """How to rebuild one evaluated model: the generator's arguments plus its method."""

    role: str
    base_model: str
    seed: int
    weights: list[Path]  # trained folders, root first; empty for a bare base model
    tokenizer: Path
    method: str  # training method of the version ("" for a bare base model)


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


def validate(
    spec: evaluator_pb2.EvaluationSpec,
    plugins: Registries,
    outbound: OutboundSettings | None = None,
) -> None:
    """Every fault of ``spec`` at once; a judge's params (its ``base_url`` against the
    operator's ``outbound`` allow-lists among them) are checked by its generator's factory."""
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
            continue
        try:  # factories are cheap (libraries load lazily); bad params fail the submission
            plugins.metrics.get(metric.name).factory(**_params(metric))
        except InvalidArgument as exc:  # params with no JSON form (NaN, Infinity)
            bad.append(FieldViolation(f"spec.metrics[{i}].params", exc.message[:300]))
        except (TypeError, ValueError) as exc:
            bad.append(FieldViolation(f"spec.metrics[{i}].params", str(exc)[:300]))
    needs = {plugins.metrics.get(m.name).needs for m in spec.metrics if m.name in plugins.metrics}
    if "judge" in needs:
        judge = spec.judge
        if not judge.name:
            bad.append(FieldViolation("spec.judge.name", "a judge metric needs a judge generator"))
        elif judge.name not in plugins.generators:
            bad.append(
                FieldViolation(
                    "spec.judge.name",
                    f"unknown generator; registered: {', '.join(plugins.generators.names())}",
                )
            )
        else:
            try:
                model, params = _judge_params(judge)
            except InvalidArgument as exc:  # NaN / Infinity have no JSON form
                bad.append(FieldViolation("spec.judge.params", exc.message[:300]))
                model, params = {}, {}
            if judge.name == "local" and not (model.get("model_version_id") or model.get("model")):
                bad.append(
                    FieldViolation(
                        "spec.judge.params",
                        "the local judge runs a registered model version: give "
                        "model_version_id, or model with version or alias",
                    )
                )
            try:  # generator factories are cheap and check their params (no request is made)
                plugins.generators.get(judge.name).factory(**params, **_outbound(outbound))
            except TunewrightError as exc:
                bad.append(FieldViolation("spec.judge.params", exc.message[:300]))
            except (TypeError, ValueError) as exc:
                bad.append(FieldViolation("spec.judge.params", str(exc)[:300]))
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
        # the fields in the message too: a stage's stated reason carries only the message
        reasons = "; ".join(f"{v.field}: {v.description}" for v in bad)
        raise InvalidArgument(
            f"invalid evaluation spec: {reasons}",
            reason="EVALUATION_SPEC_INVALID",
            field_violations=bad,
        )


def _outbound(outbound: OutboundSettings | None) -> dict[str, Any]:
    """``outbound=`` for a generator factory, when the service has a policy to hand over."""
    return {} if outbound is None else {"outbound": outbound}


def _params(ref: common_pb2.PluginRef) -> dict[str, Any]:
    return plugin_params(ref, "params")


def _judge_params(judge: common_pb2.PluginRef) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the registered model version the ``local`` judge runs, the generator factory's params).

    ``max_new_tokens`` (the reply budget) is the evaluator's for every judge; only the
    ``local`` judge's model keys name a registry version, since a remote judge's ``model`` is
    the name its endpoint serves.
    """
    params = _params(judge)
    params.pop("max_new_tokens", None)
    keys = LOCAL_JUDGE_MODEL_PARAMS if judge.name == "local" else ()
    model = {k: params.pop(k) for k in keys if k in params}
    return model, params


class Evaluation:
    def __init__(
        self,
        *,
        lookup: Lookup,
        artifacts: ArtifactStore,
        plugins: Registries,
        workdir: Path,
        outbound: OutboundSettings | None = None,
    ) -> None:
        self.lookup = lookup
        self.artifacts = artifacts
        self.plugins = plugins
        self.workdir = workdir
        self.outbound = outbound  # the operator's allowed destinations (settings.outbound)

    def _base(self, uri: str, seed: int) -> Any:
        return base_model(self.plugins.base_models, uri, seed)

    async def run(
        self, run_id: str, spec: evaluator_pb2.EvaluationSpec, progress: Progress
    ) -> Outcome:
        validate(spec, self.plugins, self.outbound)
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
        prompts = [s.prompt for s in samples]
        references = [s.reference for s in samples]
        outputs: dict[str, list[str]] = {}
        versions: dict[str, str] = {"candidate": candidate.id}
        metrics = self._metrics(spec)
        boot = {"samples": spec.bootstrap_samples or 1000, "seed": spec.seed}
        values: list[MetricValue] = []
        deltas: list[Delta] = []
        details: dict[tuple[str, str], dict[str, float]] = {}
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            folders = Path(tmp)

            async def by_id(model_version_id: str) -> registry_pb2.ModelVersion:
                ref = common_pb2.ModelVersionRef(id=model_version_id)
                return await self.lookup.model_version(ref, workspace)

            cand = await fetch_chain(candidate, by_id, self.artifacts, folders)
            plans = [
                ModelPlan(
                    "candidate",
                    cand.base_model,
                    cand.seed,
                    list(cand.folders),
                    cand.tokenizer,
                    candidate.method,
                )
            ]
            for baseline in spec.baselines:
                if baseline.model.id or baseline.model.model:
                    mv = await self.lookup.model_version(baseline.model, workspace)
                    chain = await fetch_chain(mv, by_id, self.artifacts, folders)
                    versions[baseline.role] = mv.id
                    plans.append(
                        ModelPlan(
                            baseline.role,
                            chain.base_model,
                            chain.seed,
                            list(chain.folders),
                            chain.tokenizer,
                            mv.method,
                        )
                    )
                else:
                    # the bare base: what the candidate was trained from, with its tokenizer
                    base = baseline.base_model or cand.base_model
                    plans.append(ModelPlan(baseline.role, base, cand.seed, [], cand.tokenizer, ""))
            for plan in plans:
                await progress(f"generating with {plan.role} ({len(samples)} samples)")
                outputs[plan.role] = await asyncio.to_thread(self._answers, plan, prompts, decoding)

            judge: Judge | None = None  # built at the first judge metric
            for m in metrics:
                if m.needs == "outputs":
                    values += [
                        score(m, role, preds, references, **boot) for role, preds in outputs.items()
                    ]
                    deltas += [
                        paired_delta(
                            m, b.role, outputs["candidate"], outputs[b.role], references, **boot
                        )
                        for b in spec.baselines
                    ]
                elif m.needs == "model":
                    rows: dict[str, list[list[float]]] = {}
                    for plan in plans:
                        await progress(f"scoring {m.name} of {plan.role}")
                        rows[plan.role] = await asyncio.to_thread(
                            self._score_model, m, plan, samples, decoding
                        )
                    values += [score_rows(m, role, r, **boot) for role, r in rows.items()]
                    deltas += [
                        paired_delta_rows(m, b.role, rows["candidate"], rows[b.role], **boot)
                        for b in spec.baselines
                    ]
                else:  # judge
                    judge = judge or await self._judge(spec, workspace, by_id, folders, decoding)
                    for b in spec.baselines:
                        await progress(f"judging candidate vs {b.role} with {spec.judge.name}")
                        judged = await asyncio.to_thread(
                            self._judged,
                            m,
                            judge,
                            samples,
                            outputs["candidate"],
                            outputs[b.role],
                        )
                        deltas.append(judged_delta(m, b.role, judged, **boot))
                        if hasattr(m.fn, "details"):
                            details[(m.name, b.role)] = dict(m.fn.details(judged))

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
                    prompt=json.dumps(s.prompt, ensure_ascii=False),
                    reference=s.reference,
                    outputs={role: out[i] for role, out in outputs.items()},
                )
                for i, s in enumerate(samples)
            ],
            loss_curve=await self._loss_curve(candidate),
            details={f"{metric}/{role}": d for (metric, role), d in details.items()},
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
        run = self._run_pb(run_id, spec, values, deltas, verdict, versions, files)
        for comparison in run.comparisons:
            comparison.details.update(details.get((comparison.metric, comparison.baseline), {}))
        return Outcome(run, files)

    def _generator(self, name: str, params: Mapping[str, Any] | None = None) -> Any:
        if name not in self.plugins.generators:
            raise FailedPrecondition(
                f"no {name!r} generator plugin is installed", reason="NO_GENERATOR"
            )
        return self.plugins.generators.get(name).factory(
            **(params or {}), **_outbound(self.outbound)
        )

    def _answers(self, plan: ModelPlan, prompts: list[Messages], decoding: Decoding) -> list[str]:
        answers = self._generator("local").generate(
            base=self._base(plan.base_model, plan.seed),
            weights=plan.weights,
            tokenizer=plan.tokenizer,
            prompts=prompts,
            max_new_tokens=decoding.max_new_tokens,
            batch_size=decoding.batch_size,
            do_sample=decoding.do_sample,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            seed=decoding.seed,
        )
        return [a[0] for a in answers]

    @staticmethod
    def _call_metric(metric: Metric, call: Callable[[], Any]) -> Any:
        # a metric refusing its inputs (no preference pairs, bad params) fails the run clearly
        try:
            return call()
        except ValueError as exc:
            raise FailedPrecondition(
                f"metric {metric.name}: {exc}", reason="METRIC_FAILED"
            ) from exc

    def _score_model(
        self, metric: Metric, plan: ModelPlan, samples: list[EvalSample], decoding: Decoding
    ) -> list[list[float]]:
        return self._call_metric(  # type: ignore[no-any-return]
            metric,
            lambda: metric.fn.score_model(
                base=self._base(plan.base_model, plan.seed),
                weights=plan.weights,
                tokenizer=plan.tokenizer,
                method=plan.method,
                prompts=[s.prompt for s in samples],
                references=[s.reference for s in samples],
                rejected=[s.rejected for s in samples],
                max_new_tokens=decoding.max_new_tokens,
                batch_size=decoding.batch_size,
            ),
        )

    def _judged(
        self,
        metric: Metric,
        judge: Judge,
        samples: list[EvalSample],
        candidate: list[str],
        baseline: list[str],
    ) -> list[list[float]]:
        return self._call_metric(  # type: ignore[no-any-return]
            metric,
            lambda: metric.fn.judge(
                prompts=[s.prompt for s in samples],
                references=[s.reference for s in samples],
                candidate=candidate,
                baseline=baseline,
                judge=judge,
            ),
        )

    async def _judge(
        self,
        spec: evaluator_pb2.EvaluationSpec,
        workspace: str,
        by_id: Callable[[str], Awaitable[registry_pb2.ModelVersion]],
        folders: Path,
        decoding: Decoding,
    ) -> Judge:
        """The judge as ``judge(prompts) -> replies``: the named generator plugin; the
        ``local`` one runs the registered model version its params name, any other gets its
        params as they are (``openai-compatible``: ``base_url``, ``model``, ...)."""
        max_new_tokens = int(_params(spec.judge).get("max_new_tokens", DEFAULT_JUDGE_TOKENS))
        model, params = _judge_params(spec.judge)
        base, weights, tokenizer = None, [], None
        if model.get("model_version_id") or model.get("model"):
            ref = common_pb2.ModelVersionRef(
                id=str(model.get("model_version_id", "")),
                model=str(model.get("model", "")),
                version=int(model.get("version", 0) or 0),
                alias=str(model.get("alias", "")),
            )
            mv = await self.lookup.model_version(ref, workspace)
            chain = await fetch_chain(mv, by_id, self.artifacts, folders)
            base = self._base(chain.base_model, chain.seed)
            weights, tokenizer = list(chain.folders), chain.tokenizer
        generator = self._generator(spec.judge.name, params)

        def judge(prompts: list[Messages]) -> list[str]:
            replies = generator.generate(
                base=base,
                weights=weights,
                tokenizer=tokenizer,
                prompts=prompts,
                max_new_tokens=max_new_tokens,
                batch_size=decoding.batch_size,
                do_sample=False,
                temperature=1.0,
                top_p=1.0,
                seed=decoding.seed,
            )
            return [r[0] if r else "" for r in replies]

        return judge

    def _metrics(self, spec: evaluator_pb2.EvaluationSpec) -> list[Metric]:
        out = []
        for ref in spec.metrics or [common_pb2.PluginRef(name=n) for n in DEFAULT_METRICS]:
            entry = self.plugins.metrics.get(ref.name)
            fn = entry.factory(**_params(ref))  # params were checked by validate()
            out.append(Metric(ref.name, fn, entry.higher_is_better, entry.needs))
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
