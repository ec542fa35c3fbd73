"""Inputs the fuzz suite (tests/faults/test_fuzz_api.py) found raising something other than a
domain error; each must now be refused with InvalidArgument (or accepted)."""

from __future__ import annotations

import pytest
from registry_builders import dataset_version, evaluation_run

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import InvalidArgument
from tunewright.registry import records
from tunewright.registry.db import Database
from tunewright.registry.pipelines import parse_spec


@pytest.mark.parametrize(
    "spec_yaml",
    [
        "{1: a, x: b}\n",  # unknown keys of two types: sorted() raised TypeError
        "name: x\nstages: [{name: a, kind: train, 1: 2, x: 3}]\n",
        "name: x\nstages: [{name: a, kind: []}]\n",  # unhashable kind: TypeError
        "name: x\nstages: [{name: a, kind: approve, message: 2001-02-30}]\n",  # ValueError
        "name: !!int x\n",  # ValueError
        "name: !!timestamp x\n",  # AttributeError
        "name: !!bool maybe\n",  # KeyError
        "name: !!int\n",  # IndexError
    ],
)
def test_a_spec_yaml_that_broke_the_loader_is_invalid_argument(spec_yaml: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_spec(spec_yaml, {})
    assert caught.value.reason == "PIPELINE_SPEC_INVALID"
    assert all(isinstance(v.field, str) for v in caught.value.field_violations)


def test_a_prompt_dataset_version_registers_and_an_unknown_kind_is_refused(db: Database) -> None:
    with db.transaction() as session:
        prompts = dataset_version("dv-prompts", kind=common_pb2.DATASET_KIND_PROMPT)
        row, created = records.register_dataset_version(session, prompts)  # was a KeyError
        assert created and row.kind == "prompt"
        with pytest.raises(InvalidArgument, match="unknown dataset_kind 67"):
            records.register_dataset_version(session, dataset_version("dv-odd", kind=67))


def test_an_evaluation_with_an_invalid_timestamp_is_refused(db: Database) -> None:
    run = evaluation_run("eval-bad-time", "mv-1")
    run.created_at.nanos = -1  # not a Timestamp: MessageToDict raised ValueError
    with db.transaction() as session, pytest.raises(InvalidArgument, match="cannot be stored"):
        records.record_evaluation(session, run)
