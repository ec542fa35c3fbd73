"""A stand-in for ``vllm serve`` (vLLM needs a GPU and is not installed on the test machines).

The tests put a ``vllm`` script on PATH that runs this file with the same arguments. It parses
the flags the backend passes, then serves the parts of vLLM's OpenAI-compatible server the
backend uses, with vLLM's status codes and bodies: ``GET /health`` (no key), and behind
``Authorization: Bearer $VLLM_API_KEY`` ``GET /v1/models``, ``POST /v1/load_lora_adapter``
and ``/v1/unload_lora_adapter`` (only with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; 400 for a name already loaded, 404
``NotFoundError`` for a path without ``adapter_config.json``) and streamed
``POST /v1/chat/completions`` / ``/v1/completions`` (SSE chunks, then a usage chunk, then
``[DONE]``; 404 for an unknown model, 400 when ``max_tokens`` is above 1000). The client
tests run :func:`build_server` in a thread on port 0 instead.

The answer is deterministic: ``"<model> says: w1 w2 ..."``, one word per token, the words
being the prompt's words, cut at ``max_tokens`` (finish_reason ``length``) or at the end of the
prompt (``stop``).

Behaviour switches (environment): ``FAKE_VLLM_RECORD`` (a JSON-lines file: the argv and the
backend's environment at start, then every request's path, body and whether the key was
right), ``FAKE_VLLM_STARTUP_S`` (sleep before binding, like a model load),
``FAKE_VLLM_EXIT`` (exit with this code instead of serving), ``FAKE_VLLM_IGNORE_SIGTERM``,
``FAKE_VLLM_WORKER`` (fork a ``sleep`` child in the same process group, like vLLM's engine
workers; its pid is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_record_lock = threading.Lock()


def record(environ: Mapping[str, str], entry: dict[str, Any]) -> None:
    path = environ.get("FAKE_VLLM_RECORD")
    if not path:
        return
    with _record_lock, open(path, "a") as out:
        out.write(json.dumps(entry) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name")
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--max-lora-rank", type=int, default=16)
    parser.add_argument("--lora-modules", nargs="+", default=[])
    args, _ = parser.parse_known_args(argv)
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    environ = os.environ
    record(
        environ,
        {
            "argv": sys.argv[1:],
            "env": {
                k: os.environ.get(k)
                for k in (
                    "VLLM_API_KEY",
                    "VLLM_ALLOW_RUNTIME_LORA_UPDATING",
                    "CUDA_VISIBLE_DEVICES",
                )
            },
            "pid": os.getpid(),
            "pgid": os.getpgid(0),
        },
    )
    if os.environ.get("FAKE_VLLM_IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("FAKE_VLLM_WORKER"):
        worker = subprocess.Popen(["sleep", "600"])
        record(environ, {"worker_pid": worker.pid})
    if os.environ.get("FAKE_VLLM_EXIT"):
        print("fake vllm: failing at start as told", flush=True)
        sys.exit(int(os.environ["FAKE_VLLM_EXIT"]))
    time.sleep(float(os.environ.get("FAKE_VLLM_STARTUP_S", "0")))
    server = build_server(args, environ)
    print(f"fake vllm: serving {args.model} on {args.host}:{args.port}", flush=True)
    server.serve_forever()


def build_server(args: argparse.Namespace, environ: Mapping[str, str]) -> ThreadingHTTPServer:
    """The fake server for ``args`` (the parsed ``vllm serve`` flags), bound, not serving yet."""
    api_key = environ.get("VLLM_API_KEY", "")
    runtime_lora = environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "").lower() in ("1", "true")
    base_name = args.served_model_name or args.model
    adapters: dict[str, str] = {}
    for item in args.lora_modules:
        if "=" in item and "," not in item:
            name, path = item.split("=")
        else:
            module = json.loads(item)
            name, path = module["name"], module["path"]
        adapters[name] = path

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            print("fake vllm:", format % args, flush=True)

        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, kind: str, message: str) -> None:
            self._json(status, {"error": {"message": message, "type": kind, "code": status}})

        def _authorized(self) -> bool:
            ok = self.headers.get("Authorization") == f"Bearer {api_key}"
            if not ok:
                self._error(401, "Unauthorized", "Unauthorized")
            return ok

        def do_GET(self) -> None:
            if self.path == "/health":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/v1/models":
                if self._authorized():
                    ids = [base_name, *adapters]
                    self._json(200, {"object": "list", "data": [{"id": i} for i in ids]})
                return
            self._json(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            authorized = self.headers.get("Authorization") == f"Bearer {api_key}"
            record(environ, {"path": self.path, "body": body, "authorized": authorized})
            if self.path == "/v1/load_lora_adapter" and runtime_lora:
                if not self._authorized():
                    return
                name, path = body.get("lora_name"), body.get("lora_path")
                if name in adapters:
                    self._error(
                        400,
                        "InvalidUserInput",
                        f"The lora adapter '{name}' has already been loaded.",
                    )
                elif not (Path(path) / "adapter_config.json").is_file():
                    self._error(
                        404,
                        "NotFoundError",
                        f"Loading lora {name} failed: No adapter found for {path}",
                    )
                else:
                    adapters[name] = path
                    data = f"Success: LoRA adapter '{name}' added successfully.".encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                return
            if self.path == "/v1/unload_lora_adapter" and runtime_lora:
                if self._authorized():
                    adapters.pop(body.get("lora_name"), None)
                    self._json(200, {"ok": True})
                return
            if self.path in ("/v1/chat/completions", "/v1/completions"):
                if self._authorized():
                    self._complete(body, chat=self.path == "/v1/chat/completions")
                return
            self._json(404, {"detail": "Not Found"})

        def _complete(self, body: dict[str, Any], *, chat: bool) -> None:
            model = body.get("model")
            if model != base_name and model not in adapters:
                self._error(404, "NotFoundError", f"The model `{model}` does not exist.")
                return
            if int(body["max_tokens"]) > 1000:
                self._error(400, "BadRequestError", "This model's maximum context length is 1000")
                return
            if chat:
                prompt = " ".join(m["content"] for m in body["messages"])
            else:
                prompt = body["prompt"]
            words = [f"{model} says:", *prompt.split()]
            budget = int(body["max_tokens"])
            finish = "length" if len(words) > budget else "stop"
            words = words[:budget]
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
            for i, word in enumerate(words):
                text = word if i == 0 else " " + word
                last = i == len(words) - 1
                choice: dict[str, Any] = {
                    "index": 0,
                    "finish_reason": finish if last else None,
                }
                if chat:
                    choice["delta"] = (
                        {"content": text} if i else {"role": "assistant", "content": text}
                    )
                else:
                    choice["text"] = text
                self._event({"id": "cmpl-1", "model": model, "choices": [choice]})
            usage = {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": len(words),
                "total_tokens": len(prompt.split()) + len(words),
            }
            self._event({"id": "cmpl-1", "model": model, "choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def _event(self, chunk: dict[str, Any]) -> None:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

    return ThreadingHTTPServer((args.host, args.port), Handler)


if __name__ == "__main__":
    main()
