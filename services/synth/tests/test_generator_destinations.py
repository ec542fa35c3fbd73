"""A synthetic-examples job's generator is built with the operator's ``outbound`` policy: a
``base_url`` outside ``outbound.allowed_urls`` is refused naming the spec field, and a job
cannot bring a policy of its own."""

from __future__ import annotations

import pytest

from tunewright.core.errors import InvalidArgument
from tunewright.core.plugins import PluginManager, Registries
from tunewright.core.settings import OutboundSettings
from tunewright.synth.synthetic import build_generator


@pytest.fixture(scope="module")
def plugins() -> Registries:
    return PluginManager().load()


def test_the_base_url_must_be_allowed(plugins: Registries) -> None:
    params = {"base_url": "http://vllm:8000/v1", "model": "m"}
    with pytest.raises(InvalidArgument) as err:
        build_generator(plugins, "openai-compatible", params)  # default: this host only
    assert err.value.reason == "DESTINATION_NOT_ALLOWED"
    assert [v.field for v in err.value.field_violations] == [
        "spec.synthetic_examples.generator.params.base_url"
    ]
    policy = OutboundSettings(allowed_urls=["http://vllm:8000/v1"])
    assert build_generator(plugins, "openai-compatible", params, policy).base_url == (
        "http://vllm:8000/v1"
    )
    local = {"base_url": "http://127.0.0.1:8000/v1", "model": "m"}
    build_generator(plugins, "openai-compatible", local)


def test_a_job_cannot_bring_its_own_policy(plugins: Registries) -> None:
    forged = {"base_url": "http://evil.example/v1", "model": "m", "outbound": {"allowed_urls": []}}
    for policy in (None, OutboundSettings()):
        with pytest.raises(InvalidArgument) as err:
            build_generator(plugins, "openai-compatible", forged, policy)
        assert err.value.reason == "OUTBOUND_IN_PARAMS"
    with pytest.raises(InvalidArgument, match="unknown generator 'nope'"):
        build_generator(plugins, "nope", {})
