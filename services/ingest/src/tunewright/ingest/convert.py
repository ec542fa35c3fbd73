"""pb <-> domain for the ingest service: the only module that maps proto fields to domain types.

Spec validation lives here too, because it is about the request's fields: every problem is
collected as a :class:`FieldViolation` naming the dotted path (``spec.split.eval_fraction``)
and raised together as one :class:`InvalidArgument`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactRef
from tunewright.core.errors import FieldViolation, InvalidArgument
from tunewright.core.params import struct_params
from tunewright.core.plugins import Registries
from tunewright.ingest import pii
from tunewright.ingest.pipeline import Counts, CurationConfig, CurationResult
from tunewright.ingest.readers import FileFormat
from tunewright.ingest.records import Kind, RecordFormat
from tunewright.ingest.settings import IngestSection
from tunewright.ingest.v1 import ingest_pb2
from tunewright.registry.v1 import registry_pb2

FILE_FORMATS: Mapping[int, FileFormat | None] = {
    ingest_pb2.FILE_FORMAT_UNSPECIFIED: None,
    ingest_pb2.FILE_FORMAT_AUTO: None,
    ingest_pb2.FILE_FORMAT_JSONL: FileFormat.JSONL,
    ingest_pb2.FILE_FORMAT_CSV: FileFormat.CSV,
    ingest_pb2.FILE_FORMAT_PARQUET: FileFormat.PARQUET,
}
RECORD_FORMATS: Mapping[int, RecordFormat | None] = {
    ingest_pb2.RECORD_FORMAT_UNSPECIFIED: None,
    ingest_pb2.RECORD_FORMAT_AUTO: None,
    ingest_pb2.RECORD_FORMAT_MESSAGES: RecordFormat.MESSAGES,
    ingest_pb2.RECORD_FORMAT_PROMPT_COMPLETION: RecordFormat.PROMPT_COMPLETION,
    ingest_pb2.RECORD_FORMAT_ALPACA: RecordFormat.ALPACA,
    ingest_pb2.RECORD_FORMAT_SHAREGPT: RecordFormat.SHAREGPT,
    ingest_pb2.RECORD_FORMAT_PREFERENCE: RecordFormat.PREFERENCE,
    ingest_pb2.RECORD_FORMAT_OPENAI_DPO: RecordFormat.OPENAI_DPO,
    ingest_pb2.RECORD_FORMAT_HH_TRANSCRIPT: RecordFormat.HH_TRANSCRIPT,
    ingest_pb2.RECORD_FORMAT_UNPAIRED: RecordFormat.UNPAIRED,
}
KINDS: Mapping[int, Kind | None] = {
    common_pb2.DATASET_KIND_UNSPECIFIED: None,
    common_pb2.DATASET_KIND_SFT: Kind.SFT,
    common_pb2.DATASET_KIND_PREFERENCE: Kind.PREFERENCE,
    common_pb2.DATASET_KIND_UNPAIRED: Kind.UNPAIRED,
}
KIND_TO_PB: Mapping[Kind, int] = {v: k for k, v in KINDS.items() if v is not None}
_MEDIA_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".jsonl": "application/jsonl",
    ".json": "application/json",
}


def media_type_for(name: str) -> str:
    for suffix, media in _MEDIA_TYPES.items():
        if name.endswith(suffix):
            return media
    return "application/octet-stream"


# --- artifact refs ---
def ref_to_pb(ref: ArtifactRef) -> common_pb2.ArtifactRef:
    return common_pb2.ArtifactRef(
        uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes or 0, media_type=ref.media_type
    )


def ref_from_pb(ref: common_pb2.ArtifactRef, field: str) -> ArtifactRef:
    try:
        if ref.uri:
            out = ArtifactRef.from_uri(ref.uri, size_bytes=ref.size_bytes or None)
            if ref.sha256 and ref.sha256 != out.sha256:
                raise ValueError("uri and sha256 name different content")
            return out
        return ArtifactRef(ref.sha256, ref.size_bytes or None)
    except ValueError as exc:
        raise InvalidArgument(
            f"{field} is not a valid artifact reference",
            field_violations=[FieldViolation(field, str(exc))],
        ) from None


# --- spec -> config ---
def _filters(
    spec: ingest_pb2.IngestSpec, section: IngestSection, registries: Registries,
    bad: list[FieldViolation],
) -> list[tuple[str, Any]]:  # fmt: skip
    refs: list[tuple[str, dict[str, Any], str]] = []
    for i, ref in enumerate(spec.filters):
        try:
            params = struct_params(ref.params, f"spec.filters[{i}].params")
        except InvalidArgument as exc:  # NaN, Infinity: not JSON
            bad.extend(exc.field_violations)
            continue
        refs.append((ref.name, params, f"spec.filters[{i}]"))
    if not spec.filters:
        refs = [(name, {}, "settings.ingest.default_filters") for name in section.default_filters]
    out = []
    for name, params, where in refs:
        if name not in registries.curation_filters:
            known = ", ".join(registries.curation_filters.names()) or "none"
            bad.append(FieldViolation(f"{where}.name", f"unknown filter {name!r}; known: {known}"))
            continue
        try:
            out.append((name, registries.curation_filters.get(name).factory(**params)))
        except (TypeError, ValueError) as exc:
            bad.append(FieldViolation(f"{where}.params", str(exc)))
    return out


def pii_config(
    spec: ingest_pb2.IngestSpec,
    section: IngestSection,
    registries: Registries,
    *,
    allow: set[str],
    hash_key: bytes = b"",
    bad: list[FieldViolation],
) -> pii.PiiConfig | None:
    """The job's PII policy within the server's: ``allow`` is what the server trusts (its
    allow-list and glossary); a job's own terms join only when ``pii_trust_job_terms``."""
    entities = list(
        dict.fromkeys(
            [*section.pii_entities, *sorted(pii.entity_types(registries.pii_recognizers))]
        )
    )
    operators = dict(spec.pii.operators)
    for entity, op in sorted(operators.items()):
        if op == "keep" and entity not in section.pii_keep_allowed:
            allowed = ", ".join(section.pii_keep_allowed) or "none"
            bad.append(
                FieldViolation(
                    f"spec.pii.operators[{entity}]",
                    f"'keep' is not allowed for {entity} by this server's policy "
                    f"(ingest.pii_keep_allowed: {allowed})",
                )
            )
    trusted = set(allow) | set(section.pii_allow_list)
    if section.pii_trust_job_terms:
        trusted |= set(spec.terminology.values())
    threshold = spec.pii.score_threshold or section.pii_score_threshold
    try:
        return pii.PiiConfig(
            nlp_model=spec.pii.nlp_model or section.nlp_model,
            entities=tuple(entities),
            operators=operators,
            score_threshold=threshold,
            allow_list=frozenset(trusted),
            hash_key=hash_key,
            scope=f"{spec.workspace}/{spec.dataset}",
            safe_meta_columns=frozenset(section.pii_safe_meta_columns),
        )
    except pii.PiiConfigError as exc:
        bad.append(FieldViolation("spec.pii", str(exc)))
        return None


