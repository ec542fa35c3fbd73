"""Fuzzed inputs (hypothesis) for the API surfaces: the pipeline YAML loader, the unary and
client-streaming RPCs of the services, and serve's OpenAI-compatible HTTP API.

Each input either completes or fails with a stated reason, never with an unhandled exception:

- pipeline YAML (:func:`tunewright.registry.pipelines.parse_spec`): loads, or raises
  :class:`~tunewright.core.errors.InvalidArgument` with a message (never KeyError, TypeError,
  RecursionError...), in bounded time. Inputs: random documents, pipeline-shaped documents,
  the support-tickets example mutated (as data and as text), random text and bytes, deep
  nesting, alias bombs and recursive aliases, tags.
- gRPC: the real registry, ingest, trainer, evaluator, synth, monitor and serve services
  (port 0, auth off, one nats-server; the services other than the registry run without their
  NATS consumers, so an accepted request only queues a job) get request messages generated
  from each method's descriptor. Every answer is OK or a status in :data:`STATED` with a
  message, never INTERNAL or UNKNOWN (the error interceptor's answer to an unhandled
  exception; the failure shows its traceback). The unhandled exceptions this suite found in
  code other people own are listed in :data:`KNOWN_BUGS`: tolerated only for the inputs that
  trigger them, and counted as not survived in the figures.
- HTTP (serve on real uvicorn, the transformers backend on a ``tiny:`` base with an untrained
  LoRA adapter): every answer is a 2xx, or a 4xx with OpenAI's error JSON
  ``{"error": {"message", "type", ...}}``; never a 5xx.

Hypothesis runs derandomized (the same inputs on every run) with modest example counts.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tunewright.core.errors import InvalidArgument
from tunewright.core.interceptors import error_details
from tunewright.core.nats_server import NatsServer
from tunewright.core.service import RunningService, ServiceDefinition, start_service
from tunewright.core.settings import load_settings
from tunewright.registry.pipelines import KINDS, MAX_SPEC_BYTES, parse_spec

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_YAML = (ROOT / "examples/support-tickets/pipeline.yaml").read_text()
EXAMPLE = yaml.safe_load(EXAMPLE_YAML)
EXAMPLE_PARAMS = {"source": "file:///data/tickets.jsonl"}

#: a case's own budget: hypothesis runs derandomized, so these are the same inputs every run
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
#: one input may take this long (a bigger one must be refused, not parsed slowly)
MAX_INPUT_S = 10.0


# --- pipeline YAML -------------------------------------------------------------------------

_SPEC_WORDS = [
    "name", "kind", "spec", "stages", "parameters", "workspace", "description", "alias",
    "model", "message", "deadline_seconds", "method", "base_model", "datasets", "peft", "id",
    "hyperparameters", "max_steps", "source", "uri", "split", "dataset", "candidate", "gate",
    "rules", "metrics", "method_config", "type", "r", "seed", "resources", "device",
    "preference_candidates", "feedback_collection", "synthetic_examples", "<<",
]  # fmt: skip
_SPEC_STRINGS = [
    "${params.source}", "${params.feedback}", "${params.}", "${stages.curate.dataset_version_id}",
    "${stages.sft.model_version_id}", "${stages.nope.x}", "${stages.curate.nope}", "${run.id}",
    "${run.other}", "${other.x}", "${", "sft", "dpo", "PEFT_TYPE_LORA", "PEFT_TYPE_NOPE",
    "production", "tiny:llama-xs", "support-tickets", "curate", "", "../x", "é漢🙂", "\x00",
]  # fmt: skip

_yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=16),
    st.sampled_from(_SPEC_STRINGS),
    st.binary(max_size=8),
    st.dates(),
    st.datetimes(),
)
_yaml_keys = st.one_of(
    st.sampled_from(_SPEC_WORDS),
    st.text(max_size=10),
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.dates(),
)
_yaml_values = st.recursive(
    _yaml_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_yaml_keys, children, max_size=4)
    ),
    max_leaves=16,
)


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _spec_fields(kind: str) -> list[str]:
    spec_type = KINDS[kind].spec_type
    if spec_type is None:
        return ["spec"]
    return [f.name for f in spec_type.DESCRIPTOR.fields] + [
        f.json_name for f in spec_type.DESCRIPTOR.fields
    ]


def _mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
    """``valid`` four times in five: a spec with one bad field reaches the later checks."""
    return st.integers(0, 4).flatmap(lambda n: other if n == 4 else valid)


def _chance(draw: st.DrawFn, tenths: int) -> bool:
    """True ``tenths`` times in ten; hypothesis starts from 0, which picks the likelier side."""
    n = draw(st.integers(0, 9))
    return n < tenths if tenths >= 5 else n >= 10 - tenths


@st.composite
def _stage(draw: st.DrawFn, index: int) -> dict[Any, Any]:
    kind = draw(_mostly(st.sampled_from(sorted(KINDS)), _yaml_scalars))
    name = st.sampled_from([f"s{index}", "curate", "sft", "gate"])
    stage: dict[Any, Any] = {"name": draw(_mostly(name, _yaml_scalars)), "kind": kind}
    fields = _spec_fields(kind) if isinstance(kind, str) and kind in KINDS else _SPEC_WORDS
    spec = st.dictionaries(st.sampled_from(fields), _yaml_values, max_size=3)
    own = {"promote": ("alias", "model"), "approve": ("message",)}.get(kind, ("spec",))
    for key, value in (
        ("spec", _mostly(st.just({}), spec)),
        ("alias", _mostly(st.just("production"), _yaml_values)),
        ("model", st.sampled_from(_SPEC_STRINGS)),
        ("message", _mostly(st.text(max_size=20), _yaml_values)),
        ("deadline_seconds", st.one_of(st.integers(-5, 2**70), _yaml_values)),
        ("x-extra", _yaml_values),
    ):
        if _chance(draw, 8 if key in own else 1):
            stage[key] = draw(value)
    return stage


@st.composite
def _pipeline_doc(draw: st.DrawFn) -> str:
    doc: dict[Any, Any] = {}
    if _chance(draw, 9):
        doc["name"] = draw(_mostly(st.sampled_from(["fuzz", "support-tickets"]), _yaml_scalars))
    if _chance(draw, 9):
        count = draw(st.integers(1, 4))
        stages = st.tuples(*(_stage(i) for i in range(count))).map(list)
        doc["stages"] = draw(_mostly(stages, _yaml_values))
    for key, strategy, odds in (
        ("parameters", st.dictionaries(_yaml_keys, _yaml_values, max_size=3), 3),
        ("workspace", _mostly(st.sampled_from(["default", "team-a"]), _yaml_values), 3),
        ("description", _yaml_values, 3),
        ("extra", _yaml_values, 1),
    ):
        if _chance(draw, odds):
            doc[key] = draw(strategy)
    return _dump(doc)


def _slots(data: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key or index) of every value in the document."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield data, key
            yield from _slots(value)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield data, i
            yield from _slots(value)


@st.composite
def _mutated_example(draw: st.DrawFn) -> str:
    """The support-tickets example with a few values replaced, removed, added or repeated."""
    doc = copy.deepcopy(EXAMPLE)  # keeps the &lora anchor: one object used twice
    for _ in range(draw(st.integers(1, 4))):
        container, key = draw(st.sampled_from(list(_slots(doc))))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "repeat"]))
        if op == "replace":
            container[key] = draw(_yaml_values)
        elif op == "delete":
            del container[key]
        elif op == "repeat":  # a stage or value twice: the same object, an alias when dumped
            value = container[key]
            if isinstance(container, list):
                container.append(value)
            else:
                container[draw(_yaml_keys)] = value
        elif isinstance(container, list):
            container.insert(key, draw(_yaml_values))
        else:
            container[draw(_yaml_keys)] = draw(_yaml_values)
    return _dump(doc)


@st.composite
def _mutated_source(draw: st.DrawFn) -> str:
    """The example's YAML text with slices deleted, repeated or overwritten."""
    text = EXAMPLE_YAML
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 300)))
        op = draw(st.sampled_from(["delete", "repeat", "insert"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "repeat":
            text = text[:j] + text[i:j] + text[j:]
        else:
            junk = draw(st.text(alphabet=":-[]{},&*!|>'\"#%@` \n\tab01<", max_size=12))
            text = text[:i] + junk + text[i:]
    return text


def _nested(kind: str, n: int) -> str:
    if kind.startswith("block"):
        n = min(n, 1500)  # its indentation grows as n**2: 1500 is past MAX_SPEC_BYTES already
    if kind == "flow-list":
        return "[" * n + "]" * n
    if kind == "flow-map":
        return "{a: " * n + "b" + "}" * n
    if kind == "block-map":
        return "".join(" " * i + "a:\n" for i in range(n)) + " " * n + "b\n"
    if kind == "block-list":
        return "".join(" " * (2 * i) + "-\n" for i in range(n))
    if kind == "in-spec":  # deep inside a stage's spec (a Struct field)
        return (
            "name: deep\nstages:\n  - name: sft\n    kind: train\n    spec:\n"
            "      method_config: " + "{a: " * n + "1" + "}" * n + "\n"
        )
    return "name: deep\nstages: " + "[" * n + "]" * n + "\n"  # "stages"


def _laughs(levels: int, fan_out: int) -> str:
    """A "billion laughs" document: each level aliases the previous one ``fan_out`` times."""
    lines = ["name: laughs", "l0: &l0 [lol]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan_out)}]")
    lines.append(f"stages: *l{levels}")
    return "\n".join(lines) + "\n"


_ALIAS_CASES = [
    "&a [*a]",
    "a: &a {b: *a}",
    "name: x\nstages: &s [*s]\n",
    "name: x\nstages: [&s {name: a, kind: approve}, *s]\n",
    "*nope\n",
    "a: *nope\n",
    "base: &b {name: x, stages: [{name: a, kind: approve}]}\n<<: *b\n",
    "<<: &b [1, 2]\n",
    "a: &b [1, 2]\n<<: *b\n",
    "name: x\nstages:\n  - &st {name: a, kind: train, spec: &sp {method: sft}}\n"
    "  - {name: b, kind: train, spec: *sp}\n",
    "name: x\nparameters: &p {a: b}\nstages: [{name: a, kind: approve, message: *p}]\n",
]
_TAG_CASES = [
    "!!python/object/apply:os.system ['true']\n",
    "name: !!python/name:os.system\nstages: []\n",
    "!!set {a, b}\n",
    "!!omap [a: 1, b: 2]\n",
    "name: !!binary aGk=\nstages: []\n",
    "name: !!timestamp 2001-12-14\nstages: []\n",
    "name: !custom x\n",
    "%YAML 1.1\n---\nname: x\n",
    "--- a\n--- b\n",
    "name: !!int x\n",
    "name: !!float nope\n",
    "name: x\nstages: [{name: a, kind: approve, message: 2001-02-30}]\n",
    "name: !!timestamp nope\n",
    "name: !!bool maybe\n",
    "name: !!int\n",
    "? [a, b]\n: c\n",
    "? {a: b}\n: c\n",
    "name: x\nname: y\nstages: [{name: a, kind: approve}]\n",
    "\ufeffname: x\n",
    "name: x\x00\n",
    "name: x\x85y\n",
    "",
    "~",
    "- a\n- b\n",
    "1",
]
#: over MAX_SPEC_BYTES (built when drawn: hypothesis shows strategies' reprs)
_too_long = st.sampled_from(["a", "name: x"]).map(lambda head: head + "x" * MAX_SPEC_BYTES)

YAML_FAMILIES: dict[str, Any] = {
    "random documents": _yaml_values.map(_dump),
    "pipeline-shaped": _pipeline_doc(),
    "mutated example": _mutated_example(),
    "mutated example text": _mutated_source(),
    "random text": st.one_of(
        st.text(max_size=300),
        st.text(alphabet=":-[]{},&*!|>'\"#%@` \n\tab01<?~", max_size=300),
        st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")),
        st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    ),
    "deep nesting": st.builds(
        _nested,
        st.sampled_from(["flow-list", "flow-map", "block-map", "block-list", "in-spec", "stages"]),
        st.one_of(st.integers(1, 120), st.integers(120, 1400), st.integers(1400, 200_000)),
    ),
    "aliases and tags": st.one_of(
        st.builds(_laughs, st.integers(1, 12), st.integers(2, 12)),
        st.sampled_from(_ALIAS_CASES + _TAG_CASES),
        _too_long,
    ),
}
YAML_EXAMPLES = {
    "random documents": 120,
    "pipeline-shaped": 200,
    "mutated example": 150,
    "mutated example text": 100,
    "random text": 100,
    "deep nesting": 40,
    "aliases and tags": 60,
}
#: families built from valid specs: some of their inputs must load
_NEAR_VALID = ("pipeline-shaped", "mutated example", "mutated example text")
_parameters = st.one_of(
    st.just(EXAMPLE_PARAMS),
    st.just({}),
    st.dictionaries(st.sampled_from(["source", "feedback", "x"]) | st.text(max_size=5), st.text()),
)


def _load_outcome(text: str, parameters: dict[str, str]) -> str:
    """Load one spec; "loaded" or the refusal's reason. Anything else fails the case."""
    started = time.monotonic()
    try:
        parse_spec(text, parameters)
        outcome = "loaded"
    except InvalidArgument as exc:
        assert exc.message, f"an InvalidArgument without a message for {text[:200]!r}"
        assert exc.reason in ("PIPELINE_SPEC_INVALID", "PIPELINE_SPEC_TOO_LARGE"), exc.reason
        outcome = exc.reason
    except Exception as exc:  # the point of the case: name the input that broke the loader
        raise AssertionError(
            f"parse_spec raised {type(exc).__name__}: {exc} for input {text[:300]!r}"
        ) from exc
    took = time.monotonic() - started
    assert took < MAX_INPUT_S, f"parse_spec took {took:.1f} s for {len(text)} characters"
    return outcome


def test_example_pipeline_spec_loads() -> None:
    """The mutations start from a valid spec (or they would only test the first error)."""
    assert parse_spec(EXAMPLE_YAML, EXAMPLE_PARAMS).name == "support-tickets"


@pytest.mark.parametrize("family", list(YAML_FAMILIES))
def test_fuzzed_pipeline_yaml_loads_or_is_invalid_argument(family: str, figures: Any) -> None:
    outcomes: dict[str, int] = {}

    @settings(FUZZ, max_examples=YAML_EXAMPLES[family])
    @given(text=YAML_FAMILIES[family], parameters=_parameters)
    def fuzz(text: str, parameters: dict[str, str]) -> None:
        outcome = _load_outcome(text, parameters)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    fuzz()
    tried = sum(outcomes.values())
    if family in _NEAR_VALID:  # they reach the checks after the first problem
        assert outcomes.get("loaded"), f"no input of {family!r} loaded at all: {outcomes}"
    figures.record(
        f"pipeline YAML ({family})",
        "fuzz",
        injected=tried,
        survived=tried,
        outcome="loaded or INVALID_ARGUMENT ("
        + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        + ")",
    )


# --- the services --------------------------------------------------------------------------

SERVE_KEY = "fuzz-serve-key"
SERVE_MODEL = "fuzz-bot"


class _LoopThread:
    """An event loop in a thread: the services run there, the (sync) clients here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="fuzz-services", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 180) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        self.run(cancel_rest(), 60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


class _Tracebacks(logging.Handler):
    """Keeps the tracebacks the services log, so a failure shows what raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(self.format(record))

    def latest(self) -> str:
        return self.records[-1] if self.records else "(no traceback logged)"


@dataclasses.dataclass
class Stack:
    loop: _LoopThread
    services: dict[str, RunningService[Any]]
    #: ids, names and paths that exist, so fuzzed requests also reach the "found" paths
    known: list[str]
    http_port: int
    tracebacks: _Tracebacks


def _definitions() -> dict[str, ServiceDefinition[Any]]:
    from tunewright.evaluator.server import DEFINITION as EVALUATOR
    from tunewright.ingest.server import DEFINITION as INGEST
    from tunewright.monitor.server import DEFINITION as MONITOR
    from tunewright.registry.server import DEFINITION as REGISTRY
    from tunewright.serve.server import DEFINITION as SERVE
    from tunewright.synth.server import DEFINITION as SYNTH
    from tunewright.trainer.server import DEFINITION as TRAINER

    def grpc_only(definition: ServiceDefinition[Any]) -> ServiceDefinition[Any]:
        return dataclasses.replace(definition, consumers=lambda _ctx: ())

    return {
        "registry": REGISTRY,
        "ingest": grpc_only(INGEST),
        "trainer": grpc_only(TRAINER),
        "evaluator": grpc_only(EVALUATOR),
        "synth": grpc_only(SYNTH),
        "monitor": grpc_only(MONITOR),
        "serve": SERVE,
    }


async def _start_all(nats_url: str, root: Path) -> dict[str, RunningService[Any]]:
    definitions = _definitions()
    running: dict[str, RunningService[Any]] = {}

    def common(name: str) -> dict[str, Any]:
        return {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": root / name}

    try:
        registry = definitions["registry"]
        running["registry"] = await start_service(
            registry, load_settings(registry.settings_cls, **common("registry"))
        )
        address = f"127.0.0.1:{running['registry'].port}"
        sections: dict[str, dict[str, Any]] = {
            "ingest": {"ingest": {"import_roots": [str(root / "imports")]}},
            "trainer": {},
            "evaluator": {"evaluator": {"registry_address": address}},
            "synth": {"synth": {"registry_address": address}},
            "monitor": {"monitor": {"registry_address": address}},
            "serve": {
                "serve": {
                    "registry_address": address,
                    "http": {"port": 0, "api_key": SERVE_KEY},
                    "limits": {"max_tokens": 8, "default_max_tokens": 4},
                    "traffic": {"feedback_grace_s": 30},
                }
            },
        }
        for name, section in sections.items():
            definition = definitions[name]
            settings_ = load_settings(definition.settings_cls, **common(name), **section)
            running[name] = await start_service(definition, settings_)
        return running
    except BaseException:
        for service in reversed(running.values()):
            await service.stop()
        raise


async def _seed(stack_root: Path, services: dict[str, RunningService[Any]]) -> list[str]:
    """A served model (untrained LoRA adapter on the tiny base, alias production) and a file
    to import: what exists, for the fuzzed requests to find."""
    from trained_adapters import train_adapter

    from tunewright.common.v1 import common_pb2
    from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

    folder = await asyncio.to_thread(train_adapter, "Fuzzed.", stack_root / "adapter", steps=0)
    weights = await services["serve"].context.artifacts.put_dir(folder)
    (stack_root / "imports").mkdir(exist_ok=True)
    (stack_root / "imports" / "tickets.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hi"}, '
        '{"role": "assistant", "content": "hello"}]}\n'
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{services['registry'].port}") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        reply = await stub.RegisterModelVersion(
            registry_pb2.RegisterModelVersionRequest(
                model_version=registry_pb2.ModelVersion(
                    model=SERVE_MODEL,
                    base_model="tiny:llama-xxs",
                    method="sft",
                    weights=common_pb2.ArtifactRef(
                        uri=weights.uri, sha256=weights.sha256, media_type=weights.media_type
                    ),
                )
            )
        )
        version = reply.model_version
        await stub.Promote(
            registry_pb2.PromoteRequest(
                model_version_id=version.id,
                alias="production",
                force=True,
                actor="fuzz",
                reason="fuzz suite",
            )
        )
    return [
        version.id,
        SERVE_MODEL,
        f"{SERVE_MODEL}:production",
        "production",
        weights.uri,
        "tickets.jsonl",
        str(stack_root / "imports" / "tickets.jsonl"),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fuzz-stack")
    tracebacks = _Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    loop = _LoopThread()
    try:
        with NatsServer(root / "nats") as nats:
            services = loop.run(_start_all(nats.url, root))
            try:
                known = loop.run(_seed(root, services))
                port = services["serve"].context.resources["http_port"]
                yield Stack(loop, services, known, port, tracebacks)
            finally:
                for service in reversed(list(services.values())):
                    loop.run(service.stop(), 60)
    finally:
        loop.close()
        logging.getLogger().removeHandler(tracebacks)


# --- request messages from descriptors ------------------------------------------------------

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_TRICKY_STRINGS = [
    "", " ", "default", "other-ws", "../x", "../../etc/passwd", "/etc/passwd", "./",
    "x/../../y", "C:\\x", "a" * 300, "\x00", "\n", "é漢字🙂", "\u202e", "${run.id}",
    "tiny:llama-xs", "tiny:llama-xxs", "hf:nope/none", "sft", "dpo", "lora", "model:alias",
    ":", "a:", ":b", "a:b:c", "%s%n", "' OR 1=1 --", "tw.>", "*", "$SYS", "-1", "NaN", "1e309",
    "null", "{}", "[]", "file:///etc/passwd", "file:///nonexistent/x.jsonl", "s3://bucket/key",
    "local://nope", "sha256:" + "0" * 64, "0" * 64, "rouge_l", "exact_match", "PEFT_TYPE_LORA",
    "mv-1", "dsv-1", "eval-1", "job-1", "tickets", "category", "cpu", "cuda", "user",
    "assistant", "system", "production", "staging",
]  # fmt: skip
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_:."


def _strings(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(_TRICKY_STRINGS + known),
        st.sampled_from(known) if known else st.nothing(),
        st.integers(60_000, 70_000).map(lambda n: "x" * n),
        st.text(max_size=24),
        st.text(alphabet=_ID_CHARS, min_size=1, max_size=24),
    )


def _scalar(field: FieldDescriptor, known: list[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        edges = sorted({low, high, 0, 1, 2, 7, 100, 10_000, max(low, -1), high - 1})
        return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(0, 64))
    if kind == FieldDescriptor.TYPE_DOUBLE:
        special = [0.0, 0.5, 1.0, -1.0, 1e308, -0.0, math.nan, math.inf, -math.inf]
        return st.one_of(st.floats(), st.sampled_from(special))
    if kind == FieldDescriptor.TYPE_FLOAT:
        special = [0.0, 0.5, 1.0, 2.0, -1.0, math.nan, math.inf, -math.inf]
        return st.one_of(st.floats(width=32), st.sampled_from(special))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return _strings(known)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(
            st.binary(max_size=64),
            st.integers(90_000, 100_000).map(lambda n: b"\xff" * n),
            st.just(b"{}\n"),
        )
    if kind == FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values]
        if field.enum_type.is_closed:
            return st.sampled_from(values)
        return st.one_of(st.sampled_from(values), st.integers(-(2**31), 2**31 - 1))
    raise AssertionError(f"no strategy for field type {kind} ({field.full_name})")


_MAX_DEPTH = 4


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


@st.composite
def messages(
    draw: st.DrawFn,
    descriptor: Descriptor,
    known: list[str],
    overrides: dict[str, st.SearchStrategy[Any]],
    depth: int = 0,
) -> Any:
    """A message of ``descriptor`` with random values in a random subset of its fields."""
    msg = message_factory.GetMessageClass(descriptor)()

    def value(field: FieldDescriptor) -> Any:
        if field.full_name in overrides:
            return draw(overrides[field.full_name])
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return draw(messages(field.message_type, known, overrides, depth + 1))
        return draw(_scalar(field, known))

    # one member (or none) of each real oneof: a later member would clear an earlier one
    chosen = {
        draw(st.sampled_from([None, *oneof.fields]))
        for oneof in descriptor.oneofs
        if not (len(oneof.fields) == 1 and oneof.name == f"_{oneof.fields[0].name}")
    }
    in_oneof = {f for o in descriptor.oneofs if len(o.fields) > 1 for f in o.fields}
    for field in descriptor.fields:
        nested = field.type == FieldDescriptor.TYPE_MESSAGE
        if (nested and depth >= _MAX_DEPTH) or (field in in_oneof and field not in chosen):
            continue
        if field not in chosen and not draw(st.booleans()):
            continue
        target = getattr(msg, field.name)
        if _is_map(field):
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 3))):
                key = draw(_scalar(key_field, known))
                item = value(value_field)
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            items = [value(field) for _ in range(draw(st.integers(0, 3)))]
            if nested:
                for item in items:
                    target.add().CopyFrom(item)
            else:
                target.extend(items)
        elif nested:
            target.CopyFrom(value(field))
        else:
            setattr(msg, field.name, value(field))
    return msg


#: gRPC status codes that state a reason (with the message); UNAVAILABLE only from a domain
#: error (it names its reason), not from a transport that gave up
STATED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNAVAILABLE,
}
RPC_TIMEOUT_S = 30.0


