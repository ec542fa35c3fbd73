"""Requests the fuzz suite (tests/faults/test_fuzz_api.py) found answered INTERNAL: the
conversion now refuses them with InvalidArgument naming the field."""

from __future__ import annotations

import math

import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import InvalidArgument
from tunewright.trainer import convert
from tunewright.trainer.jobs import JobStatus
from tunewright.trainer.v1 import trainer_pb2


@pytest.mark.parametrize("value", [common_pb2.JOB_STATUS_UNSPECIFIED, 278, -1])
def test_an_unknown_job_status_is_invalid_argument(value: int) -> None:
    assert convert.status_from_pb(common_pb2.JOB_STATUS_RUNNING) is JobStatus.RUNNING
    with pytest.raises(InvalidArgument) as caught:  # was a KeyError
        convert.status_from_pb(value)
    assert caught.value.field_violations[0].field == "statuses"


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_in_a_struct_is_invalid_argument(number: float) -> None:
    spec = trainer_pb2.TrainingJobSpec(method="sft", base_model="tiny:llama-xs")
    spec.method_config.fields["beta"].number_value = number
    with pytest.raises(InvalidArgument) as caught:  # was a ValueError from MessageToDict
        convert.spec_from_pb(spec)
    assert caught.value.field_violations[0].field == "spec.method_config"
    spec.ClearField("method_config")
    spec.trackers.add(name="local").params.fields["every"].number_value = number
    with pytest.raises(InvalidArgument) as caught:
        convert.spec_from_pb(spec)
    assert caught.value.field_violations[0].field == "spec.trackers[0].params"
