"""What a job's params and an endpoint's answers may not do: name a destination outside the
operator's ``outbound.allowed_urls``, hand over a policy of their own, answer with an endless
body or drip it forever. The endpoint is a scripted stdlib HTTP server on port 0 (no model)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tunewright_openai.client import OpenAICompatibleGenerator

from tunewright.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from tunewright.core.settings import OutboundSettings

PROMPT = [[{"role": "user", "content": "hi"}]]
GOOD = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}]}


class Script:
    """What the server does with the next request: ``mode`` is ``ok``, ``huge`` (a body past
    any limit, no Content-Length), ``huge_declared`` (Content-Length says so), ``drip`` (one
    byte every 0.2 s), ``error_flood`` (a 500 with a long body)."""

    mode = "ok"
    sent = 0


@pytest.fixture
def endpoint() -> Iterator[tuple[str, type[Script]]]:
    script = type("S", (Script,), {})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            try:
                self._answer()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what these tests want

        def _answer(self) -> None:
            mode = script.mode
            if mode == "ok":
                data = json.dumps(GOOD).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif mode in ("huge", "error_flood"):
                self.send_response(200 if mode == "huge" else 500)
                self.send_header("Connection", "close")
                self.end_headers()
                block = b'{"choices": [' + b" " * 65536
                for _ in range(4096):  # up to 256 MiB, if nobody stopped us
                    self.wfile.write(block)
                    script.sent += len(block)
            elif mode == "huge_declared":
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 40))
                self.end_headers()
                self.wfile.write(b"{")
            elif mode == "drip":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(100000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", script
    finally:
        server.shutdown()
        server.server_close()


def _gen(base_url: str, **params: Any) -> OpenAICompatibleGenerator:
    return OpenAICompatibleGenerator(
        base_url=base_url, model="m", backoff_s=0, max_retries=0, **params
    )


def test_a_body_over_the_limit_is_cut_off_with_a_clear_error(endpoint: Any) -> None:
    url, script = endpoint
    assert _gen(url).generate(prompts=PROMPT) == [["hello"]]
    script.mode = "huge"
    with pytest.raises(FailedPrecondition, match="body over 1048576 bytes") as err:
        _gen(url, max_response_bytes=1 << 20).generate(prompts=PROMPT)
    assert err.value.reason == "GENERATOR_RESPONSE_TOO_LARGE"
    script.mode = "huge_declared"  # refused on the header, before any of the body is read
    with pytest.raises(FailedPrecondition, match="body over 8388608 bytes"):
        _gen(url).generate(prompts=PROMPT)


def test_an_error_body_is_read_only_as_far_as_its_type(endpoint: Any) -> None:
    url, script = endpoint
    script.mode = "error_flood"
    started = time.monotonic()
    with pytest.raises(Unavailable, match="HTTP 500"):
        _gen(url).generate(prompts=PROMPT)
    assert time.monotonic() - started < 10


def test_timeout_bounds_the_whole_body_not_only_each_read(endpoint: Any) -> None:
    url, script = endpoint
    script.mode = "drip"  # a byte every 0.2 s: no read ever times out
    started = time.monotonic()
    with pytest.raises(Unavailable, match="unreachable after 1 attempts: ReadTimeout"):
        _gen(url, timeout_s=1.0).generate(prompts=PROMPT)
    assert time.monotonic() - started < 5


def test_base_url_must_be_on_the_operators_allow_list() -> None:
    # default policy: this host only
    _gen("http://127.0.0.1:8000/v1")
    _gen("http://localhost:11434/v1")
    for url in (
        "http://vllm:8000/v1",
        "https://api.openai.com/v1",
        "http://169.254.169.254/latest",
        "http://localhost@evil.example/v1",
        "http://127.0.0.1.evil.example/v1",
    ):
        with pytest.raises(InvalidArgument) as err:
            _gen(url)
        assert err.value.reason == "DESTINATION_NOT_ALLOWED"
        assert [v.field for v in err.value.field_violations] == ["params.base_url"]
        assert "outbound.allowed_urls" in err.value.message
    policy = OutboundSettings(allowed_urls=["http://vllm:8000/v1"])
    _gen("http://vllm:8000/v1", outbound=policy)
    with pytest.raises(InvalidArgument, match="http://vllm:9000 is not an allowed destination"):
        _gen("http://vllm:9000/v1", outbound=policy)
    with pytest.raises(InvalidArgument, match="not an allowed destination"):
        _gen("http://127.0.0.1:8000/v1", outbound=policy)  # the operator's list replaces it


def test_a_job_cannot_bring_its_own_policy_or_unbounded_params() -> None:
    with pytest.raises(InvalidArgument, match="params may not carry outbound") as err:
        _gen("http://vllm:8000/v1", outbound={"allowed_urls": ["http://vllm:8000"]})
    assert err.value.reason == "OUTBOUND_IN_PARAMS"
    with pytest.raises(InvalidArgument, match="out of range") as err:
        _gen(
            "http://127.0.0.1:8000/v1",
            timeout_s=86400,
            concurrency=10000,
            max_response_bytes=1 << 40,
        )
    assert sorted(v.field for v in err.value.field_violations) == [
        "params.concurrency",
        "params.max_response_bytes",
        "params.timeout_s",
    ]