def _service_descriptors() -> dict[str, Any]:
    from tunewright.evaluator.v1 import evaluator_pb2
    from tunewright.ingest.v1 import ingest_pb2
    from tunewright.monitor.v1 import monitor_pb2
    from tunewright.registry.v1 import registry_pb2
    from tunewright.serve.v1 import serve_pb2
    from tunewright.synth.v1 import synth_pb2
    from tunewright.trainer.v1 import trainer_pb2

    return {
        "registry": registry_pb2.DESCRIPTOR.services_by_name["RegistryService"],
        "ingest": ingest_pb2.DESCRIPTOR.services_by_name["IngestService"],
        "trainer": trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
        "evaluator": evaluator_pb2.DESCRIPTOR.services_by_name["EvaluatorService"],
        "synth": synth_pb2.DESCRIPTOR.services_by_name["SynthService"],
        "monitor": monitor_pb2.DESCRIPTOR.services_by_name["MonitorService"],
        "serve": serve_pb2.DESCRIPTOR.services_by_name["ServeService"],
    }


def _fuzzed_methods(service: Any) -> list[MethodDescriptor]:
    """Unary and client-streaming RPCs: a server stream follows a job until it ends."""
    return [m for m in service.methods if not m.server_streaming]


#: requests per RPC (a client-streaming call sends 1-3 of them)
RPC_EXAMPLES = 30
_yaml_any = st.one_of(*YAML_FAMILIES.values())


