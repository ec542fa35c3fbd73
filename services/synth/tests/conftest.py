"""Shared pieces of the synth tests: seed support tickets with a thin category, a scripted
generator whose outputs are fixed in advance (so a test knows which rows must be filtered and
why), and an in-memory stand-in for the registry's two read calls (the cross-service test in
test_synthetic_e2e.py uses the real registry service)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import LocalArtifactStore
from tunewright.core.errors import NotFound
from tunewright.registry.v1 import registry_pb2
from tunewright.synth.synthetic import JUDGE_SYSTEM, REQUEST_SYSTEM

BILLING = [
    "Why was I charged twice for my subscription this month?",
    "Can I get an invoice with my company's VAT number on it?",
    "How do I change the credit card used for billing?",
    "My refund for order 5521 has not arrived after ten days.",
    "Is there a discount if I pay for a whole year up front?",
    "The invoice total does not match the price on your website.",
    "How do I download all my past invoices as PDF files?",
    "Can you explain the proration charge on my last bill?",
    "I cancelled my plan but was still billed, what happened?",
    "Do you accept bank transfers instead of credit cards?",
]
LOGIN = [
    "How do I reset my password when the reset email never arrives?",
    "The two-factor code from my authenticator app is always rejected.",
]
SHIPPING = [
    "My parcel tracking has not updated for a week, where is it?",
    "Can I change the delivery address after the order has shipped?",
    "Do you ship to Norway and how long does it take?",
    "The box arrived damaged, how do I return the broken items?",
]


def seed_rows() -> list[dict[str, Any]]:
    rows = []
    for category, requests in (("billing", BILLING), ("login", LOGIN), ("shipping", SHIPPING)):
        for i, request in enumerate(requests):
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": request},
                        {
                            "role": "assistant",
                            "content": f"Thanks for reaching out about {category}. Step {i + 1}: "
                            "open Settings, choose the right section and follow the prompts.",
                        },
                    ],
                    "category": category,
                    "ticket_id": f"T-{category}-{i}",
                }
            )
    return rows


#: what the scripted generator writes when asked for a new login request, in order
LOGIN_SCRIPT = [
    # an exact copy of a seed request: near_duplicate_existing
    "How do I reset my password when the reset email never arrives?",
    # personal data the ingest path must scrub
    "Please update the login email on my account to jane.doe@example.com, and call me "
    "on +1 212-555-0147 if you need to verify it.",
    "I get logged out every few minutes on the mobile app, how can I stay signed in?",
    # a small edit of the row above: near_duplicate_generated
    "I get logged out every few minutes on the mobile app, how do I stay signed in?",
    "Hi",  # too_short
    "",  # unparseable
    "Can I sign in with my Google account instead of a separate password?",
    "%%% ### @@@ !!! *** ???",  # not_text
]
SHIPPING_SCRIPT = [
    "Request: Which courier delivers orders to Iceland, and is there a tracking link?",
    "Can I schedule the delivery for a specific day next week?",
]


@dataclass
class ScriptedGenerator:
    """Follows the generator contract; answers from the scripts above, by prompt kind."""

    scripts: Mapping[str, list[str]] = field(
        default_factory=lambda: {"login": list(LOGIN_SCRIPT), "shipping": list(SHIPPING_SCRIPT)}
    )
    calls: list[dict[str, Any]] = field(default_factory=list)

    def generate(self, *, prompts: Sequence[Sequence[Mapping[str, str]]], **options: Any):
        self.calls.append({"prompts": len(prompts), **options})
        return [[self.reply(list(p))] for p in prompts]

    def reply(self, messages: list[Mapping[str, str]]) -> str:
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        if system == REQUEST_SYSTEM:
            category = re.search(r"category '([^']+)'", messages[-1]["content"])
            script = self.scripts.get(category.group(1) if category else "", [])
            return script.pop(0) if script else "What are your opening hours on public holidays?"
        if system == JUDGE_SYSTEM:
            return "2" if "Iceland" in messages[-1]["content"] else "4"
        return f"Thanks for asking! About '{messages[-1]['content'][:40]}': open Settings first."


class MemoryRegistry:
    """The registry's read calls, from dicts (stand-in: the e2e test uses the real service)."""

    def __init__(self) -> None:
        self.datasets: dict[str, registry_pb2.DatasetVersion] = {}
        self.models: dict[str, registry_pb2.ModelVersion] = {}

    async def dataset_version(
        self, ref: common_pb2.DatasetVersionRef, workspace: str
    ) -> registry_pb2.DatasetVersion:
        if ref.id not in self.datasets:
            raise NotFound(f"dataset version {ref.id} not found")
        return self.datasets[ref.id]

    async def model_version(
        self, ref: common_pb2.ModelVersionRef, workspace: str
    ) -> registry_pb2.ModelVersion:
        if ref.id not in self.models:
            raise NotFound(f"model version {ref.id} not found")
        return self.models[ref.id]


async def add_seed_dataset(
    registry: MemoryRegistry,
    artifacts: LocalArtifactStore,
    rows: list[dict[str, Any]],
    *,
    report: Mapping[str, Any] | None = None,
) -> registry_pb2.DatasetVersion:
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    ref = await artifacts.put_bytes(body, "application/jsonl")
    version = registry_pb2.DatasetVersion(
        id="dsv-seed",
        workspace="default",
        dataset="tickets",
        content_hash=ref.sha256,
        kind=common_pb2.DATASET_KIND_SFT,
        counts=registry_pb2.RowCounts(total=len(rows), accepted=len(rows), train=len(rows)),
    )
    version.splits["train"].CopyFrom(
        common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256, media_type="application/jsonl")
    )
    if report is not None:
        rep = await artifacts.put_bytes(json.dumps(report).encode(), "application/json")
        version.curation_report.CopyFrom(common_pb2.ArtifactRef(uri=rep.uri, sha256=rep.sha256))
    registry.datasets[version.id] = version
    return version


@dataclass
class ScriptedChatServer:
    base_url: str
    generator: ScriptedGenerator
    requests: list[dict[str, Any]]


@pytest.fixture
def scripted_chat_server() -> Iterator[ScriptedChatServer]:
    """The scripted generator behind a real OpenAI-compatible HTTP endpoint (port 0)."""
    generator = ScriptedGenerator()
    requests: list[dict[str, Any]] = []
    lock = threading.Lock()  # the scripts are consumed in request order

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                requests.append(body)
                text = generator.reply(body["messages"])
            data = json.dumps(
                {
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ScriptedChatServer(
            f"http://127.0.0.1:{server.server_address[1]}/v1", generator, requests
        )
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")
