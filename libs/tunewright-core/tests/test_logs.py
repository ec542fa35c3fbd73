"""Structured logging: JSON lines, correlation ids, and record contents never printed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from tunewright.core.errors import NotFound
from tunewright.core.logs import (
    MAX_FIELD_CHARS,
    REDACTED,
    allow_log_fields,
    allowed_log_fields,
    configure_logging,
    correlation_scope,
    current_correlation_id,
    new_correlation_id,
)

SECRET_PROMPT = "my SSN is 078-05-1120, please summarise my medical record"
SECRET_ROW = {"customer": "Jane Roe", "email": "jane@example.com", "text": SECRET_PROMPT}


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def stream() -> io.StringIO:
    buffer = io.StringIO()
    configure_logging(service="test-svc", level="DEBUG", stream=buffer)
    return buffer


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_one_json_object_per_line(stream: io.StringIO) -> None:
    log = logging.getLogger("tw.test")
    log.info("dataset %s curated", "ds_1", extra={"dataset_id": "ds_1", "count": 3})
    log.warning("second")
    first, second = lines(stream)
    assert first["msg"] == "dataset ds_1 curated"
    assert first["level"] == "INFO"
    assert first["logger"] == "tw.test"
    assert first["service"] == "test-svc"
    assert first["dataset_id"] == "ds_1" and first["count"] == 3
    assert first["correlation_id"] is None
    assert str(first["ts"]).endswith("Z") and "T" in str(first["ts"])
    assert "redacted_keys" not in first
    assert second["level"] == "WARNING"


def test_record_contents_are_never_logged(stream: io.StringIO) -> None:
    log = logging.getLogger("tw.test")
    log.info("got a record", extra={"row": SECRET_ROW, "prompt": SECRET_PROMPT, "job_id": "j1"})
    log.info("row: %s", SECRET_ROW)
    log.info(SECRET_ROW)
    log.info("ids", extra={"dataset_id": SECRET_ROW})  # allowed key, non-scalar value
    output = stream.getvalue()
    for secret in ("078-05-1120", "Jane Roe", "jane@example.com"):
        assert secret not in output
    first, second, third, fourth = lines(stream)
    assert first["row"] == REDACTED and first["prompt"] == REDACTED
    assert first["redacted_keys"] == ["row", "prompt"]
    assert first["job_id"] == "j1"
    assert second["msg"] == f"row: {REDACTED}"
    assert third["msg"] == "<dict redacted>"
    assert fourth["dataset_id"] == REDACTED and fourth["redacted_keys"] == ["dataset_id"]


def test_long_strings_are_cut(stream: io.StringIO) -> None:
    logging.getLogger("tw.test").info("x", extra={"subject": "s" * 1000})
    (record,) = lines(stream)
    assert len(str(record["subject"])) <= MAX_FIELD_CHARS + 1


def test_reserved_keys_cannot_be_overwritten(stream: io.StringIO) -> None:
    logging.getLogger("tw.test").info("x", extra={"service": "spoofed"})
    (record,) = lines(stream)
    assert record["service"] == "test-svc"
    assert record["redacted_keys"] == ["service"]


def test_allowlist_grows_in_code_only(stream: io.StringIO) -> None:
    assert "num_tokens" not in allowed_log_fields()
    allow_log_fields("num_tokens")
    logging.getLogger("tw.test").info("x", extra={"num_tokens": 12, "rows_count": 5})
    (record,) = lines(stream)
    assert record["num_tokens"] == 12 and record["rows_count"] == 5  # *_count by convention
    with pytest.raises(ValueError):
        allow_log_fields("Bad Key")


def test_exception_goes_to_exc_field_with_its_type_and_frames(stream: io.StringIO) -> None:
    message = "boom"  # a variable: the traceback prints the source line of the raise
    try:
        raise RuntimeError(message)
    except RuntimeError:
        logging.getLogger("tw.test").exception("failed")
    (record,) = lines(stream)
    exc = str(record["exc"])
    assert exc.startswith("Traceback (most recent call last):")
    assert "test_exception_goes_to_exc_field_with_its_type_and_frames" in exc  # the frame
    assert exc.endswith(f"RuntimeError: {REDACTED}")
    assert "boom" not in exc
    assert record["msg"] == "failed"


def parse_row(raw: str) -> None:
    try:
        json.loads(raw + "{")
    except json.JSONDecodeError as exc:
        raise ValueError(f"row: {raw}") from exc


def test_exception_messages_never_quote_records(stream: io.StringIO) -> None:
    row = '{"prompt": "my SSN is 123-45-6789"}'
    try:
        try:
            parse_row(row)
        except ValueError as exc:
            exc.add_note(f"while reading {row}")
            raise NotFound("dataset ds_1 has no row 7") from exc
    except NotFound:
        logging.getLogger("tw.test").exception("load failed")
    try:
        raise KeyError(row)
    except KeyError:
        logging.getLogger("tw.test").error("lookup failed", exc_info=True)
    first, second = lines(stream)
    assert "123-45-6789" not in stream.getvalue()
    exc = str(first["exc"])
    # every exception of the chain keeps its type and frames; only domain messages stay
    assert f"json.decoder.JSONDecodeError: {REDACTED}" in exc
    assert f"ValueError: {REDACTED}" in exc
    assert "NotFound: dataset ds_1 has no row 7" in exc
    assert "in parse_row" in exc
    assert f"KeyError: {REDACTED}" in str(second["exc"])


def test_text_format_redacts_exception_messages() -> None:
    buffer = io.StringIO()
    configure_logging(service="svc", level="INFO", json=False, stream=buffer)
    row = '{"prompt": "my SSN is 123-45-6789"}'
    try:
        raise ValueError(f"row: {row}")
    except ValueError:
        logging.getLogger("tw.test").exception("failed")
    assert "123-45-6789" not in buffer.getvalue()
    assert f"ValueError: {REDACTED}" in buffer.getvalue()


def test_correlation_scope(stream: io.StringIO) -> None:
    assert current_correlation_id() is None
    with correlation_scope("cid-1") as cid:
        assert cid == "cid-1" == current_correlation_id()
        logging.getLogger("tw.test").info("inside")
        with correlation_scope() as inner:
            assert inner != "cid-1" and len(inner) == 32
        assert current_correlation_id() == "cid-1"
    assert current_correlation_id() is None
    assert lines(stream)[0]["correlation_id"] == "cid-1"
    assert new_correlation_id() != new_correlation_id()


def test_text_format_redacts_too() -> None:
    buffer = io.StringIO()
    configure_logging(service="svc", level="INFO", json=False, stream=buffer)
    with correlation_scope("cid-9"):
        logging.getLogger("tw.test").info("hello", extra={"prompt": SECRET_PROMPT, "step": 2})
    output = buffer.getvalue()
    assert "078-05-1120" not in output
    assert "[cid-9]" in output and "step=2" in output and "redacted_keys=prompt" in output


def test_configure_is_idempotent() -> None:
    buffer = io.StringIO()
    configure_logging(service="a", stream=io.StringIO())
    configure_logging(service="b", stream=buffer)
    logging.getLogger("tw.test").warning("once")
    assert len(buffer.getvalue().splitlines()) == 1


def test_scrub_error_message_keeps_library_wording_and_drops_quoted_pii() -> None:
    from tunewright.core.logs import scrub_error_message

    library = "ValueError: `layers_to_transform` cannot be used when `target_modules` is a str."
    assert scrub_error_message(library) == library
    row = (
        "could not parse row 'Hi, this is Maria Lopez, call me at +1 (303) 274-4517 or write to "
        "maria.lopez@example.com' from 10.1.2.3 card 4111 1111 1111 1111 via "
        "https://user:pw@host/x\nsecond line with more"
    )
    scrubbed = scrub_error_message(row)
    for secret in ("Maria", "274-4517", "maria.lopez", "10.1.2.3", "4111", "user:pw", "second"):
        assert secret not in scrubbed, (secret, scrubbed)
    assert scrubbed.startswith("could not parse row '<text>' from <IP> card <NUMBER> via <URL>")
    assert "version 2.13.0" in scrub_error_message("needs torch version 2.13.0")  # not a number run
    assert len(scrub_error_message("x" * 2000)) == 500 and scrub_error_message("  ") == ""