def _overrides() -> dict[str, st.SearchStrategy[Any]]:
    """Fields whose values come from a domain strategy rather than the descriptor's type."""
    specs = st.one_of(_pipeline_doc(), _pipeline_doc(), _mutated_source(), _yaml_any)
    return {"tunewright.registry.v1.SubmitPipelineRunRequest.spec_yaml": specs}


@dataclasses.dataclass(frozen=True)
class KnownBug:
    """An unhandled exception this suite found in code other people own, reported to them:
    tolerated (and counted as not survived) only for the inputs that trigger it."""

    method: str
    what: str
    applies: Callable[[Any], bool]


def _long(text: str, limit: int) -> bool:
    return len(text.encode()) > limit


def _not_json(struct: Any) -> bool:
    try:
        json_format.MessageToDict(struct)
    except ValueError:  # NaN or Infinity in a number_value
        return True
    return False


#: none left: each one found was fixed (regression tests beside the fixes)
KNOWN_BUGS: list[KnownBug] = []
KNOWN = "known bug"


def _shown(request: Any) -> str:
    """The request as text, long runs of one character shortened."""
    text = re.sub(r"(.)\1{40,}", lambda m: f"{m.group(1)}*{len(m.group(0))}", str(request))
    return text[:2000]


def _check_rpc(
    stack: Stack, method: MethodDescriptor, call: Any, request: Any, streaming: bool
) -> str:
    before = len(stack.tracebacks.records)
    first = request[0] if streaming else request
    try:
        if streaming:
            call(iter(request), timeout=RPC_TIMEOUT_S)
        else:
            call(request, timeout=RPC_TIMEOUT_S)
        return "OK"
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
        if code not in STATED or not details.strip():
            if code == grpc.StatusCode.INTERNAL and any(
                b.method == method.full_name and b.applies(first) for b in KNOWN_BUGS
            ):
                return KNOWN
            logged = (
                stack.tracebacks.latest()
                if len(stack.tracebacks.records) > before
                else "(no traceback logged)"
            )
            raise AssertionError(
                f"{method.full_name} answered {code.name} ({details!r}) to a fuzzed "
                f"{type(first).__name__}: {_shown(request)}\n--- server log ---\n{logged}"
            ) from None
        if code == grpc.StatusCode.UNAVAILABLE:
            reason, _ = error_details(exc)
            assert reason, f"{method.full_name}: UNAVAILABLE without a stated reason: {details}"
        return str(code.name)


