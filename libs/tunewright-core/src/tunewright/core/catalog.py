"""The event catalog: every JetStream stream and durable consumer, declared in one place.

Work-queue streams carry ``.requested`` subjects (each message is consumed once by one
worker of the owning service); limits-retention streams carry facts that any number of
consumers may read. Streams never overlap in subjects, so every fact subject is listed
explicitly. ``EVENT_MESSAGES`` says which ``tunewright.events.v1`` message each subject
carries; ``tests/contract`` checks that the catalog, the subjects and the protos agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tunewright.core import subjects as s


class Retention(StrEnum):
    WORK_QUEUE = "workqueue"
    LIMITS = "limits"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: Retention
    description: str
    max_age_s: float = 0  # 0 = keep forever
    # JetStream drops a second publish with the same Nats-Msg-Id inside this window
    duplicate_window_s: float = 3600


#: ``ConsumerSpec.max_deliver`` of a consumer that never gives up on a retryable failure
UNLIMITED = -1
#: backoff of the unlimited consumers: quick first retries, then once a minute at most, so an
#: outage of any length (a database down for an hour) is retried through and ends within a
#: minute of recovery
CAPPED_BACKOFF_S: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer. Several processes binding the same durable share its work."""

    stream: str
    durable: str
    filter_subjects: tuple[str, ...] = ()
    description: str = ""
    # how long the server waits for an ack before redelivering (a crashed handler); live
    # handlers extend it with in-progress acks, so it need not cover a whole job
    ack_wait_s: float = 60
    # deliveries before a failing message is dead-lettered; UNLIMITED: retried until it
    # succeeds (only a PermanentError dead-letters it). A work request may give up: its
    # dead letter fails the pipeline stage waiting for it. A fact may not: other services'
    # state depends on it, so losing it to a long outage would leave them waiting forever.
    max_deliver: int = 5
    # delay before the n-th redelivery after a handler error (last value repeats)
    backoff_s: tuple[float, ...] = field(default=(1.0, 5.0, 30.0, 120.0))
    max_ack_pending: int = 1000


FACT_SUBJECTS: tuple[str, ...] = (
    s.INGEST_DATASET_CURATED,
    s.INGEST_DATASET_REJECTED,
    s.SYNTH_DATASET_GENERATED,
    s.SYNTH_CANDIDATES_PUBLISHED,
    s.SYNTH_JOB_FAILED,
    s.FEEDBACK_DATASET_COLLECTED,
    s.TRAINER_JOB_STARTED,
    s.TRAINER_JOB_CHECKPOINTED,
    s.TRAINER_JOB_PAUSED,
    s.TRAINER_JOB_SUCCEEDED,
    s.TRAINER_JOB_FAILED,
    s.TRAINER_JOB_CANCELLED,
    s.EVALUATOR_RUN_COMPLETED,
    s.EVALUATOR_RUN_FAILED,
    s.REGISTRY_DATASET_REGISTERED,
    s.REGISTRY_MODEL_REGISTERED,
    s.REGISTRY_MODEL_PROMOTED,
    s.PIPELINE_RUN_STARTED,
    s.PIPELINE_STAGE_CHANGED,
    s.PIPELINE_RUN_COMPLETED,
    s.MONITOR_DRIFT_DETECTED,
)

PROGRESS_SUBJECTS: tuple[str, ...] = (
    s.INGEST_JOB_PROGRESSED,
    s.SYNTH_JOB_PROGRESSED,
    s.TRAINER_JOB_PROGRESSED,
    s.EVALUATOR_RUN_PROGRESSED,
)

