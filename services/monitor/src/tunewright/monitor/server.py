"""The monitor service process: ``tunewright-monitor`` or ``python -m tunewright.monitor.server``.

Production traffic in, drift detections out:

1. Interactions arrive as ``tw.traffic.interaction.logged`` events (or through ``LogInteraction``,
   which publishes the same event). The ``monitor-traffic`` durable collects them into windows
   per model version; a closed window goes to ingest as a JSONL artifact with an
   ``tw.ingest.dataset.requested`` event (job id = window id), and only then are its messages
   acknowledged. Raw text therefore lives in the bounded TW_TRAFFIC stream and in the upload,
   which the monitor deletes once ingest has finished the window's job (ingest deletes only
   uploads it made itself), never in the monitor's own state.
2. Ingest scrubs PII and publishes ``tw.ingest.dataset.curated``; the ``monitor-facts`` durable
   reads the scrubbed window back and runs the drift detector plugins on it against the
   model's training data (registry lineage) and its first windows.
3. A window flagged by enough detectors is a detection: ``tw.monitor.drift.detected`` with the
   evidence, and, when the policy says retrain, ``tw.pipeline.run.requested`` for the
   retraining pipeline (trigger_event_id = detection id), which the registry runs.
4. Optionally a canary evaluation of every watched model on a schedule
   (``tw.evaluator.run.requested``); a failed gate verdict is a detection too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from google.protobuf import json_format

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef
from tunewright.core.bus import Delivery, UndecodableMessage, event_meta
from tunewright.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tunewright.core.ids import stable_id
from tunewright.core.registry_client import RegistryClient
from tunewright.core.service import Consumer, GrpcBinding, ServiceContext, ServiceDefinition
from tunewright.core.service import main as run_service_main
from tunewright.core.splits import read_split_rows
from tunewright.evaluator.v1 import evaluator_pb2
from tunewright.events.v1 import events_pb2
from tunewright.ingest.v1 import ingest_pb2
from tunewright.monitor import analysis, convert, policy, traffic
from tunewright.monitor.settings import MonitorSettings
from tunewright.monitor.store import Detection, MonitorStore, Window
from tunewright.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from tunewright.monitor.windows import WindowBuffer
from tunewright.registry.v1 import registry_pb2

SERVICE_NAME = monitor_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name
PRODUCER = "monitor"
JSONL = "application/jsonl"
# parents of a model version whose training data also counts as its reference
MAX_LINEAGE_DEPTH = 5
ROW_CACHE_WINDOWS = 32
# model versions whose training rows are kept in memory (least recently used go)
TRAINING_CACHE_MODELS = 8
log = logging.getLogger(__name__)

Row = dict[str, Any]


class Monitor:
    def __init__(self, context: ServiceContext[MonitorSettings]) -> None:
        self.context = context
        self.settings = context.settings.monitor
        self.store = MonitorStore(context.settings.data_dir / "monitor" / "monitor.db")
        context.closers.append(self.store.close)
        self.registry = RegistryClient(self.settings.registry_address, context.settings.grpc)
        registry = context.plugins.registries.drift_detectors
        self.detectors = [
            analysis.NamedDetector(d.name, registry.get(d.name).factory(**d.params))
            for d in self.settings.detectors
        ]
        self.windows = WindowBuffer(
            size=self.settings.window.size,
            max_wait_s=self.settings.window.max_wait_s,
            close=self.close_window,
            capacity=self.traffic_concurrency,
        )
        if self.settings.canary.enabled:
            canary_spec(self.settings.canary.spec, "check")  # a bad spec stops start-up
        self._training: OrderedDict[str, list[Row]] = OrderedDict()
        # traffic events acked without use (incomplete or undecodable), by reason
        self.dropped: dict[str, int] = {}
        # scrubbed rows of recent windows (baseline windows are read again when evicted)
        self._rows: OrderedDict[str, list[Row]] = OrderedDict()

    # --- 1. traffic -> windows -> ingest ---

    @property
    def traffic_concurrency(self) -> int:
        """Handlers of ``monitor-traffic`` at once: each waits until its window is closed."""
        return self.settings.window.size

    async def on_traffic(self, delivery: Delivery) -> None:
        try:
            event = delivery.decode(events_pb2.TrafficInteractionLogged)
        except UndecodableMessage:
            self._drop("UNDECODABLE")
            return
        missing = [
            name
            for name in ("interaction_id", "model_version_id", "prompt")
            if not getattr(event, name)
        ]
        if missing:
            # acked and dropped: a dead letter would keep the raw text for the DLQ's lifetime
            self._drop("MISSING_" + "_".join(m.upper() for m in missing))
            return
        workspace = event.meta.workspace or delivery.workspace or "default"
        await self.windows.add(workspace, convert.interaction_from_event(event))

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        log.warning(
            "invalid traffic event dropped reason=%s dropped_total=%d",
            reason,
            sum(self.dropped.values()),
        )

    async def close_window(
        self, workspace: str, model_version_id: str, items: list[traffic.Interaction]
    ) -> None:
        window_id = stable_id(
            "win", workspace, model_version_id, *sorted(i.interaction_id for i in items)
        )
        existing = self.store.window(window_id)
        if existing is not None and existing.status != "pending":
            # a redelivered window ingest has already finished: uploading its raw text again
            # would leave a copy nobody deletes
            log.info("traffic window already handed over window_id=%s", window_id)
            return
        times = sorted(i.at for i in items if i.at)
        data = traffic.window_jsonl(items, self.settings.window.attributes)
        # ours to delete only if this put creates it: the store is content-addressed and shared
        existed = await self.context.artifacts.exists(ArtifactRef(hashlib.sha256(data).hexdigest()))
        ref = await self.context.artifacts.put_bytes(data, JSONL)
        if not existed:
            self.store.own_upload(window_id, ref.sha256)
        added = self.store.add_window(
            Window(
                id=window_id,
                workspace=workspace,
                model_version_id=model_version_id,
                status="pending",
                interactions=len(items),
                window_start=times[0] if times else "",
                window_end=times[-1] if times else "",
            )
        )
        spec = ingest_pb2.IngestSpec(
            origin=registry_pb2.DATASET_SOURCE_TRAFFIC,
            workspace=workspace,
            dataset=f"traffic-{model_version_id}",
            source=common_pb2.ArtifactRef(
                uri=ref.uri, sha256=ref.sha256, size_bytes=len(data), media_type=JSONL
            ),
            file_format=ingest_pb2.FILE_FORMAT_JSONL,
            record_format=ingest_pb2.RECORD_FORMAT_MESSAGES,
            kind=common_pb2.DATASET_KIND_SFT,
            # traffic is what happened: repeats and short refusals are signal, not noise
            dedup=ingest_pb2.DedupPolicy(exact=False, near=False),
            split=ingest_pb2.SplitSpec(eval_fraction=0.0),
            filters=[_pass_through_filter()],
            labels={"source": "traffic", "window_id": window_id},
        )
        try:
            await self.context.bus.publish(
                subjects.INGEST_DATASET_REQUESTED,
                events_pb2.IngestDatasetRequested(
                    meta=event_meta(producer=PRODUCER, workspace=workspace),
                    job_id=window_id,
                    spec=spec,
                ),
                key=window_id,
            )
        except BaseException:
            if added:
                # nobody will delete an upload no ingest job names; the redelivered window
                # starts again from nothing (a pending window from an earlier try may have a
                # job in flight that owns the same content-addressed upload: left alone)
                self.store.drop_pending_window(window_id)
                if not existed:
                    with contextlib.suppress(Exception):
                        await self.context.artifacts.delete(ref)
                    self.store.forget_upload(window_id)
            raise
        log.info(
            "traffic window closed window_id=%s model_version_id=%s interaction_count=%s",
            window_id,
            model_version_id,
            len(items),
        )

    # --- 2. scrubbed windows -> detectors ---

    async def _delete_window_upload(self, window_id: str) -> None:
        """Ingest has finished the window's job: its raw upload goes (if the monitor put it)."""
        sha256 = self.store.owned_upload(window_id)
        if sha256 is None:
            return
        await self.context.artifacts.delete(ArtifactRef(sha256))
        self.store.forget_upload(window_id)
        log.info("raw window upload deleted window_id=%s", window_id)

    async def on_fact(self, delivery: Delivery) -> None:
        message = delivery.decode()
        if isinstance(message, events_pb2.IngestDatasetCurated | events_pb2.IngestDatasetRejected):
            # first: raw text goes as soon as ingest is done with it, whatever comes next
            await self._delete_window_upload(message.job_id)
        if isinstance(message, events_pb2.IngestDatasetCurated):
            window = self.store.window(message.job_id)
            if window is not None and window.status == "pending":
                try:
                    await self.analyse_window(window, message.dataset_version)
                except FailedPrecondition as exc:
                    if exc.reason != "REGISTRY_UNAVAILABLE":
                        raise
                    # the fact comes back with the consumer's backoff instead of dead-lettering
                    raise Unavailable(exc.message, reason=exc.reason) from None
        elif isinstance(message, events_pb2.IngestDatasetRejected):
            window = self.store.window(message.job_id)
            if window is not None and window.status == "pending":
                self.store.finish_window(
                    window.id, status="failed", error=message.error.reason or "REJECTED"
                )
        elif isinstance(message, events_pb2.EvaluatorRunCompleted):
            await self.on_canary(message.run)
        elif isinstance(message, events_pb2.EvaluatorRunFailed):
            if self.store.canary_model(message.run_id) is not None:
                self.store.finish_canary(message.run_id, "failed")

    async def analyse_window(self, window: Window, dataset_version: Any) -> None:
        splits = [[ref.uri, ref.media_type] for _, ref in sorted(dataset_version.splits.items())]
        current = await self._window_rows(window.id, splits)
        if len(current) < self.settings.window.min_size:
            self.store.finish_window(
                window.id, status="small", dataset_version_id=dataset_version.id, splits=splits
            )
            return
        training = await self._training_rows(window.workspace, window.model_version_id)
        earlier = [
            w
            for w in self.store.windows(window.model_version_id)
            if w.id != window.id and w.status in ("baseline", "analysed")
        ]
        baseline_windows = [w for w in earlier if w.status == "baseline"]
        is_baseline = len(baseline_windows) < self.settings.baseline_windows
        baseline: list[Row] = []
        for w in baseline_windows:
            baseline += await self._window_rows(w.id, w.splits)
        results = await asyncio.to_thread(
            analysis.analyse,
            self.detectors,
            training=training,
            baseline=baseline or None,
            current=current,
            family_alpha=self.settings.family_alpha,
        )
        detection_id = ""
        window.dataset_version_id = dataset_version.id
        if analysis.drifted(results, self.settings.policy.min_detectors):
            detection_id = stable_id("drift", window.id)
            window.splits = splits
            recent = [*earlier, window][-self.settings.policy.negative_windows :]
            await self.detect(window, detection_id, results, recent)
        self.store.finish_window(
            window.id,
            # a drifted window never becomes the reference of later ones
            status="baseline" if is_baseline and not detection_id else "analysed",
            dataset_version_id=dataset_version.id,
            splits=splits,
            results=results,
            detection_id=detection_id,
        )
        log.info(
            "traffic window analysed window_id=%s model_version_id=%s detection_id=%s",
            window.id,
            window.model_version_id,
            detection_id or "none",
        )

    # --- 3. detections -> policy ---

    async def detect(
        self, window: Window, detection_id: str, results: list[Row], recent: list[Window]
    ) -> None:
        decision = policy.decide(
            self.settings.policy, self.store.last_retraining(window.model_version_id)
        )
        run_id = ""
        if decision.action == "retrain":
            rows: list[Row] = []
            for w in reversed(recent):  # newest first
                rows += await self._window_rows(w.id, w.splits)
            run_id = await self.request_retraining(window, detection_id, rows)
        else:
            log.info("drift policy: %s detection_id=%s", decision.reason, detection_id)
        detection = Detection(
            id=detection_id,
            workspace=window.workspace,
            model_version_id=window.model_version_id,
            window_id=window.id,
            results=results,
            action="retrain" if run_id else "alert",
            pipeline_run_id=run_id,
        )
        await self.context.bus.publish(
            subjects.MONITOR_DRIFT_DETECTED,
            convert.detection_event(
                detection,
                window,
                event_meta(producer=PRODUCER, workspace=window.workspace, event_id=detection_id),
            ),
            key=detection_id,
        )
        self.store.add_detection(detection)
        log.warning(
            "drift detected detection_id=%s model_version_id=%s action=%s run_id=%s",
            detection_id,
            window.model_version_id,
            detection.action,
            run_id or "none",
        )

    async def request_retraining(self, window: Window, detection_id: str, rows: list[Row]) -> str:
        data, count = traffic.negatives_jsonl(rows, self.settings.policy.max_negatives)
        if count < self.settings.policy.min_negatives:
            log.warning(
                "too few negative interactions to review detection_id=%s negatives=%d min=%d",
                detection_id,
                count,
                self.settings.policy.min_negatives,
            )
            return ""
        ref = await self.context.artifacts.put_bytes(data, JSONL)
        model = await self.registry.model_version(
            common_pb2.ModelVersionRef(id=window.model_version_id), window.workspace
        )
        run_id = stable_id("pipe", "retrain", detection_id)
        await self.context.bus.publish(
            subjects.PIPELINE_RUN_REQUESTED,
            events_pb2.PipelineRunRequested(
                meta=event_meta(producer=PRODUCER, workspace=window.workspace),
                run_id=run_id,
                spec_yaml=policy.pipeline_yaml(self.settings.policy),
                parameters={
                    "negatives": ref.uri,
                    "production_model": window.model_version_id,
                    "model_name": model.model,
                    # the trainer rebuilds the production model from its base + trained folders
                    "base_model": model.base_model,
                    "feedback_backend": self.settings.policy.feedback_backend,
                    "detection_id": detection_id,
                },
                requested_by=f"monitor:{detection_id}",
                trigger_event_id=detection_id,
            ),
            key=run_id,
        )
        return run_id

    # --- 4. canary evaluations ---

    async def canary_loop(self) -> None:
        canary = self.settings.canary
        while True:
            period = str(int(time.time() // canary.interval_s))
            for workspace, model_version_id in self.store.watched_models():
                run_id = stable_id("canary", workspace, model_version_id, period)
                if not self.store.add_canary(run_id, workspace, model_version_id):
                    continue
                spec = canary_spec(canary.spec, model_version_id)
                spec.workspace = spec.workspace or workspace
                await self.context.bus.publish(
                    subjects.EVALUATOR_RUN_REQUESTED,
                    events_pb2.EvaluatorRunRequested(
                        meta=event_meta(producer=PRODUCER, workspace=workspace),
                        run_id=run_id,
                        spec=spec,
                    ),
                    key=run_id,
                )
            await asyncio.sleep(canary.interval_s)

    async def on_canary(self, run: evaluator_pb2.EvaluationRun) -> None:
        model_version_id = self.store.canary_model(run.id)
        if model_version_id is None:
            return  # not a canary of ours, or already handled
        passed = run.verdict.passed
        self.store.finish_canary(run.id, "passed" if passed else "failed_gate")
        if passed:
            return
        window = Window(
            id="",
            workspace=run.workspace or "default",
            model_version_id=model_version_id,
            status="canary",
            interactions=0,
            window_start="",
            window_end="",
        )
        result = {
            "detector": "canary",
            "baseline": "evaluation",
            "statistic": 0.0,
            "p_value": 0.0,
            "alpha": 0.0,
            "drifted": True,
            "summary": "canary evaluation failed its gate: " + "; ".join(run.verdict.reasons),
            "evidence": {"evaluation_id": run.id, "reasons": list(run.verdict.reasons)},
        }
        await self.detect(window, stable_id("drift", "canary", run.id), [result], [])

    # --- reading scrubbed rows ---

    async def _window_rows(self, window_id: str, splits: list[list[str]]) -> list[Row]:
        if window_id not in self._rows:
            rows: list[Row] = []
            for uri, media_type in splits:
                data = await self.context.artifacts.get_bytes(ArtifactRef.from_uri(uri))
                rows += [
                    r
                    for r in map(traffic.detector_row, read_split_rows(data, media_type))
                    if r is not None
                ]
            self._rows[window_id] = rows
            while len(self._rows) > ROW_CACHE_WINDOWS:
                self._rows.popitem(last=False)
        self._rows.move_to_end(window_id)
        return self._rows[window_id]

    async def _training_rows(self, workspace: str, model_version_id: str) -> list[Row]:
        """Rows of the training data of the model version and its ancestors (sampled), less
        the synthetic ones (:func:`traffic.reference_rows`)."""
        if model_version_id in self._training:
            self._training.move_to_end(model_version_id)
            return self._training[model_version_id]
        rows: list[Row] = []
        next_id, depth = model_version_id, 0
        while next_id and depth < MAX_LINEAGE_DEPTH:
            try:
                model = await self.registry.model_version(
                    common_pb2.ModelVersionRef(id=next_id), workspace
                )
            except NotFound:
                break
            for dataset_id in model.dataset_version_ids:
                version = await self.registry.dataset_version(
                    common_pb2.DatasetVersionRef(id=dataset_id), workspace
                )
                ref = version.splits.get("train")
                if ref is None:
                    continue
                data = await self.context.artifacts.get_bytes(ArtifactRef.from_uri(ref.uri))
                rows += traffic.reference_rows(read_split_rows(data, ref.media_type))
            next_id, depth = model.parent_model_version_id, depth + 1
        limit = self.settings.max_reference_rows
        if len(rows) > limit:
            picks = np.random.default_rng(0).choice(len(rows), size=limit, replace=False)
            rows = [rows[int(i)] for i in sorted(picks)]
        self._training[model_version_id] = rows
        while len(self._training) > TRAINING_CACHE_MODELS:
            self._training.popitem(last=False)
        return rows


def canary_spec(spec: dict[str, Any], model_version_id: str) -> evaluator_pb2.EvaluationSpec:
    """The canary's EvaluationSpec with ``${model}`` replaced; a bad spec is InvalidArgument."""
    text = json.dumps(spec).replace("${model}", model_version_id)
    try:
        return json_format.Parse(text, evaluator_pb2.EvaluationSpec())
    except json_format.ParseError as exc:
        raise InvalidArgument(f"monitor.canary.spec is not an EvaluationSpec: {exc}") from None


def _pass_through_filter() -> common_pb2.PluginRef:
    ref = common_pb2.PluginRef(name="length")
    ref.params.update({"min_chars": 0, "min_response_chars": 0})
    return ref


class MonitorServicer(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    async def _publish(self, workspace: str, item: monitor_pb2.Interaction, where: str) -> None:
        convert.check_interaction(item, where)
        workspace = workspace or "default"
        event = convert.event_from_interaction(
            item, event_meta(producer=PRODUCER, workspace=workspace)
        )
        await self.monitor.context.bus.publish(
            subjects.TRAFFIC_INTERACTION_LOGGED,
            event,
            key=f"{workspace}/{item.interaction_id}",
            workspace=workspace,
        )

    async def LogInteraction(self, request: Any, context: Any) -> Any:
        await self._publish(request.workspace, request.interaction, "interaction")
        return monitor_pb2.LogInteractionResponse(interaction_id=request.interaction.interaction_id)

    async def LogInteractions(self, request: Any, context: Any) -> Any:
        for i, item in enumerate(request.interactions):
            convert.check_interaction(item, f"interactions[{i}]")
        for i, item in enumerate(request.interactions):
            await self._publish(request.workspace, item, f"interactions[{i}]")
        return monitor_pb2.LogInteractionsResponse(accepted=len(request.interactions))

    async def GetDriftReport(self, request: Any, context: Any) -> Any:
        if not request.model_version_id:
            raise InvalidArgument("model_version_id is required")
        windows = self.monitor.store.windows(request.model_version_id)
        return monitor_pb2.GetDriftReportResponse(windows=[convert.window_pb(w) for w in windows])

    async def ListDetections(self, request: Any, context: Any) -> Any:
        size = min(request.page.page_size or 50, 1000)
        try:
            offset = int(request.page.page_token or 0)
        except ValueError:
            raise InvalidArgument("page.page_token is not a token from this API") from None
        rows = self.monitor.store.detections(
            workspace=request.workspace,
            model_version_id=request.model_version_id,
            limit=size + 1,
            offset=offset,
        )
        token = str(offset + size) if len(rows) > size else ""
        return monitor_pb2.ListDetectionsResponse(
            detections=[convert.detection_pb(d) for d in rows[:size]],
            page=common_pb2.PageResponse(next_page_token=token),
        )


def _monitor(context: ServiceContext[MonitorSettings]) -> Monitor:
    existing = context.resources.get("monitor")
    if isinstance(existing, Monitor):
        return existing
    app = Monitor(context)
    context.resources["monitor"] = app
    return app


def grpc_bindings(context: ServiceContext[MonitorSettings]) -> list[GrpcBinding]:
    servicer = MonitorServicer(_monitor(context))
    return [
        GrpcBinding(monitor_pb2_grpc.add_MonitorServiceServicer_to_server, servicer, SERVICE_NAME)
    ]


def consumers(context: ServiceContext[MonitorSettings]) -> list[Consumer]:
    app = _monitor(context)
    return [
        # every interaction of an open window waits in its handler until the window is closed
        Consumer("monitor-traffic", app.on_traffic, concurrency=app.traffic_concurrency),
        Consumer("monitor-facts", app.on_fact),
    ]


def background(context: ServiceContext[MonitorSettings]) -> list[Callable[[], Awaitable[None]]]:
    app = _monitor(context)
    return [app.canary_loop] if app.settings.canary.enabled else []


DEFINITION = ServiceDefinition(
    name="monitor",
    settings_cls=MonitorSettings,
    grpc=grpc_bindings,
    consumers=consumers,
    background=background,
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