@pytest.mark.parametrize("service_name", list(_service_descriptors()))
def test_fuzzed_rpcs_answer_ok_or_a_stated_status(
    service_name: str, stack: Stack, figures: Any
) -> None:
    service = _service_descriptors()[service_name]
    port = stack.services[service_name].port
    outcomes: dict[str, int] = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for method in _fuzzed_methods(service):
            request_cls = message_factory.GetMessageClass(method.input_type)
            response_cls = message_factory.GetMessageClass(method.output_type)
            path = f"/{service.full_name}/{method.name}"
            make = channel.stream_unary if method.client_streaming else channel.unary_unary
            call = make(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            requests = messages(method.input_type, stack.known, _overrides())
            strategy = (
                st.lists(requests, min_size=1, max_size=3) if method.client_streaming else requests
            )

            @settings(FUZZ, max_examples=RPC_EXAMPLES)
            @given(request=strategy)
            def fuzz(request: Any) -> None:
                outcome = _check_rpc(stack, method, call, request, method.client_streaming)  # noqa: B023
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

            fuzz()
    tried = sum(outcomes.values())
    figures.record(
        f"gRPC {service.name} ({len(_fuzzed_methods(service))} RPCs)",
        "fuzz",
        injected=tried,
        survived=tried - outcomes.get(KNOWN, 0),
        outcome="OK or a stated status ("
        + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        + ")",
    )


# --- serve's HTTP API ----------------------------------------------------------------------

_any_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _models(stack: Stack) -> st.SearchStrategy[Any]:
    served = [SERVE_MODEL, f"{SERVE_MODEL}:production", stack.known[0]]
    hostile = st.one_of(
        st.sampled_from(["", " ", ":", "a:", ":b", "nope", f"{SERVE_MODEL}:staging", "../x"]),
        st.integers(250, 300).map(lambda n: "x" * n),
        st.text(max_size=12),
        _any_json,
    )
    return _mostly(st.sampled_from(served), hostile)


def _numbers() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(-3, 10),
        st.sampled_from([0, -1, 2**31, 2**63, 2**64, 10**30, -(2**63) - 1]),
        st.floats(),
        st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, "1", "abc", None, True, [], {}]),
    )