def curation_config(
    spec: ingest_pb2.IngestSpec,
    section: IngestSection,
    registries: Registries,
    *,
    glossary: Mapping[str, str] = {},
    source_name: str = "",
    hash_key: bytes = b"",
) -> CurationConfig:
    """Validate ``spec`` and build the pipeline's config; :class:`InvalidArgument` lists all faults."""
    bad: list[FieldViolation] = []
    if not spec.dataset:
        bad.append(
            FieldViolation("spec.dataset", "required: the dataset this job adds a version to")
        )
    for field, value, table in (
        ("spec.file_format", spec.file_format, FILE_FORMATS),
        ("spec.record_format", spec.record_format, RECORD_FORMATS),
        ("spec.kind", spec.kind, KINDS),
    ):
        if value not in table:
            bad.append(FieldViolation(field, f"unsupported value {value}"))
    if not 0 <= spec.max_chars <= section.max_chars:
        bad.append(
            FieldViolation(
                "spec.max_chars",
                f"must be in [0, {section.max_chars}]: 0 means the server's maximum, "
                f"ingest.max_chars = {section.max_chars} (the operator's setting)",
            )
        )
    dedup = spec.dedup if spec.HasField("dedup") else None
    near_threshold = (dedup.near_threshold if dedup else 0.0) or section.near_threshold
    if not 0.0 < near_threshold <= 1.0:
        bad.append(FieldViolation("spec.dedup.near_threshold", "must be in (0, 1]"))
    split = spec.split if spec.HasField("split") else None
    eval_fraction = split.eval_fraction if split else section.eval_fraction
    if not 0.0 <= eval_fraction < 1.0:
        bad.append(FieldViolation("spec.split.eval_fraction", "must be in [0, 1)"))
    terminology = {**glossary, **dict(spec.terminology)}
    noise = spec.label_noise
    if noise.action not in ("", "filter", "review"):
        bad.append(FieldViolation("spec.label_noise.action", "must be 'filter' or 'review'"))
    if noise.folds and not 2 <= noise.folds <= 20:
        bad.append(FieldViolation("spec.label_noise.folds", "must be in [2, 20] (0 = 5)"))
    if not 0.0 <= spec.pii.min_canary_recall <= 1.0:
        bad.append(FieldViolation("spec.pii.min_canary_recall", "must be in [0, 1] (0 = no gate)"))
    filters = _filters(spec, section, registries, bad)
    pii_conf = pii_config(
        spec, section, registries, allow=set(glossary.values()), hash_key=hash_key, bad=bad
    )
    if bad:
        raise InvalidArgument(
            f"invalid ingest spec: {'; '.join(f'{v.field}: {v.description}' for v in bad)}",
            reason="INVALID_INGEST_SPEC",
            field_violations=bad,
        )
    return CurationConfig(
        file_format=FILE_FORMATS[spec.file_format],
        record_format=RECORD_FORMATS[spec.record_format],
        kind=KINDS[spec.kind],
        max_chars=spec.max_chars or section.max_chars,
        max_line_bytes=section.max_line_bytes,
        exact_dedup=dedup.exact if dedup else True,
        near_dedup=dedup.near if dedup else True,
        near_threshold=near_threshold,
        filters=filters,
        terminology=terminology,
        pii=pii_conf,
        quarantine_on_pii_failure=spec.pii.quarantine_on_failure or not spec.HasField("pii"),
        eval_fraction=eval_fraction,
        seed=split.seed if split else 0,
        stratify_by=split.stratify_by if split else "",
        pin_by=split.pin_by if split else "",
        label_noise_field=noise.label_field,
        label_noise_action=noise.action or "filter",
        label_noise_folds=noise.folds or 5,
        batch_size=section.batch_size,
        source_name=source_name,
        min_canary_recall=spec.pii.min_canary_recall,
    )


