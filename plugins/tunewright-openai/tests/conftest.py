"""A real OpenAI-compatible chat-completions server for the tests: stdlib ``http.server`` in a
thread on port 0, answering with generations of a tiny local Llama (the ``tiny:llama-xxs``
base model and the ``local`` generator of tunewright-trl, untrained: the text is noise, the
HTTP exchange and the decoding are real). It can be told to fail the next requests with a
status (429, 503, ...) and to require an API key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@dataclass
class TinyChatServer:
    base_url: str
    model: str = "tiny-llama"
    api_key: str = ""
    #: statuses to answer with, one per coming request, before generating again
    failures: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(base model object, folder holding ``tokenizer/``) for the ``local`` generator."""
    from tunewright_trl.models import TinyBaseModel

    base = TinyBaseModel(
        "llama-xxs", corpus=["How do I reset my password?", "Open Settings."], seed=1
    )
    folder = tmp_path_factory.mktemp("tiny-model")
    base.tokenizer().save_pretrained(str(folder / "tokenizer"))
    return base, folder


@pytest.fixture
def chat_server(tiny_model: tuple[Any, Path]) -> Iterator[TinyChatServer]:
    from tunewright_trl.generation import LocalGenerator

    base, folder = tiny_model
    generator = LocalGenerator()
    lock = threading.Lock()  # one generation at a time (torch on a shared CPU)
    state = TinyChatServer(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _reply(
            self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions":
                self._reply(404, {"error": {"type": "not_found", "message": "no route"}})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            state.auth_headers.append(self.headers.get("Authorization", ""))
            if state.api_key and self.headers.get("Authorization") != f"Bearer {state.api_key}":
                self._reply(401, {"error": {"type": "invalid_api_key", "message": "bad key"}})
                return
            if body.get("model") != state.model:
                self._reply(404, {"error": {"type": "model_not_found", "message": "?"}})
                return
            if state.failures:
                status = state.failures.pop(0)
                self._reply(status, {"error": {"type": "overloaded"}}, {"Retry-After": "0"})
                return
            n = int(body.get("n", 1))
            temperature = float(body.get("temperature", 1.0))
            with lock:
                texts = generator.generate(
                    base=base,
                    weights=[],
                    tokenizer=folder,
                    prompts=[body["messages"]],
                    max_new_tokens=int(body.get("max_tokens", 16)),
                    do_sample=temperature > 0,
                    temperature=temperature or 1.0,
                    top_p=float(body.get("top_p", 1.0)),
                    seed=int(body.get("seed", 0)),
                    num_return_sequences=n,
                )[0]
            self._reply(
                200,
                {
                    "id": f"chatcmpl-{len(state.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": state.model,
                    "choices": [
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "length",
                        }
                        for i, text in enumerate(texts)
                    ],
                },
            )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