def _content() -> st.SearchStrategy[Any]:
    parts = st.lists(
        st.fixed_dictionaries(
            {"type": _mostly(st.just("text"), st.sampled_from(["image_url", "input_audio"]))},
            optional={"text": _mostly(st.text(max_size=20), _any_json)},
        ),
        max_size=3,
    )
    hostile = st.one_of(
        st.integers(12_000, 13_000).map(lambda n: "word " * n),  # over max_prompt_chars
        st.none(),
        parts,
        _any_json,
    )
    return _mostly(st.text(max_size=40), hostile)


def _turn() -> st.SearchStrategy[Any]:
    roles = st.sampled_from(["user", "user", "system", "assistant", "developer"])
    hostile = st.one_of(st.sampled_from(["tool", "function", "", "USER"]), _any_json)
    turn = st.fixed_dictionaries(
        {"role": _mostly(roles, hostile), "content": _content()},
        optional={"name": _any_json, "tool_calls": _any_json},
    )
    return _mostly(turn, _any_json)


#: field -> (a value the server takes, anything else)
_Fields = dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]


def _sampling_fields() -> _Fields:
    stop = st.one_of(
        st.text(min_size=1, max_size=5), st.lists(st.text(min_size=1, max_size=4), max_size=4)
    )
    return {
        "max_tokens": (st.integers(1, 8), _numbers()),
        "max_completion_tokens": (st.integers(1, 8), _numbers()),
        "temperature": (st.floats(0, 2), _numbers()),
        "top_p": (st.floats(0.01, 1), _numbers()),
        "seed": (st.integers(0, 2**32), _numbers()),
        "n": (st.just(1), _numbers()),
        "stop": (
            stop,
            st.one_of(st.just([""]), st.lists(st.text(max_size=3), min_size=5), _any_json),
        ),
        "stream": (st.booleans(), _any_json),
        "stream_options": (
            st.fixed_dictionaries({"include_usage": st.booleans()}),
            _any_json,
        ),
        "user": (st.text(max_size=10), _any_json),
        "tools": (st.just([]), st.one_of(st.just([{"type": "function"}]), _any_json)),
        "logprobs": (st.just(False), _any_json),
        "response_format": (
            st.just({"type": "text"}),
            st.one_of(st.sampled_from([{"type": "json_object"}, {"type": "x"}]), _any_json),
        ),
        "frequency_penalty": (st.just(0), _numbers()),
    }


