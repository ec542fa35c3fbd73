"""The serving issue's acceptance test, driven by the official ``openai`` package (a client
nobody here wrote): a promoted model answers ``/v1/chat/completions`` with its fine-tuned
answer, a promotion and a rollback switch the answer without a restart and without a failed
request under load, streaming works, and two adapters on one base answer differently per
model name in one process.

Real parts: nats-server, the registry service (SQLite), the serve service (gRPC + uvicorn),
the transformers backend on a ``tiny:`` base with two trained LoRA adapters, the local
artifact store.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from trained_adapters import QUESTION, TrainedFolder

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import LocalArtifactStore
from tunewright.core.service import RunningService, start_service
from tunewright.core.settings import load_settings
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.serve.server import DEFINITION as SERVE
from tunewright.serve.v1 import serve_pb2, serve_pb2_grpc

KEY = "test-serve-key"
ASK = [{"role": "user", "content": QUESTION}]


async def register(
    stub: Any, store: LocalArtifactStore, trained: TrainedFolder, model: str = "support-bot"
) -> registry_pb2.ModelVersion:
    weights = await store.put_dir(trained.folder)
    reply = await stub.RegisterModelVersion(
        registry_pb2.RegisterModelVersionRequest(
            model_version=registry_pb2.ModelVersion(
                model=model,
                base_model="tiny:llama-xxs",
                method="sft",
                weights=common_pb2.ArtifactRef(
                    uri=weights.uri, sha256=weights.sha256, media_type=weights.media_type
                ),
                labels={"seed": "0"},
            )
        )
    )
    return reply.model_version  # type: ignore[no-any-return]


async def start_stack(nats_url: str, data: Path, **serve: Any) -> tuple[RunningService[Any], ...]:
    common = {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": data}
    registry = await start_service(REGISTRY, load_settings(REGISTRY.settings_cls, **common))
    settings = load_settings(
        SERVE.settings_cls,
        **common,
        serve={
            "registry_address": f"127.0.0.1:{registry.port}",
            "http": {"port": 0, "api_key": KEY},
            **serve,
        },
    )
    return registry, await start_service(SERVE, settings)


def client(serve: RunningService[Any], key: str = KEY) -> openai.AsyncOpenAI:
    port = serve.context.resources["http_port"]
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)


async def ask(api: openai.AsyncOpenAI, model: str) -> str:
    reply = await api.chat.completions.create(
        model=model,
        messages=ASK,
        temperature=0,
        max_tokens=24,  # type: ignore[arg-type]
    )
    return reply.choices[0].message.content or ""


async def test_promoted_model_answers_through_the_openai_client_and_follows_the_registry(
    nats_url: str, tmp_path: Path, trained: dict[str, TrainedFolder]
) -> None:
    registry, serve = await start_stack(nats_url, tmp_path / "data")
    try:
        store = LocalArtifactStore(tmp_path / "data" / "artifacts")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            refund = await register(stub, store, trained["refund"])
            escalate = await register(stub, store, trained["escalate"])

            async def promote(version: registry_pb2.ModelVersion) -> None:
                await stub.Promote(
                    registry_pb2.PromoteRequest(
                        model_version_id=version.id,
                        alias="production",
                        force=True,
                        reason="serve test",
                        actor="test",
                    )
                )

            await promote(refund)
            api = client(serve)
            assert (await ask(api, "support-bot:production")).strip() == trained["refund"].answer
            # a bare model name is its production alias
            assert (await ask(api, "support-bot")).strip() == trained["refund"].answer
            names = {m.id for m in (await api.models.list()).data}
            assert "support-bot:production" in names

            # two adapters of one base in one process, chosen per request, concurrently
            answers = await asyncio.gather(
                *[ask(api, v.id) for v in (refund, escalate, refund, escalate)]
            )
            assert [a.strip() for a in answers] == [
                trained["refund"].answer,
                trained["escalate"].answer,
            ] * 2
            assert set(serve.context.resources["serve"].backend.loaded()) == {
                refund.id,
                escalate.id,
            }

            # promotion under load: every request succeeds, the answer switches within seconds
            failures: list[BaseException] = []
            seen: list[str] = []
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    try:
                        seen.append((await ask(api, "support-bot:production")).strip())
                    except Exception as exc:  # counted, not raised: the assertion says it
                        failures.append(exc)

            workers = [asyncio.create_task(load()) for _ in range(3)]
            await asyncio.sleep(0.5)
            started = time.monotonic()
            await promote(escalate)
            switched_after = None
            while time.monotonic() - started < 10:
                if (await ask(api, "support-bot:production")).strip() == trained["escalate"].answer:
                    switched_after = time.monotonic() - started
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*workers)
            assert switched_after is not None, "the alias did not follow the promotion"
            assert failures == []
            assert seen and set(seen) <= {trained["refund"].answer, trained["escalate"].answer}
            print(f"alias switched {switched_after:.2f} s after Promote; {len(seen)} requests ok")

            # streaming (SSE) gives the same answer in pieces
            stream = await api.chat.completions.create(
                model="support-bot:production",
                messages=ASK,  # type: ignore[arg-type]
                temperature=0,
                max_tokens=24,
                stream=True,
                stream_options={"include_usage": True},
            )
            pieces, finish, usage = [], None, None
            async for chunk in stream:
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
                    finish = chunk.choices[0].finish_reason or finish
                if chunk.usage is not None:
                    usage = chunk.usage
            assert "".join(pieces).strip() == trained["escalate"].answer
            assert len([p for p in pieces if p]) > 1
            assert finish == "stop"
            assert usage is not None and usage.completion_tokens > 0

            # rollback switches back
            await stub.Rollback(
                registry_pb2.RollbackRequest(
                    model="support-bot", alias="production", reason="serve test", actor="test"
                )
            )
            deadline = time.monotonic() + 10
            while (await ask(api, "support-bot:production")).strip() != trained["refund"].answer:
                assert time.monotonic() < deadline, "the alias did not follow the rollback"
                await asyncio.sleep(0.05)

            # OpenAI-shaped errors
            with pytest.raises(openai.NotFoundError) as missing:
                await ask(api, "no-such-model:production")
            assert missing.value.code == "model_not_found"
            with pytest.raises(openai.AuthenticationError):
                await ask(client(serve, key="wrong"), "support-bot:production")
            with pytest.raises(openai.BadRequestError) as too_many:
                await api.chat.completions.create(
                    model="support-bot",
                    messages=ASK,
                    max_tokens=100_000,  # type: ignore[arg-type]
                )
            assert "max_tokens" in str(too_many.value)
            with pytest.raises(openai.BadRequestError):
                await api.chat.completions.create(
                    model="support-bot",
                    messages=ASK,
                    n=2,  # type: ignore[arg-type]
                )

            # the HTTP surface without the client library: raw prompts, limits, error shapes
            base = f"http://127.0.0.1:{serve.context.resources['http_port']}"
            auth = {"authorization": f"Bearer {KEY}"}
            async with httpx.AsyncClient(base_url=base) as web:
                assert (await web.get("/health")).status_code == 200  # no token needed
                assert (await web.get("/v1/models")).status_code == 401
                text = await web.post(
                    "/v1/completions",
                    headers=auth,
                    json={"model": refund.id, "prompt": "Hello", "max_tokens": 4},
                )
                assert text.status_code == 200, text.text
                assert text.json()["object"] == "text_completion"
                assert text.json()["usage"]["completion_tokens"] <= 4
                big = await web.post(
                    "/v1/chat/completions",
                    headers={**auth, "content-type": "application/json"},
                    content=b'{"model": "x", "messages": [], "pad": "' + b"x" * 2_000_000 + b'"}',
                )
                assert big.status_code == 413
                assert big.json()["error"]["code"] == "request_too_large"
                broken = await web.post(
                    "/v1/chat/completions",
                    headers={**auth, "content-type": "application/json"},
                    content=b"{not json",
                )
                assert broken.status_code == 400 and "error" in broken.json()
                empty = await web.post(
                    "/v1/chat/completions", headers=auth, json={"model": "x", "messages": []}
                )
                assert empty.status_code == 400
                assert empty.json()["error"]["param"] == "messages"
                nowhere = await web.get("/v1/nowhere", headers=auth)
                assert nowhere.status_code == 404 and "error" in nowhere.json()

            # the same engine over gRPC
            async with grpc.aio.insecure_channel(f"127.0.0.1:{serve.port}") as sch:
                sstub = serve_pb2_grpc.ServeServiceStub(sch)
                reply = await sstub.CreateChatCompletion(
                    serve_pb2.CreateChatCompletionRequest(
                        model=escalate.id,
                        messages=[serve_pb2.ChatMessage(role="user", content=QUESTION)],
                        sampling=serve_pb2.SamplingParams(max_tokens=24, temperature=0),
                    )
                )
                assert reply.content.strip() == trained["escalate"].answer
                assert reply.model_version_id == escalate.id
                parts = [
                    r.delta
                    async for r in sstub.StreamChatCompletion(
                        serve_pb2.StreamChatCompletionRequest(
                            model=refund.id,
                            messages=[serve_pb2.ChatMessage(role="user", content=QUESTION)],
                            sampling=serve_pb2.SamplingParams(max_tokens=24, temperature=0),
                        )
                    )
                ]
                assert "".join(parts).strip() == trained["refund"].answer
    finally:
        await serve.stop()
        await registry.stop()
