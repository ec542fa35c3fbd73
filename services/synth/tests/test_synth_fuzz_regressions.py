"""A request the fuzz suite (tests/faults/test_fuzz_api.py) found answered INTERNAL: a
non-finite number in a plugin's params is now an InvalidArgument naming the field."""

from __future__ import annotations

import math

import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import InvalidArgument
from tunewright.synth import convert
from tunewright.synth.synthetic import FILTER_PARAMS
from tunewright.synth.v1 import synth_pb2


@pytest.mark.parametrize("number", [math.nan, math.inf])
def test_a_non_finite_plugin_param_is_invalid_argument(number: float) -> None:
    spec = synth_pb2.SynthJobSpec()
    task = spec.synthetic_examples
    task.seed_dataset.CopyFrom(common_pb2.DatasetVersionRef(id="dsv-seed"))
    task.num_examples = 3
    task.generator.name = "local"
    task.generator.params.fields["temperature"].number_value = number
    with pytest.raises(InvalidArgument) as caught:  # was a ValueError from MessageToDict
        convert.synthesis_task(spec, "default")
    assert caught.value.field_violations[0].field == "spec.synthetic_examples.generator.params"
    task.generator.ClearField("params")
    task.filters.add(name=next(iter(FILTER_PARAMS))).params.fields["x"].number_value = number
    with pytest.raises(InvalidArgument) as caught:
        convert.synthesis_task(spec, "default")
    assert caught.value.field_violations[0].field == "spec.synthetic_examples.filters[0].params"