@st.composite
def _body(draw: st.DrawFn, required: _Fields, optional: _Fields) -> Any:
    """Mostly well-formed bodies with a few bad fields, some garbage: each bad value meets
    the checks after the ones a fully random body would fail first."""
    if _chance(draw, 1):
        return draw(_any_json)  # not even an object with the right keys
    body = {}
    for key, (valid, hostile) in required.items():
        if _chance(draw, 9):
            body[key] = draw(_mostly(valid, hostile))
    for key, (valid, hostile) in optional.items():
        if _chance(draw, 2):
            body[key] = draw(_mostly(valid, hostile))
    if _chance(draw, 1):
        body[draw(st.text(max_size=10))] = draw(_any_json)
    return body


def _chat_bodies(stack: Stack) -> st.SearchStrategy[Any]:
    turns = st.lists(_turn(), min_size=1, max_size=3)
    return _body(
        {
            "model": (_models(stack), _models(stack)),
            "messages": (turns, st.one_of(st.just([]), _any_json)),
        },
        {
            **_sampling_fields(),
            "metadata": (st.dictionaries(st.text(max_size=8), st.text(max_size=8)), _any_json),
        },
    )


def _completion_bodies(stack: Stack) -> st.SearchStrategy[Any]:
    prompt = st.one_of(st.text(max_size=40), st.lists(st.text(max_size=10), min_size=1, max_size=1))
    return _body(
        {
            "model": (_models(stack), _models(stack)),
            "prompt": (
                prompt,
                st.one_of(
                    st.lists(st.text(max_size=10), min_size=2, max_size=3),
                    st.lists(st.integers(0, 50_000), max_size=5),  # token ids
                    st.integers(60_000, 70_000).map(lambda n: "x" * n),
                    _any_json,
                ),
            ),
        },
        {
            **_sampling_fields(),
            "echo": (st.just(False), _any_json),
            "suffix": (st.just(None), _any_json),
            "best_of": (st.just(1), _numbers()),
        },
    )