# --- results -> pb ---
def counts_to_pb(counts: Counts) -> ingest_pb2.CurationCounts:
    return ingest_pb2.CurationCounts(
        total_rows=counts.total,
        accepted=counts.accepted,
        quarantined=counts.quarantined,
        duplicates=counts.duplicates,
        filtered=counts.filtered,
        quarantined_by_reason=dict(counts.quarantined_by_reason),
        filtered_by_filter=dict(counts.filtered_by_filter),
        pii_entities=dict(counts.pii_entities),
        train_rows=counts.train,
        eval_rows=counts.eval,
    )


def dataset_version_id(workspace: str, dataset: str, content_hash: str) -> str:
    """Derived from the content hash: the same rows in the same dataset get the same id."""
    digest = hashlib.sha256(f"{workspace}\n{dataset}\n{content_hash}".encode()).hexdigest()
    return f"dsv-{digest[:32]}"


def dataset_version(
    *,
    job_id: str,
    spec: ingest_pb2.IngestSpec,
    workspace: str,
    result: CurationResult,
    refs: Mapping[str, ArtifactRef],
) -> registry_pb2.DatasetVersion:
    c = result.counts
    version = registry_pb2.DatasetVersion(
        id=dataset_version_id(workspace, spec.dataset, result.content_hash),
        workspace=workspace,
        dataset=spec.dataset,
        content_hash=result.content_hash,
        kind=KIND_TO_PB[result.kind],  # type: ignore[arg-type]
        counts=registry_pb2.RowCounts(
            total=c.total,
            accepted=c.accepted,
            quarantined=c.quarantined,
            duplicates=c.duplicates,
            filtered=c.filtered,
            train=c.train,
            eval=c.eval,
        ),
        curation_report=ref_to_pb(refs["report.json"]),
        pii_audit=ref_to_pb(refs["pii_audit.json"]),
        parent_version_ids=list(spec.parent_version_ids),
        source=spec.origin or registry_pb2.DATASET_SOURCE_UPLOAD,
        produced_by=job_id,
        labels=dict(spec.labels),
        canary_recall=result.canaries.recall() if result.canaries is not None else {},
    )
    version.created_at.GetCurrentTime()
    for split in ("train", "eval"):
        version.splits[split].CopyFrom(ref_to_pb(refs[f"{split}.parquet"]))
    return version
