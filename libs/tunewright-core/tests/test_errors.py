"""Domain errors: defaults per class, permanence, and no transport dependency."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunewright.core import errors
from tunewright.core.errors import (
    Conflict,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermanentError,
    TunewrightError,
    Unavailable,
)


def test_defaults_come_from_the_class() -> None:
    err = NotFound("dataset ds_1 not found")
    assert str(err) == "dataset ds_1 not found"
    assert err.message == "dataset ds_1 not found"
    assert err.code == "NOT_FOUND"
    assert err.reason == "NOT_FOUND"
    assert err.field_violations == []
    assert err.retryable is False
    assert isinstance(err, PermanentError)


def test_reason_and_field_violations() -> None:
    err = InvalidArgument(
        "bad split",
        reason="SPLIT_RATIOS_INVALID",
        field_violations=[FieldViolation("splits.train", "must be in (0, 1)")],
    )
    assert err.reason == "SPLIT_RATIOS_INVALID"
    assert err.field_violations == [
        FieldViolation(field="splits.train", description="must be in (0, 1)")
    ]


def test_transient_errors_are_retryable_by_default() -> None:
    assert Unavailable("nats down").retryable
    assert Conflict("stale version").code == "ABORTED"
    assert Conflict("stale version").retryable
    assert not Unavailable("gave up", retryable=False).retryable


def test_permanent_errors_cannot_be_retryable() -> None:
    with pytest.raises(ValueError, match="permanent"):
        NotFound("x", retryable=True)


def test_every_code_is_a_canonical_status_name() -> None:
    canonical = {
        "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED",
    }  # fmt: skip
    classes = [getattr(errors, name) for name in errors.__all__]
    for cls in classes:
        if isinstance(cls, type) and issubclass(cls, TunewrightError):
            assert cls.code in canonical, cls


def test_module_does_not_import_grpc() -> None:
    code = "import sys, tunewright.core.errors; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