def _feedback_bodies(completion_ids: list[str]) -> st.SearchStrategy[Any]:
    hostile = st.one_of(
        st.sampled_from(["", "chatcmpl-nope", "x" * 129, "../x"]),
        st.text(max_size=30),
        _any_json,
    )
    return _body(
        {"completion_id": (st.sampled_from(completion_ids), hostile)},
        {
            "thumbs": (st.integers(-1, 1), _numbers()),
            "escalated": (st.booleans(), _any_json),
            "resolved": (st.booleans(), _any_json),
        },
    )


def _encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def _check_http(response: httpx.Response, what: str) -> str:
    status = response.status_code
    shown = f"{what} -> {status}: {response.text[:800]!r}"
    assert 200 <= status < 300 or 400 <= status < 500, f"not a 2xx or 4xx: {shown}"
    if status >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise AssertionError(f"a 4xx without OpenAI's error JSON: {shown}") from None
        assert isinstance(error.get("message"), str) and error["message"].strip(), shown
        assert isinstance(error.get("type"), str) and error["type"], shown
    return str(status)


def _post(
    client: httpx.Client,
    path: str,
    content: Any,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {"authorization": f"Bearer {SERVE_KEY}", "content-type": "application/json"}
    sent.update(headers or {})
    return client.post(path, content=content, headers={k: v for k, v in sent.items() if v})


HTTP_EXAMPLES = {"chat": 60, "completions": 40, "feedback": 40, "headers": 40, "garbage": 40}


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.http_port}", timeout=60) as client:
        yield client


def _record(figures: Any, case: str, outcomes: dict[str, int]) -> None:
    tried = sum(outcomes.values())
    figures.record(
        case,
        "fuzz",
        injected=tried,
        survived=tried,
        outcome="2xx or 4xx with OpenAI's error JSON ("
        + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        + ")",
    )


