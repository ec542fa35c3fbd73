"""Bodies the fuzz suite (tests/faults/test_fuzz_api.py) found answered 500 (or passed on to
the backend, which failed on them): each is now a 400 naming its parameter."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tunewright.serve.http import ChatBody, build_app

KEY = "regression-key"


class _NoServing:
    """A request that reaches the model here is a failure of the validation under test."""

    async def start(self, **_: Any) -> Any:
        raise AssertionError("an invalid request reached serving.start")


async def _no_models() -> list[dict[str, Any]]:
    return []


def _client() -> TestClient:
    app = build_app(
        _NoServing(),  # type: ignore[arg-type]
        api_keys=[KEY],
        workspace="default",
        max_body_bytes=1024,
        list_models=_no_models,
    )
    return TestClient(app, headers={"authorization": f"Bearer {KEY}"})


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_completion_tokens": "abc"}, "max_completion_tokens"),  # was 500 (TypeError)
        ({"max_completion_tokens": [1]}, "max_completion_tokens"),  # was 500
        ({"max_completion_tokens": 2.5}, "max_completion_tokens"),  # reached the backend
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"seed": 2**64, "temperature": 1}, "seed"),  # was "generation failed: ValueError"
        ({"seed": -(2**63) - 1, "temperature": 1}, "seed"),
    ],
)
def test_an_out_of_range_sampling_parameter_is_a_400_naming_it(
    extra: dict[str, Any], param: str
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    with _client() as client:
        reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    body = ChatBody.model_validate(
        {"model": "m", "messages": [{"role": "user"}], "max_tokens": 9, "max_completion_tokens": 3}
    )
    assert body.sampling().max_tokens == 3


def test_a_chunked_body_over_the_limit_is_413_not_400() -> None:
    """Without a content-length the limit trips while FastAPI reads the body, which used to
    turn it into its own 400 ("There was an error parsing the body")."""
    data = b'{"model": "' + b"x" * 4096 + b'"}'
    chunks = (data[i : i + 512] for i in range(0, len(data), 512))
    with _client() as client:
        reply = client.post(
            "/v1/chat/completions", content=chunks, headers={"content-type": "application/json"}
        )
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"]["code"] == "request_too_large"
