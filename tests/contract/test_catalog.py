"""The event catalog, the subject constants and events.proto must agree."""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf import descriptor_pool

from tunewright.core import catalog, subjects
from tunewright.events.v1 import events_pb2

ROOT = Path(__file__).resolve().parents[2]
SUBJECT_RE = re.compile(r"^tw\.[a-z]+\.[a-z_]+\.[a-z_]+$")
# messages in events.proto that are parts of events, not events themselves
EVENT_PARTS = {"InteractionFeedback"}


def _subject_constants() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(subjects).items()
        if name.isupper()
        and isinstance(value, str)
        and value.startswith("tw.")
        and not name.startswith("DEAD_LETTER")
    }


def test_every_subject_is_well_formed_and_mapped_to_an_event_message() -> None:
    constants = _subject_constants()
    assert len(set(constants.values())) == len(constants), "two constants share a subject"
    for name, subject in constants.items():
        assert SUBJECT_RE.match(subject), f"{name}={subject!r} breaks tw.<domain>.<entity>.<event>"
        assert subject in catalog.EVENT_MESSAGES, f"{subject} has no event message"
    assert set(catalog.EVENT_MESSAGES) == set(constants.values())


def test_every_event_message_exists_starts_with_meta_and_is_used_once() -> None:
    pool = descriptor_pool.Default()
    used = list(catalog.EVENT_MESSAGES.values())
    assert len(used) == len(set(used)), "one message per event"
    for full_name in used:
        desc = pool.FindMessageTypeByName(full_name)
        first = desc.fields_by_number[1]
        assert first.name == "meta", full_name
        assert first.message_type.full_name == "tunewright.common.v1.EventMeta", full_name
    declared = {
        f"tunewright.events.v1.{name}"
        for name in events_pb2.DESCRIPTOR.message_types_by_name
        if name not in EVENT_PARTS
    }
    assert declared == set(used), f"unmapped event messages: {declared - set(used)}"


def test_every_subject_is_stored_by_exactly_one_stream() -> None:
    for subject in catalog.EVENT_MESSAGES:
        owners = [s.name for s in catalog.STREAMS if subject in s.subjects]
        assert len(owners) == 1, f"{subject} stored by {owners}"
    assert (
        catalog.stream_for_subject(
            subjects.dead_letter_subject(subjects.TRAINER_JOB_REQUESTED)
        ).name
        == "TW_DLQ"
    )


def test_work_queues_carry_only_requests_and_have_one_unfiltered_consumer() -> None:
    for stream in catalog.STREAMS:
        if stream.retention is catalog.Retention.WORK_QUEUE:
            if stream.name == "TW_TRAFFIC":
                continue  # raw traffic intake: a work queue so raw text does not linger
            assert all(s.endswith(".requested") for s in stream.subjects), stream.name
            consumers = [c for c in catalog.CONSUMERS if c.stream == stream.name]
            assert len(consumers) == 1, f"{stream.name}: workers must share one durable"


def test_consumers_point_at_declared_streams_and_subjects() -> None:
    durables = [c.durable for c in catalog.CONSUMERS]
    assert len(durables) == len(set(durables))
    for consumer in catalog.CONSUMERS:
        stream = catalog.stream(consumer.stream)
        for subject in consumer.filter_subjects:
            assert subject in stream.subjects, f"{consumer.durable}: {subject} not in {stream.name}"
        assert consumer.max_deliver == catalog.UNLIMITED or consumer.max_deliver > 1
        assert consumer.backoff_s


def test_facts_are_never_given_up_on_and_retried_at_most_a_minute_apart() -> None:
    # other services' state depends on a fact: a long outage must not dead-letter it
    for consumer in catalog.CONSUMERS:
        if consumer.stream in ("TW_FACTS", "TW_DLQ"):
            assert consumer.max_deliver == catalog.UNLIMITED, consumer.durable
            assert max(consumer.backoff_s) <= 60, consumer.durable


def test_subject_strings_are_spelled_only_in_core() -> None:
    offenders = []
    for base in ("services", "plugins", "src"):
        for path in (ROOT / base).rglob("*.py"):
            if re.search(r"""["']tw\.[a-z]+\.""", path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"use tunewright.core.subjects constants instead: {offenders}"


def test_every_fact_has_exactly_one_owning_service() -> None:
    """The embedded NATS denies each service the facts other services own: every fact and
    progress subject must have one owner, or some service could forge it (or none send it)."""
    owned = [subject for subjects in catalog.FACT_OWNERS.values() for subject in subjects]
    assert sorted(owned) == sorted({*catalog.FACT_SUBJECTS, *catalog.PROGRESS_SUBJECTS})
    assert len(owned) == len(set(owned))
    assert "tw.evaluator.run.completed" in catalog.facts_not_owned_by("trainer")
    assert "tw.evaluator.run.completed" not in catalog.facts_not_owned_by("evaluator")