def test_a_valid_chat_request_is_answered(http: httpx.Client, stack: Stack) -> None:
    """The fuzzing reaches the model: a well-formed request gets an answer."""
    reply = _post(
        http,
        "/v1/chat/completions",
        _encode({"model": SERVE_MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize("route", ["chat", "completions", "feedback"])
def test_fuzzed_json_bodies_get_2xx_or_an_openai_error(
    route: str, http: httpx.Client, stack: Stack, figures: Any
) -> None:
    completion_ids: list[str] = []
    if route == "feedback":  # some feedback is for answers that exist
        for _ in range(2):
            reply = _post(
                http,
                "/v1/chat/completions",
                _encode({"model": SERVE_MODEL, "messages": [{"role": "user", "content": "a"}]}),
            )
            completion_ids.append(reply.json()["id"])
    bodies = {
        "chat": _chat_bodies(stack),
        "completions": _completion_bodies(stack),
        "feedback": _feedback_bodies(completion_ids),
    }[route]
    path = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}.get(
        route, "/v1/feedback"
    )
    outcomes: dict[str, int] = {}

    @settings(FUZZ, max_examples=HTTP_EXAMPLES[route])
    @given(body=bodies)
    def fuzz(body: Any) -> None:
        outcome = _check_http(_post(http, path, _encode(body)), f"POST {path} {body!r:.600}")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    fuzz()
    assert outcomes.get("200"), f"no fuzzed {route} request was answered: {outcomes}"
    _record(figures, f"HTTP {path} (JSON bodies)", outcomes)


_AUTH = [
    None, "", f"Bearer {SERVE_KEY}", f"bearer {SERVE_KEY}", f"Bearer  {SERVE_KEY}",
    f"Bearer {SERVE_KEY}x", f"Bearer {SERVE_KEY[:-1]}", "Bearer",
    f"Basic {SERVE_KEY}", SERVE_KEY, f"Bearer {SERVE_KEY * 50}", "Bearer é漢",
    f"Token {SERVE_KEY}", "Bearer " + "x" * 8000,
]  # fmt: skip
_CONTENT_TYPES = [
    None, "application/json", "text/plain", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/json; charset=latin-1", "*/*", "é",
]  # fmt: skip
_ROUTES = [
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/feedback"),
    ("GET", "/v1/models"), ("GET", f"/v1/models/{SERVE_MODEL}"), ("GET", "/v1/models/nope"),
    ("GET", "/v1/models/%2e%2e%2fx"), ("GET", "/health"), ("GET", "/v1/chat/completions"),
    ("DELETE", "/v1/completions"), ("POST", "/v1/nope"), ("PUT", "/v1/feedback"),
    ("POST", "/v1/embeddings"), ("GET", "/"), ("OPTIONS", "/v1/models"),
]  # fmt: skip


def test_fuzzed_headers_and_routes_get_2xx_or_an_openai_error(
    http: httpx.Client, stack: Stack, figures: Any
) -> None:
    valid = _encode({"model": SERVE_MODEL, "messages": [{"role": "user", "content": "hi"}]})
    outcomes: dict[str, int] = {}
    refused_without_key = 0

    @settings(FUZZ, max_examples=HTTP_EXAMPLES["headers"])
    @given(
        auth=_mostly(st.just(f"Bearer {SERVE_KEY}"), st.sampled_from(_AUTH)),
        content_type=st.sampled_from(_CONTENT_TYPES),
        route=st.sampled_from(_ROUTES),
        extra=st.dictionaries(
            st.sampled_from(["x-request-id", "openai-organization", "accept", "user-agent"]),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
            max_size=2,
        ),
    )
    def fuzz(
        auth: str | None, content_type: str | None, route: tuple[str, str], extra: dict[str, str]
    ) -> None:
        nonlocal refused_without_key
        headers = {**extra}
        if auth is not None:
            headers["authorization"] = auth
        if content_type is not None:
            headers["content-type"] = content_type
        method, path = route
        body = valid if method in ("POST", "PUT") else None
        reply = http.request(
            method, path, content=body, headers={k: v.encode() for k, v in headers.items()}
        )
        outcome = _check_http(reply, f"{method} {path} headers={headers!r:.300}")
        if auth != f"Bearer {SERVE_KEY}" and path != "/health":
            assert reply.status_code in (401, 404, 405), f"{method} {path} with {auth!r}: {reply}"
            refused_without_key += reply.status_code == 401
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    fuzz()
    assert refused_without_key, "no request without the key was refused"
    _record(figures, "HTTP headers and routes", outcomes)


def _chunks(data: bytes, size: int = 65_536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


_BODY_LIMIT = 1024 * 1024  # serve.http.max_body_bytes' default


def _long_model(n: int) -> bytes:
    return b'{"model": "' + b"x" * n + b'"}'


def _garbage_bodies() -> st.SearchStrategy[tuple[str, Any]]:
    limit = _BODY_LIMIT
    valid = {"model": SERVE_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    text = json.dumps(valid)
    return st.one_of(
        st.tuples(st.just("bytes"), st.binary(max_size=300)),
        st.tuples(st.just("text"), st.text(max_size=300).map(str.encode)),
        st.tuples(
            st.just("truncated"),
            st.integers(0, len(text)).map(lambda n: text[:n].encode()),
        ),
        st.tuples(
            st.just("nested"),
            st.integers(10, 200_000).map(lambda n: ("[" * n + "]" * n).encode()),
        ),
        st.tuples(
            st.just("nested-object"),
            st.integers(10, 100_000).map(lambda n: ('{"a":' * n + "1" + "}" * n).encode()),
        ),
        st.tuples(
            st.just("non-json numbers"),
            st.sampled_from([b"NaN", b"Infinity", b'{"model": NaN}', b'{"temperature": 1e999}']),
        ),
        st.tuples(
            st.just("latin-1"), st.just(json.dumps(valid).replace("hi", "h\xe9").encode("latin-1"))
        ),
        st.tuples(st.sampled_from(["huge", "huge chunked"]), st.just(limit + 10).map(_long_model)),
        st.tuples(
            st.just("many duplicated keys"),
            st.just(100_000).map(lambda n: ("{" + '"a": 1,' * n + '"b": 2}').encode()),
        ),
    )


def test_fuzzed_garbage_bodies_get_an_openai_error(
    http: httpx.Client, stack: Stack, figures: Any
) -> None:
    outcomes: dict[str, int] = {}

    @settings(FUZZ, max_examples=HTTP_EXAMPLES["garbage"])
    @given(
        garbage=_garbage_bodies(),
        path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/feedback"]),
    )
    @example(garbage=("huge", _long_model(_BODY_LIMIT + 10)), path="/v1/chat/completions")
    @example(garbage=("huge chunked", _long_model(_BODY_LIMIT + 10)), path="/v1/completions")
    def fuzz(garbage: tuple[str, bytes], path: str) -> None:
        kind, data = garbage
        content: Any = _chunks(data) if kind == "huge chunked" else data
        reply = _post(http, path, content)
        outcome = _check_http(reply, f"POST {path} {kind} body {data[:200]!r}")
        if kind.startswith("huge"):  # declared or chunked: refused before it is read whole
            assert reply.status_code == 413, f"{kind}: {reply.status_code} {reply.text}"
            assert reply.json()["error"]["code"] == "request_too_large"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    fuzz()
    _record(figures, "HTTP garbage and huge bodies", outcomes)
