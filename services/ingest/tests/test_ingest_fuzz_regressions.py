"""A request the fuzz suite (tests/faults/test_fuzz_api.py) found answered INTERNAL: a
non-finite number in a filter's params is now one of the spec's field violations."""

from __future__ import annotations

import math

import pytest

from tunewright.core.errors import InvalidArgument
from tunewright.core.plugins import Registries
from tunewright.ingest.convert import curation_config
from tunewright.ingest.settings import IngestSection
from tunewright.ingest.v1 import ingest_pb2


@pytest.mark.parametrize("number", [math.nan, -math.inf])
def test_a_non_finite_filter_param_is_a_field_violation(
    number: float, registries: Registries
) -> None:
    spec = ingest_pb2.IngestSpec(dataset="d")
    name = registries.curation_filters.names()[0]
    spec.filters.add(name=name).params.fields["threshold"].number_value = number
    with pytest.raises(InvalidArgument) as caught:  # was a ValueError from MessageToDict
        curation_config(spec, IngestSection(), registries)
    fields = [v.field for v in caught.value.field_violations]
    assert "spec.filters[0].params" in fields
