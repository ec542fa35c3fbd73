"""The ``openai-compatible`` generator against a real HTTP server that generates with a tiny
local model (see conftest.py): contract shape, retries, errors, and the key kept secret."""

from __future__ import annotations

import json
import logging

import pytest

from tunewright.core.errors import InvalidArgument, NotFound, Unauthenticated, Unavailable
from tunewright.core.plugins import PluginManager

PROMPTS = [
    [{"role": "user", "content": "How do I reset my password?"}],
    [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "My invoice is wrong."},
    ],
]


def _generator(server, **extra):
    spec = PluginManager().load().generators.get("openai-compatible")
    assert spec.plugin == "openai"
    assert {"sft", "preference"} <= spec.dataset_kinds
    return spec.factory(base_url=server.base_url, model=server.model, backoff_s=0, **extra)


def test_generates_real_completions_in_prompt_order(chat_server) -> None:
    generator = _generator(chat_server)
    out = generator.generate(prompts=PROMPTS, max_new_tokens=8, num_return_sequences=2, seed=3)
    assert len(out) == 2 and all(len(answers) == 2 for answers in out)
    assert all(isinstance(text, str) for answers in out for text in answers)
    assert any(text for answers in out for text in answers)  # the tiny model said something
    assert sorted(len(r["messages"]) for r in chat_server.requests) == [1, 2]
    assert all(r["messages"] in PROMPTS for r in chat_server.requests)
    assert {r["n"] for r in chat_server.requests} == {2}
    assert all(r["max_tokens"] == 8 and r["temperature"] > 0 for r in chat_server.requests)
    # greedy for one answer: temperature 0, and the same answer twice
    greedy = generator.generate(prompts=PROMPTS[:1], max_new_tokens=8)
    assert chat_server.requests[-1]["temperature"] == 0.0
    assert generator.generate(prompts=PROMPTS[:1], max_new_tokens=8) == greedy


def test_rate_limits_and_server_errors_are_retried(chat_server) -> None:
    chat_server.failures = [429, 503, 500]
    out = _generator(chat_server).generate(prompts=PROMPTS[:1], max_new_tokens=4)
    assert len(out) == 1 and len(chat_server.requests) == 4


def test_retries_run_out_with_a_clear_error(chat_server) -> None:
    chat_server.failures = [503] * 10
    with pytest.raises(Unavailable, match=r"HTTP 503 overloaded after 3 attempts") as err:
        _generator(chat_server, max_retries=2).generate(prompts=PROMPTS[:1])
    assert err.value.reason == "GENERATOR_UNAVAILABLE" and err.value.retryable
    assert len(chat_server.requests) == 3


def test_unreachable_endpoint_is_unavailable() -> None:
    from tunewright_openai.client import OpenAICompatibleGenerator

    generator = OpenAICompatibleGenerator(
        base_url="http://127.0.0.1:9/v1", model="m", max_retries=1, backoff_s=0, timeout_s=2
    )
    with pytest.raises(Unavailable, match="unreachable after 2 attempts: ConnectError"):
        generator.generate(prompts=PROMPTS[:1])


def test_wrong_model_and_bad_params_fail_at_once(chat_server) -> None:
    from tunewright_openai.client import OpenAICompatibleGenerator

    generator = OpenAICompatibleGenerator(base_url=chat_server.base_url, model="nope")
    with pytest.raises(NotFound, match=r"model 'nope'.*HTTP 404 model_not_found"):
        generator.generate(prompts=PROMPTS[:1])
    assert len(chat_server.requests) == 1  # a 404 is not retried
    with pytest.raises(InvalidArgument, match="needs base_url and model"):
        OpenAICompatibleGenerator()
    with pytest.raises(InvalidArgument, match="unknown openai-compatible generator params: temp"):
        OpenAICompatibleGenerator(base_url="http://x/v1", model="m", temp=1)


def test_a_key_bound_to_the_base_url_is_sent_and_never_shown(
    chat_server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    chat_server.api_key = "sk-test-secret-123"
    monkeypatch.delenv("OPENAI_COMPATIBLE_KEYS", raising=False)
    monkeypatch.setenv("VLLM_KEY", "sk-test-secret-123")
    # the variable is set, but nothing binds it to this endpoint: no key is sent
    with pytest.raises(Unauthenticated, match=r"HTTP 401 invalid_api_key.*OPENAI_COMPATIBLE_KEYS"):
        _generator(chat_server).generate(prompts=PROMPTS[:1])
    assert chat_server.auth_headers[-1] == ""
    monkeypatch.setenv(
        "OPENAI_COMPATIBLE_KEYS", json.dumps({f"{chat_server.base_url}/": "VLLM_KEY"})
    )
    caplog.set_level(logging.DEBUG)
    chat_server.failures = [429]  # a retry is logged: the key must not be
    generator = _generator(chat_server)
    assert len(generator.generate(prompts=PROMPTS[:1], max_new_tokens=4)) == 1
    assert chat_server.auth_headers[-1] == "Bearer sk-test-secret-123"
    assert "secret" not in repr(generator) and "secret" not in caplog.text
    assert "retry" in caplog.text


def test_a_spec_cannot_send_a_key_to_a_url_of_its_choosing(
    chat_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Params come from job specs: they may neither carry a key nor pick the variable one is
    read from, and a key bound to one endpoint never goes to another."""
    from tunewright.core.errors import FailedPrecondition

    monkeypatch.setenv("TW_NATS__PASSWORD", "nats-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("OPENAI_COMPATIBLE_KEYS", json.dumps({"http://gpu-box:8000/v1": "VLLM_KEY"}))
    for params in ({"api_key_env": "TW_NATS__PASSWORD"}, {"api_key": "sk-inline"}):
        with pytest.raises(InvalidArgument, match="may not carry api_key") as err:
            _generator(chat_server, **params)
        assert err.value.reason == "SECRET_IN_PARAMS"
        assert "secret" not in str(err.value) and "sk-inline" not in str(err.value)
    # OPENAI_API_KEY is bound to api.openai.com only: the attacker's endpoint gets no header
    _generator(chat_server).generate(prompts=PROMPTS[:1], max_new_tokens=2)
    assert chat_server.auth_headers == [""]
    from tunewright_openai.client import bound_key_env

    assert bound_key_env("https://api.openai.com/v1/") == "OPENAI_API_KEY"
    assert bound_key_env("http://gpu-box:8000/v1") == "VLLM_KEY"
    assert bound_key_env("http://gpu-box:8000/v1/../evil") == ""
    monkeypatch.setenv("OPENAI_COMPATIBLE_KEYS", "not json")
    with pytest.raises(FailedPrecondition, match="must be a JSON object"):
        _generator(chat_server)


def test_extra_body_may_not_override_generation_options(chat_server) -> None:
    with pytest.raises(InvalidArgument, match="extra_body may not set model, temperature") as err:
        _generator(chat_server, extra_body={"temperature": 2.0, "model": "other", "stop": ["x"]})
    assert [v.field for v in err.value.field_violations] == [
        "params.extra_body.model",
        "params.extra_body.temperature",
    ]
    generator = _generator(chat_server, extra_body={"stop": ["\n\n"]})
    generator.generate(prompts=PROMPTS[:1], max_new_tokens=2)
    assert chat_server.requests[-1]["stop"] == ["\n\n"]
    assert chat_server.requests[-1]["temperature"] == 0.0