# service -> the facts (and progress events) only it may publish; `tunewright up` gives every
# service a NATS user that may not publish another service's facts (a forged
# tw.evaluator.run.completed from anyone but the evaluator is refused by the server)
FACT_OWNERS: dict[str, tuple[str, ...]] = {
    "ingest": (s.INGEST_DATASET_CURATED, s.INGEST_DATASET_REJECTED, s.INGEST_JOB_PROGRESSED),
    "synth": (
        s.SYNTH_DATASET_GENERATED,
        s.SYNTH_CANDIDATES_PUBLISHED,
        s.SYNTH_JOB_FAILED,
        s.SYNTH_JOB_PROGRESSED,
        s.FEEDBACK_DATASET_COLLECTED,
    ),
    "trainer": (
        s.TRAINER_JOB_STARTED,
        s.TRAINER_JOB_PROGRESSED,
        s.TRAINER_JOB_CHECKPOINTED,
        s.TRAINER_JOB_PAUSED,
        s.TRAINER_JOB_SUCCEEDED,
        s.TRAINER_JOB_FAILED,
        s.TRAINER_JOB_CANCELLED,
    ),
    "evaluator": (s.EVALUATOR_RUN_COMPLETED, s.EVALUATOR_RUN_FAILED, s.EVALUATOR_RUN_PROGRESSED),
    "registry": (
        s.REGISTRY_DATASET_REGISTERED,
        s.REGISTRY_MODEL_REGISTERED,
        s.REGISTRY_MODEL_PROMOTED,
        s.PIPELINE_RUN_STARTED,
        s.PIPELINE_STAGE_CHANGED,
        s.PIPELINE_RUN_COMPLETED,
    ),
    "monitor": (s.MONITOR_DRIFT_DETECTED,),
    "serve": (),
}


def facts_not_owned_by(service: str) -> tuple[str, ...]:
    """Every fact subject another service owns (what ``service`` must not publish)."""
    if service not in FACT_OWNERS:
        raise KeyError(f"unknown service {service!r}; known: {', '.join(FACT_OWNERS)}")
    return tuple(
        subject for owner, owned in FACT_OWNERS.items() if owner != service for subject in owned
    )


DAY = 86400.0

STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        "TW_INGEST_WORK",
        (s.INGEST_DATASET_REQUESTED,),
        Retention.WORK_QUEUE,
        "dataset ingest requests for the ingest service",
    ),
    StreamSpec(
        "TW_SYNTH_WORK",
        (s.SYNTH_DATASET_REQUESTED, s.SYNTH_CANDIDATES_REQUESTED, s.FEEDBACK_COLLECTION_REQUESTED),
        Retention.WORK_QUEUE,
        "synthetic data, preference candidates, feedback pulls",
    ),
    StreamSpec(
        "TW_TRAINER_WORK",
        (s.TRAINER_JOB_REQUESTED,),
        Retention.WORK_QUEUE,
        "training jobs; every trainer worker shares one durable",
    ),
    StreamSpec(
        "TW_EVALUATOR_WORK", (s.EVALUATOR_RUN_REQUESTED,), Retention.WORK_QUEUE, "evaluation runs"
    ),
    StreamSpec(
        "TW_PIPELINE_WORK",
        (s.PIPELINE_RUN_REQUESTED,),
        Retention.WORK_QUEUE,
        "pipeline runs submitted by the CLI or by other systems",
    ),
    StreamSpec(
        "TW_FACTS",
        FACT_SUBJECTS,
        Retention.LIMITS,
        "facts: what happened, consumed by the registry and by reactions",
        max_age_s=90 * DAY,
    ),
    StreamSpec(
        "TW_PROGRESS",
        PROGRESS_SUBJECTS,
        Retention.LIMITS,
        "high-volume progress events (rate-limited by producers)",
        max_age_s=7 * DAY,
    ),
    StreamSpec(
        "TW_CONTROL",
        (
            s.INGEST_CONTROL_REQUESTED,
            s.SYNTH_CONTROL_REQUESTED,
            s.TRAINER_CONTROL_REQUESTED,
            s.EVALUATOR_CONTROL_REQUESTED,
        ),
        Retention.LIMITS,
        "cancel / pause / resume; every worker reads all of it",
        max_age_s=1 * DAY,
    ),
    # raw production text may carry PII: a work queue, so a message is gone once the ingest
    # path has consumed (and scrubbed) it, and nothing keeps it longer than a week
    StreamSpec(
        "TW_TRAFFIC",
        (s.TRAFFIC_INTERACTION_LOGGED,),
        Retention.WORK_QUEUE,
        "production interactions, raw until the ingest path scrubs them",
        max_age_s=7 * DAY,
    ),
    StreamSpec(
        "TW_DLQ",
        (s.DEAD_LETTER_ALL,),
        Retention.LIMITS,
        "messages that exhausted their deliveries, with the reason in headers",
        max_age_s=30 * DAY,
    ),
)

