"""Protobuf <-> monitor domain objects, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from tunewright.core.errors import FieldViolation, InvalidArgument
from tunewright.events.v1 import events_pb2
from tunewright.monitor.store import Detection, Window
from tunewright.monitor.traffic import Interaction
from tunewright.monitor.v1 import monitor_pb2


def _iso(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToDatetime().isoformat() + "Z" if ts.seconds or ts.nanos else ""


def timestamp(iso: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if iso:
        ts.FromDatetime(datetime.fromisoformat(iso.replace("Z", "+00:00")))
    return ts


def interaction_from_event(event: events_pb2.TrafficInteractionLogged) -> Interaction:
    return Interaction(
        interaction_id=event.interaction_id,
        model_version_id=event.model_version_id,
        prompt=event.prompt,
        response=event.response,
        thumbs=event.feedback.thumbs,
        escalated=event.feedback.escalated,
        resolved=event.feedback.resolved,
        at=_iso(event.at),
        attributes=dict(event.attributes),
    )


def check_interaction(item: monitor_pb2.Interaction, where: str) -> None:
    bad = [
        FieldViolation(f"{where}.{name}", "required")
        for name in ("interaction_id", "model_version_id", "prompt")
        if not getattr(item, name)
    ]
    if item.feedback.thumbs not in (-1, 0, 1):
        bad.append(FieldViolation(f"{where}.feedback.thumbs", "must be -1, 0 or +1"))
    if bad:
        raise InvalidArgument(f"invalid interaction at {where}", field_violations=bad)


def event_from_interaction(
    item: monitor_pb2.Interaction, meta: Any
) -> events_pb2.TrafficInteractionLogged:
    event = events_pb2.TrafficInteractionLogged(
        meta=meta,
        interaction_id=item.interaction_id,
        model_version_id=item.model_version_id,
        prompt=item.prompt,
        response=item.response,
        attributes=dict(item.attributes),
    )
    event.feedback.CopyFrom(
        events_pb2.InteractionFeedback(
            thumbs=item.feedback.thumbs,
            resolved=item.feedback.resolved,
            escalated=item.feedback.escalated,
            comment=item.feedback.comment,
        )
    )
    if item.HasField("at"):
        event.at.CopyFrom(item.at)
    else:
        event.at.GetCurrentTime()
    return event


def result_pb(result: Mapping[str, Any]) -> monitor_pb2.DetectorResult:
    evidence = struct_pb2.Struct()
    evidence.update(result.get("evidence", {}))
    return monitor_pb2.DetectorResult(
        detector=result["detector"],
        statistic=result["statistic"],
        p_value=result["p_value"],
        alpha=result["alpha"],
        drifted=result["drifted"],
        summary=result["summary"],
        evidence=evidence,
    )


def window_pb(window: Window) -> monitor_pb2.TrafficWindow:
    return monitor_pb2.TrafficWindow(
        id=window.id,
        model_version_id=window.model_version_id,
        window_start=timestamp(window.window_start),
        window_end=timestamp(window.window_end),
        interactions=window.interactions,
        status=window.status,
        dataset_version_id=window.dataset_version_id,
        results=[result_pb(r) for r in window.results],
        detection_id=window.detection_id,
    )


def detection_pb(detection: Detection) -> monitor_pb2.Detection:
    return monitor_pb2.Detection(
        id=detection.id,
        workspace=detection.workspace,
        model_version_id=detection.model_version_id,
        window_id=detection.window_id,
        results=[result_pb(r) for r in detection.results],
        action=detection.action,
        pipeline_run_id=detection.pipeline_run_id,
        created_at=timestamp(detection.created_at),
    )


def detection_event(
    detection: Detection, window: Window, meta: Any
) -> events_pb2.MonitorDriftDetected:
    flagged = [r for r in detection.results if r["drifted"]] or list(detection.results)
    strongest = min(flagged, key=lambda r: r["p_value"])
    event = events_pb2.MonitorDriftDetected(
        meta=meta,
        detection_id=detection.id,
        model_version_id=detection.model_version_id,
        detector=strongest["detector"],
        statistic=strongest["statistic"],
        p_value=strongest["p_value"],
        threshold=strongest["alpha"],
        summary="; ".join(f"{r['detector']}: {r['summary']}" for r in flagged),
        action=detection.action,
        window_start=timestamp(window.window_start),
        window_end=timestamp(window.window_end),
        window_id=window.id,
        dataset_version_id=window.dataset_version_id,
        pipeline_run_id=detection.pipeline_run_id,
        results=[result_pb(r) for r in detection.results],
    )
    event.evidence.update(strongest.get("evidence", {}))
    return event


def spec_from_json(data: Mapping[str, Any], message: Any) -> Any:
    return json_format.ParseDict(dict(data), message)
