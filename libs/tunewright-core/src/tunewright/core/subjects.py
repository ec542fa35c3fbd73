"""NATS subject constants: the only place a subject string is spelled out.

Naming: ``tw.<domain>.<entity>.<event>``, lowercase; facts in the past tense
(``tw.trainer.job.succeeded``); work asked of a service ends in ``.requested``.
Publishers always use a full subject, never a wildcard. Which stream stores each subject
and which proto message it carries is declared in :mod:`tunewright.core.catalog`.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "tw"

# --- ingest -----------------------------------------------------------------------------
INGEST_DATASET_REQUESTED: Final = "tw.ingest.dataset.requested"
INGEST_DATASET_CURATED: Final = "tw.ingest.dataset.curated"
INGEST_DATASET_REJECTED: Final = "tw.ingest.dataset.rejected"
INGEST_JOB_PROGRESSED: Final = "tw.ingest.job.progressed"
INGEST_CONTROL_REQUESTED: Final = "tw.ingest.control.requested"

# --- synth / feedback -------------------------------------------------------------------
SYNTH_DATASET_REQUESTED: Final = "tw.synth.dataset.requested"
SYNTH_DATASET_GENERATED: Final = "tw.synth.dataset.generated"
SYNTH_CANDIDATES_REQUESTED: Final = "tw.synth.candidates.requested"
SYNTH_CANDIDATES_PUBLISHED: Final = "tw.synth.candidates.published"
SYNTH_JOB_PROGRESSED: Final = "tw.synth.job.progressed"
SYNTH_JOB_FAILED: Final = "tw.synth.job.failed"
SYNTH_CONTROL_REQUESTED: Final = "tw.synth.control.requested"
FEEDBACK_COLLECTION_REQUESTED: Final = "tw.feedback.collection.requested"
FEEDBACK_DATASET_COLLECTED: Final = "tw.feedback.dataset.collected"

# --- trainer ----------------------------------------------------------------------------
TRAINER_JOB_REQUESTED: Final = "tw.trainer.job.requested"
TRAINER_JOB_STARTED: Final = "tw.trainer.job.started"
TRAINER_JOB_PROGRESSED: Final = "tw.trainer.job.progressed"
TRAINER_JOB_CHECKPOINTED: Final = "tw.trainer.job.checkpointed"
TRAINER_JOB_PAUSED: Final = "tw.trainer.job.paused"
TRAINER_JOB_SUCCEEDED: Final = "tw.trainer.job.succeeded"
TRAINER_JOB_FAILED: Final = "tw.trainer.job.failed"
TRAINER_JOB_CANCELLED: Final = "tw.trainer.job.cancelled"
# cancel / pause / resume for a job that some worker may be running: every worker sees it
TRAINER_CONTROL_REQUESTED: Final = "tw.trainer.control.requested"

# --- evaluator --------------------------------------------------------------------------
EVALUATOR_RUN_REQUESTED: Final = "tw.evaluator.run.requested"
EVALUATOR_RUN_PROGRESSED: Final = "tw.evaluator.run.progressed"
EVALUATOR_RUN_COMPLETED: Final = "tw.evaluator.run.completed"
EVALUATOR_RUN_FAILED: Final = "tw.evaluator.run.failed"
EVALUATOR_CONTROL_REQUESTED: Final = "tw.evaluator.control.requested"

# --- registry ---------------------------------------------------------------------------
REGISTRY_DATASET_REGISTERED: Final = "tw.registry.dataset.registered"
REGISTRY_MODEL_REGISTERED: Final = "tw.registry.model.registered"
REGISTRY_MODEL_PROMOTED: Final = "tw.registry.model.promoted"

# --- pipeline (state machine hosted by the registry) ------------------------------------
PIPELINE_RUN_REQUESTED: Final = "tw.pipeline.run.requested"
PIPELINE_RUN_STARTED: Final = "tw.pipeline.run.started"
PIPELINE_STAGE_CHANGED: Final = "tw.pipeline.stage.changed"
PIPELINE_RUN_COMPLETED: Final = "tw.pipeline.run.completed"

# --- production traffic and monitoring --------------------------------------------------
TRAFFIC_INTERACTION_LOGGED: Final = "tw.traffic.interaction.logged"
MONITOR_DRIFT_DETECTED: Final = "tw.monitor.drift.detected"

# --- dead letters -----------------------------------------------------------------------
# A message that exhausted its deliveries is republished as ``tw.dlq.<original subject>``.
DEAD_LETTER_PREFIX: Final = "tw.dlq"
DEAD_LETTER_ALL: Final = "tw.dlq.>"


def dead_letter_subject(subject: str) -> str:
    """The dead-letter subject for a message first published on ``subject``."""
    if not subject.startswith(PREFIX + "."):
        raise ValueError(f"not a tunewright subject: {subject!r}")
    return f"{DEAD_LETTER_PREFIX}.{subject[len(PREFIX) + 1 :]}"


# --- headers ----------------------------------------------------------------------------
HEADER_MSG_ID: Final = "Nats-Msg-Id"
HEADER_EVENT_TYPE: Final = "Tw-Event-Type"
HEADER_CORRELATION_ID: Final = "Tw-Correlation-Id"
HEADER_WORKSPACE: Final = "Tw-Workspace"
HEADER_DLQ_REASON: Final = "Tw-Dlq-Reason"
HEADER_DLQ_DELIVERIES: Final = "Tw-Dlq-Deliveries"
HEADER_DLQ_ORIGINAL_SUBJECT: Final = "Tw-Dlq-Original-Subject"
# the durable that gave up on the message
HEADER_DLQ_CONSUMER: Final = "Tw-Dlq-Consumer"
# the id consumers knew the dead-lettered message by (its Nats-Msg-Id, or its original one)
HEADER_DLQ_MSG_ID: Final = "Tw-Dlq-Msg-Id"
# A message redriven from the dead-letter stream is published again under a new Nats-Msg-Id
# (JetStream would drop the original id as a duplicate for the stream's duplicate window);
# these carry the id consumers know it by, so their processed marks still recognise it, and
# how many times it was redriven.
HEADER_ORIGINAL_MSG_ID: Final = "Tw-Original-Msg-Id"
HEADER_REDRIVES: Final = "Tw-Redrives"