CONSUMERS: tuple[ConsumerSpec, ...] = (
    ConsumerSpec("TW_INGEST_WORK", "ingest-worker", description="ingest workers"),
    ConsumerSpec("TW_SYNTH_WORK", "synth-worker", description="synth workers"),
    ConsumerSpec(
        "TW_TRAINER_WORK",
        "trainer-worker",
        max_ack_pending=64,
        description="trainer workers (one job per worker at a time)",
    ),
    ConsumerSpec("TW_EVALUATOR_WORK", "evaluator-worker", description="evaluator workers"),
    # the registry's consumers only fail on its database (or on a bad message, which is a
    # PermanentError): retried through an outage of any length instead of dead-lettered
    ConsumerSpec(
        "TW_PIPELINE_WORK",
        "pipeline-worker",
        max_deliver=UNLIMITED,
        backoff_s=CAPPED_BACKOFF_S,
        description="registry: start submitted pipeline runs",
    ),
    # one durable, one writer: a fact is recorded and the pipelines it concerns are advanced in
    # the same database transaction, so a pipeline never sees a fact the registry has not stored
    ConsumerSpec(
        "TW_FACTS",
        "registry-facts",
        max_deliver=UNLIMITED,
        backoff_s=CAPPED_BACKOFF_S,
        description="registry: record every fact and advance pipelines (idempotently)",
    ),
    # a stage whose request a service dead-lettered would otherwise wait forever
    ConsumerSpec(
        "TW_DLQ",
        "registry-dead-letters",
        max_deliver=UNLIMITED,
        backoff_s=CAPPED_BACKOFF_S,
        description="registry: fail pipeline stages whose request was dead-lettered",
    ),
    # the only reader of raw traffic: a message stays unacked (in-progress) until the window
    # it belongs to has been handed to ingest, so up to a window's worth is pending at once
    ConsumerSpec(
        "TW_TRAFFIC",
        "monitor-traffic",
        max_ack_pending=2000,
        # raw interactions must never be copied to the dead-letter stream: retry (at the last
        # backoff, 2 min) for longer than TW_TRAFFIC keeps them, so they only ever expire there
        max_deliver=10_000,
        description="monitor: batch raw interactions into windows for the ingest path",
    ),
    ConsumerSpec(
        "TW_FACTS",
        "monitor-facts",
        filter_subjects=(
            s.INGEST_DATASET_CURATED,
            s.INGEST_DATASET_REJECTED,
            s.EVALUATOR_RUN_COMPLETED,
            s.EVALUATOR_RUN_FAILED,
        ),
        # a lost curated fact would leave its window pending (and its raw upload) for good
        max_deliver=UNLIMITED,
        backoff_s=CAPPED_BACKOFF_S,
        description="monitor: scrubbed traffic windows to analyse, canary evaluation results",
    ),
)

