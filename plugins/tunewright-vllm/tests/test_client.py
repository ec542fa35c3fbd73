"""The HTTP side of the vllm backend against a fake OpenAI-compatible server.

vLLM cannot run here (no GPU, not installed). ``fake_vllm.build_server`` stands in for it in a
thread on port 0: the same routes, API-key check, status codes and error bodies, and the same
SSE stream shape (choice chunks, a usage chunk without choices, ``data: [DONE]``) as vLLM's
OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tunewright_vllm.adapters import Adapter, adapter_for
from tunewright_vllm.client import AdapterNotServed, SseDecoder, VllmClient, request_body
from tunewright_vllm.command import HOST

from tunewright.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from tunewright.core.model_versions import TrainedChain
from tunewright.core.serving import Delta, GenerationRequest, SamplingOptions

#: conftest.FakeServer: base_url, api_key, requests()
FakeServer = Any

TrainFolder = Callable[..., Path]
MakeChain = Callable[..., TrainedChain]
CHAIN = TrainedChain("mv_a", "hf:/models/x", 0, (Path("/v/mv_a"),))


def test_sse_decoder_joins_data_lines_and_skips_comments() -> None:
    decoder = SseDecoder()
    lines = [": keep-alive", 'data: {"a":', "data: 1}", "", "event: x", "data:[DONE]", ""]
    assert [d for line in lines if (d := decoder.feed(line)) is not None] == [
        '{"a":\n1}',
        "[DONE]",
    ]
    decoder.feed("data: tail")
    assert decoder.flush() == "tail"
    assert decoder.flush() is None


def test_request_body_for_chat_and_for_a_raw_prompt() -> None:
    options = SamplingOptions(max_tokens=32, temperature=0.0, top_p=0.9, stop=("\n\n",), seed=7)
    chat = GenerationRequest(CHAIN, options, messages=[{"role": "user", "content": "Hi"}])
    assert request_body(chat, "mv_a") == (
        "/v1/chat/completions",
        {
            "model": "mv_a",
            "max_tokens": 32,
            "temperature": 0.0,
            "top_p": 0.9,
            "n": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
            "stop": ["\n\n"],
            "seed": 7,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    )
    raw = GenerationRequest(CHAIN, SamplingOptions(max_tokens=5), prompt="Once")
    path, body = request_body(raw, "mv_a")
    assert path == "/v1/completions"
    assert body["prompt"] == "Once" and "messages" not in body
    assert "stop" not in body and "seed" not in body


def _client(server: FakeServer, key: str | None = None) -> VllmClient:
    return VllmClient(server.base_url, key or server.api_key, timeout_s=10)


async def _collect(client: VllmClient, request: GenerationRequest, model: str) -> list[Delta]:
    path, body = request_body(request, model)
    return [delta async for delta in client.stream(path, body)]


async def test_chat_streams_deltas_then_finish_reason_and_usage(fake_server: FakeServer) -> None:
    client = _client(fake_server)
    request = GenerationRequest(
        CHAIN,
        SamplingOptions(max_tokens=3),
        messages=[{"role": "user", "content": "reset my password"}],
    )
    try:
        deltas = await _collect(client, request, "mv_a")
    finally:
        await client.aclose()
    assert deltas == [
        Delta("mv_a says:"),
        Delta(" reset"),
        Delta(" my"),
        Delta("", finish_reason="length", prompt_tokens=3, completion_tokens=3),
    ]
    (sent,) = fake_server.requests()
    assert sent["path"] == "/v1/chat/completions" and sent["authorized"]
    assert sent["body"]["model"] == "mv_a" and sent["body"]["stream"] is True


async def test_a_raw_prompt_streams_from_completions_and_stops(fake_server: FakeServer) -> None:
    client = _client(fake_server)
    request = GenerationRequest(CHAIN, SamplingOptions(max_tokens=50), prompt="hello there")
    try:
        deltas = await _collect(client, request, "mv_a")
    finally:
        await client.aclose()
    assert "".join(d.text for d in deltas) == "mv_a says: hello there"
    assert deltas[-1] == Delta("", finish_reason="stop", prompt_tokens=2, completion_tokens=3)
    assert fake_server.requests()[0]["path"] == "/v1/completions"


async def test_runtime_adapter_load_posts_name_and_path(
    fake_server: FakeServer,
    base_folder: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
) -> None:
    adapter = adapter_for(make_chain("mv_b", base_folder, trained("mv_b")))
    client = _client(fake_server)
    try:
        assert "mv_b" not in await client.models()
        await client.load_adapter(adapter)
        assert "mv_b" in await client.models()
        await client.load_adapter(adapter)  # vLLM's 400 "already been loaded" is fine
        request = GenerationRequest(CHAIN, SamplingOptions(max_tokens=1), prompt="x")
        assert (await _collect(client, request, "mv_b"))[0] == Delta("mv_b says:")
    finally:
        await client.aclose()
    loads = [r for r in fake_server.requests() if r["path"] == "/v1/load_lora_adapter"]
    assert [r["body"] for r in loads] == [
        {"lora_name": "mv_b", "lora_path": str(adapter.path)},
        {"lora_name": "mv_b", "lora_path": str(adapter.path)},
    ]
    assert all(r["authorized"] for r in loads)


async def test_a_missing_adapter_folder_fails_the_load_with_vllms_reason(
    fake_server: FakeServer, base_folder: Path
) -> None:
    ghost = Adapter("mv_g", "mv_g", Path("/nowhere/model"), 8, base_folder)
    client = _client(fake_server)
    try:
        with pytest.raises(FailedPrecondition) as info:
            await client.load_adapter(ghost)
    finally:
        await client.aclose()
    assert info.value.reason == "VLLM_ADAPTER_LOAD_FAILED"
    assert "404 NotFoundError" in info.value.message and "mv_g" in info.value.message


async def test_errors_map_to_domain_errors(fake_server: FakeServer) -> None:
    client = _client(fake_server)
    try:
        unknown = GenerationRequest(CHAIN, SamplingOptions(max_tokens=1), prompt="x")
        with pytest.raises(AdapterNotServed):
            await _collect(client, unknown, "mv_nobody")
        too_long = GenerationRequest(CHAIN, SamplingOptions(max_tokens=5000), prompt="secret")
        with pytest.raises(InvalidArgument) as info:
            await _collect(client, too_long, "mv_a")
        assert info.value.reason == "VLLM_BAD_REQUEST" and "secret" not in info.value.message
    finally:
        await client.aclose()
    wrong_key = _client(fake_server, key="not-the-key")
    try:
        with pytest.raises(FailedPrecondition) as denied:
            await wrong_key.models()
        assert denied.value.reason == "VLLM_FOREIGN_SERVER"
        assert "not-the-key" not in denied.value.message and "not-the-key" not in repr(wrong_key)
    finally:
        await wrong_key.aclose()


async def test_an_unreachable_server_is_unavailable() -> None:
    from tunewright_vllm.backend import free_port

    client = VllmClient(f"http://{HOST}:{free_port()}", "k", timeout_s=2)
    try:
        assert not await client.healthy()
        request = GenerationRequest(CHAIN, SamplingOptions(max_tokens=1), prompt="x")
        with pytest.raises(Unavailable) as info:
            await _collect(client, request, "mv_a")
        assert info.value.reason == "VLLM_UNAVAILABLE"
    finally:
        await client.aclose()