# subject -> fully qualified proto message name in tunewright/events/v1/events.proto
EVENT_MESSAGES: dict[str, str] = {
    s.INGEST_DATASET_REQUESTED: "tunewright.events.v1.IngestDatasetRequested",
    s.INGEST_DATASET_CURATED: "tunewright.events.v1.IngestDatasetCurated",
    s.INGEST_DATASET_REJECTED: "tunewright.events.v1.IngestDatasetRejected",
    s.INGEST_JOB_PROGRESSED: "tunewright.events.v1.IngestJobProgressed",
    s.SYNTH_DATASET_REQUESTED: "tunewright.events.v1.SynthDatasetRequested",
    s.SYNTH_DATASET_GENERATED: "tunewright.events.v1.SynthDatasetGenerated",
    s.SYNTH_CANDIDATES_REQUESTED: "tunewright.events.v1.SynthCandidatesRequested",
    s.SYNTH_CANDIDATES_PUBLISHED: "tunewright.events.v1.SynthCandidatesPublished",
    s.SYNTH_JOB_PROGRESSED: "tunewright.events.v1.SynthJobProgressed",
    s.SYNTH_JOB_FAILED: "tunewright.events.v1.SynthJobFailed",
    s.FEEDBACK_COLLECTION_REQUESTED: "tunewright.events.v1.FeedbackCollectionRequested",
    s.FEEDBACK_DATASET_COLLECTED: "tunewright.events.v1.FeedbackDatasetCollected",
    s.TRAINER_JOB_REQUESTED: "tunewright.events.v1.TrainerJobRequested",
    s.TRAINER_JOB_STARTED: "tunewright.events.v1.TrainerJobStarted",
    s.TRAINER_JOB_PROGRESSED: "tunewright.events.v1.TrainerJobProgressed",
    s.TRAINER_JOB_CHECKPOINTED: "tunewright.events.v1.TrainerJobCheckpointed",
    s.TRAINER_JOB_PAUSED: "tunewright.events.v1.TrainerJobPaused",
    s.TRAINER_JOB_SUCCEEDED: "tunewright.events.v1.TrainerJobSucceeded",
    s.TRAINER_JOB_FAILED: "tunewright.events.v1.TrainerJobFailed",
    s.TRAINER_JOB_CANCELLED: "tunewright.events.v1.TrainerJobCancelled",
    s.TRAINER_CONTROL_REQUESTED: "tunewright.events.v1.TrainerControlRequested",
    s.INGEST_CONTROL_REQUESTED: "tunewright.events.v1.IngestControlRequested",
    s.SYNTH_CONTROL_REQUESTED: "tunewright.events.v1.SynthControlRequested",
    s.EVALUATOR_CONTROL_REQUESTED: "tunewright.events.v1.EvaluatorControlRequested",
    s.EVALUATOR_RUN_REQUESTED: "tunewright.events.v1.EvaluatorRunRequested",
    s.EVALUATOR_RUN_PROGRESSED: "tunewright.events.v1.EvaluatorRunProgressed",
    s.EVALUATOR_RUN_COMPLETED: "tunewright.events.v1.EvaluatorRunCompleted",
    s.EVALUATOR_RUN_FAILED: "tunewright.events.v1.EvaluatorRunFailed",
    s.REGISTRY_DATASET_REGISTERED: "tunewright.events.v1.RegistryDatasetRegistered",
    s.REGISTRY_MODEL_REGISTERED: "tunewright.events.v1.RegistryModelRegistered",
    s.REGISTRY_MODEL_PROMOTED: "tunewright.events.v1.RegistryModelPromoted",
    s.PIPELINE_RUN_REQUESTED: "tunewright.events.v1.PipelineRunRequested",
    s.PIPELINE_RUN_STARTED: "tunewright.events.v1.PipelineRunStarted",
    s.PIPELINE_STAGE_CHANGED: "tunewright.events.v1.PipelineStageChanged",
    s.PIPELINE_RUN_COMPLETED: "tunewright.events.v1.PipelineRunCompleted",
    s.TRAFFIC_INTERACTION_LOGGED: "tunewright.events.v1.TrafficInteractionLogged",
    s.MONITOR_DRIFT_DETECTED: "tunewright.events.v1.MonitorDriftDetected",
}


def stream(name: str) -> StreamSpec:
    for spec in STREAMS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown stream {name!r}; declared: {', '.join(x.name for x in STREAMS)}")


def consumer(durable: str) -> ConsumerSpec:
    for spec in CONSUMERS:
        if spec.durable == durable:
            return spec
    raise KeyError(
        f"unknown consumer {durable!r}; declared: {', '.join(c.durable for c in CONSUMERS)}"
    )


def stream_for_subject(subject: str) -> StreamSpec:
    for spec in STREAMS:
        if subject in spec.subjects:
            return spec
        if spec.name == "TW_DLQ" and subject.startswith(s.DEAD_LETTER_PREFIX + "."):
            return spec
    raise KeyError(f"subject {subject!r} is not stored by any declared stream")


def jetstream_admin_subjects() -> tuple[str, ...]:
    """The JetStream API calls no service makes, denied to every service's NATS user: updating,
    purging or deleting messages of the platform's streams (a stream sourced into TW_FACTS
    with a subject transform would plant a forged fact), deleting any stream or consumer,
    restores and cluster operations. Creating streams stays open (declaring an existing
    stream with its catalog config is a no-op), and so do purges of the object-store
    buckets, which delete artifacts. The operator's CLI user, which declares the streams
    before `tunewright up` starts the services, keeps all of it."""
    per_stream = tuple(
        f"$JS.API.STREAM.{verb}.{spec.name}"
        for spec in STREAMS
        for verb in ("UPDATE", "PURGE", "MSG.DELETE")
    )
    return (
        *per_stream,
        "$JS.API.STREAM.DELETE.*",
        "$JS.API.STREAM.RESTORE.*",
        "$JS.API.STREAM.PEER.>",
        "$JS.API.STREAM.LEADER.>",
        "$JS.API.CONSUMER.DELETE.>",
        "$JS.API.CONSUMER.LEADER.>",
        "$JS.API.ACCOUNT.PURGE.>",
        "$JS.API.META.>",
    )


def publish_denied_to(service: str) -> tuple[str, ...]:
    """What ``service``'s NATS user may not publish: other services' facts and the
    JetStream administration of the platform's streams."""
    return (*facts_not_owned_by(service), *jetstream_admin_subjects())
