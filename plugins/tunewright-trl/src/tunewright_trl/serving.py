"""The ``transformers`` serving backend: one base model loaded once, the LoRA adapters of many
model versions kept beside it, chosen per batch.

A model version is its chain of trained folders (root ancestor first). Everything up to the
last full-weights folder is the *base* (the base-model plugin's weights when the chain is all
LoRA, as the trainer builds it); every LoRA folder after it is loaded as a PEFT adapter of that
base, once, named after the model version that trained it. A DPO version trained on its merged
SFT parent is then the SFT adapter and the DPO adapter active together: LoRA deltas add, so
this equals the merged model the trainer trained on (``tests/test_serving.py`` checks the
answers against :func:`tunewright_trl.generation.load_causal_lm`).

One engine thread owns the models (torch is not asyncio-friendly, and PEFT adapter switching
mutates the model). Requests wait in a queue; each round the engine takes the oldest request
and every waiting request that can share its forward pass (same model version and decoding
settings), up to ``max_batch_size``, activates that version's adapters and runs one batched
``generate``. Tokens go back to each request as they are produced (a streamer that knows the
rows of the batch), and each row stops on its own EOS, stop sequence or token budget.

Adapters of versions not used lately are dropped (LRU bounded by ``max_adapters`` versions and
``max_adapter_bytes``); a base whose versions are all gone is dropped when another base is
needed (``max_bases``). A request for a dropped version just loads it again.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewright.core.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from tunewright.core.plugins import BaseModelRegistry
from tunewright.core.serving import Delta, GenerationRequest

if TYPE_CHECKING:
    from tunewright.core.model_versions import TrainedChain

log = logging.getLogger(__name__)

_ADAPTER_NAME = re.compile(r"[^A-Za-z0-9_]")


def adapter_name(model_version_id: str) -> str:
    """A PEFT adapter name (a module-dict key: no dots) for a model version's adapter."""
    return "v_" + _ADAPTER_NAME.sub("_", model_version_id)


def _is_lora(folder: Path) -> bool:
    return (folder / "model" / "adapter_config.json").is_file()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in (folder / "model").rglob("*") if p.is_file())


@dataclass
class _Base:
    key: tuple[str, ...]
    model: Any  # a PeftModel once it has an adapter, else the plain causal LM
    max_positions: int
    #: adapter name -> model version ids using it
    adapters: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class _Version:
    model_version_id: str
    base_key: tuple[str, ...]
    adapters: tuple[str, ...]
    tokenizer: Any
    eos_ids: frozenset[int]
    adapter_bytes: int
    #: versions with equal keys tokenize alike (same vocabulary and chat template)
    tokenizer_key: str = ""

    @property
    def mixable(self) -> bool:
        """One adapter (or none): rows of such versions share a batch via PEFT's
        ``adapter_names`` (a chain's adapters must be active together, so it gets its own)."""
        return len(self.adapters) <= 1


@dataclass
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Delta | BaseException]
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def sampling_key(self) -> tuple[Any, ...]:
        o = self.request.options
        return () if o.greedy else (o.temperature, o.top_p, o.seed)

    def send(self, item: Delta | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


@dataclass
class _Prepare:
    chain: TrainedChain
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]

    def finish(self, error: BaseException | None) -> None:
        def resolve() -> None:
            if self.done.done():
                return
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)

        self.loop.call_soon_threadsafe(resolve)


class TransformersBackend:
    """``factory(base_models=..., **params)``: see the module docstring for what it does."""

    def __init__(
        self,
        *,
        base_models: BaseModelRegistry,
        device: str = "auto",
        max_batch_size: int = 8,
        max_adapters: int = 16,
        max_adapter_bytes: int = 2 * 1024**3,
        max_bases: int = 1,
        max_queued: int = 256,
        max_prompt_tokens: int = 0,
    ) -> None:
        for name, value in (
            ("max_batch_size", max_batch_size),
            ("max_adapters", max_adapters),
            ("max_bases", max_bases),
            ("max_queued", max_queued),
        ):
            if value < 1:
                raise ValueError(f"transformers backend: {name} must be >= 1, got {value}")
        if max_prompt_tokens < 0:
            raise ValueError(f"max_prompt_tokens must be >= 0, got {max_prompt_tokens}")
        self.base_models = base_models
        self.device_setting = device
        self.max_batch_size = max_batch_size
        self.max_adapters = max_adapters
        self.max_adapter_bytes = max_adapter_bytes
        self.max_bases = max_bases
        self.max_queued = max_queued
        #: 0 = what the model's position embeddings allow, less the answer's budget
        self.max_prompt_tokens = max_prompt_tokens
        self._inbox: queue.Queue[_Job | _Prepare | None] = queue.Queue()
        self._waiting: list[_Job] = []
        self._bases: OrderedDict[tuple[str, ...], _Base] = OrderedDict()
        self._versions: OrderedDict[str, _Version] = OrderedDict()
        self._loaded_ids: tuple[str, ...] = ()
        self._device: str | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        #: batches run (bench/serve reports it)
        self.batches = 0

    # --- asyncio side -----------------------------------------------------------------------

    def loaded(self) -> list[str]:
        return list(self._loaded_ids)

    async def prepare(self, chain: TrainedChain) -> None:
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        item = _Prepare(chain, loop, loop.create_future())
        self._inbox.put(item)
        await item.done

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        if self._closed:
            raise FailedPrecondition("the serving backend is closed", reason="BACKEND_CLOSED")
        if self._inbox.qsize() + len(self._waiting) >= self.max_queued:
            raise ResourceExhausted(
                f"{self.max_queued} requests are already waiting; retry later",
                reason="SERVE_QUEUE_FULL",
            )
        self._ensure_thread()
        job = _Job(request, asyncio.get_running_loop(), asyncio.Queue())
        self._inbox.put(job)
        try:
            while True:
                item = await job.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # a client that went away frees its row at the next token
            job.cancelled.set()

    async def close(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join, 30)

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tw-serve-engine", daemon=True
                )
                self._thread.start()

    # --- engine thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            block = not self._waiting
            try:
                while True:
                    item = self._inbox.get(block=block)
                    block = False
                    if item is None:
                        self._fail_waiting()
                        return
                    if isinstance(item, _Prepare):
                        self._do_prepare(item)
                    elif not item.cancelled.is_set():
                        self._waiting.append(item)
            except queue.Empty:
                pass
            if not self._waiting:
                continue
            head = self._waiting[0]
            try:
                head_key = self._batch_key(head)
                batch = [head]
                for job in self._waiting[1:]:
                    if len(batch) >= self.max_batch_size:
                        break
                    if self._batch_key(job, load=False) == head_key:
                        batch.append(job)
            except Exception as exc:
                log.error("loading a model version failed", exc_info=True)
                self._waiting.pop(0)
                head.send(_public(exc))
                continue
            chosen = {id(j) for j in batch}
            self._waiting = [j for j in self._waiting if id(j) not in chosen]
            try:
                self._run_batch(batch)
            except Exception as exc:  # every row of the batch gets the error, the engine lives
                log.error(
                    "serving batch failed model_version_id=%s",
                    head.request.model_version_id,
                    exc_info=True,
                )
                error = (
                    exc
                    if isinstance(exc, (InvalidArgument, FailedPrecondition))
                    else (
                        FailedPrecondition(
                            f"generation failed: {type(exc).__name__}", reason="GENERATION_FAILED"
                        )
                    )
                )
                for job in batch:
                    job.send(error)

    def _batch_key(self, job: _Job, *, load: bool = True) -> tuple[Any, ...]:
        """Requests with equal keys share a forward pass: one model version, or versions of
        one base with a single adapter each and the same tokenizer (a mixed-adapter batch)."""
        version_id = job.request.model_version_id
        version = self._versions.get(version_id)
        if version is None:
            if not load:
                return ("unloaded", version_id)
            version = self._version(job.request.chain)
        if version.mixable:
            return ("mixed", version.base_key, version.tokenizer_key, job.sampling_key)
        return ("version", version_id, job.sampling_key)

    def _fail_waiting(self) -> None:
        error = FailedPrecondition("the serving backend is closing", reason="BACKEND_CLOSED")
        for job in self._waiting:
            job.send(error)
        self._waiting = []

    def _do_prepare(self, item: _Prepare) -> None:
        try:
            self._version(item.chain)
        except Exception as exc:
            item.finish(exc)
        else:
            item.finish(None)

    def _device_name(self) -> str:
        if self._device is None:
            import torch

            setting = self.device_setting
            if setting == "auto":
                setting = "cuda" if torch.cuda.is_available() else "cpu"
            self._device = setting
        return self._device

    # --- loading ----------------------------------------------------------------------------

    def _version(self, chain: TrainedChain) -> _Version:
        version = self._versions.get(chain.model_version_id)
        if version is not None:
            self._versions.move_to_end(chain.model_version_id)
            self._bases.move_to_end(version.base_key)
            return version
        folders = list(chain.folders)
        full = [i for i, f in enumerate(folders) if not _is_lora(f)]
        start = full[-1] + 1 if full else 0
        key: tuple[str, ...] = (
            ("full", str(folders[start - 1])) if full else (chain.base_model, str(chain.seed))
        )
        base = self._base(key, chain, folders[start - 1] if full else None)
        names = []
        for folder in folders[start:]:
            name = adapter_name(folder.name)
            if name not in base.adapters:
                self._load_adapter(base, name, folder)
            names.append(name)
        for name in names:
            base.adapters[name].add(chain.model_version_id)
        from tunewright_trl.generation import load_tokenizer

        tokenizer = load_tokenizer(chain.tokenizer)
        eos = {tokenizer.eos_token_id}
        configured = getattr(getattr(base.model, "generation_config", None), "eos_token_id", None)
        if isinstance(configured, int):
            eos.add(configured)
        elif isinstance(configured, list):
            eos.update(configured)
        version = _Version(
            chain.model_version_id,
            key,
            tuple(names),
            tokenizer,
            frozenset(i for i in eos if i is not None),
            sum(_folder_bytes(f) for f in folders[start:]),
            _tokenizer_key(chain.tokenizer / "tokenizer"),
        )
        self._versions[chain.model_version_id] = version
        self._evict(keep=chain.model_version_id)
        self._loaded_ids = tuple(self._versions)
        log.info(
            "model version loaded model_version_id=%s adapters=%d base=%s",
            chain.model_version_id,
            len(names),
            key[0],
        )
        return version

    def _base(self, key: tuple[str, ...], chain: TrainedChain, full: Path | None) -> _Base:
        if key in self._bases:
            self._bases.move_to_end(key)
            return self._bases[key]
        while len(self._bases) >= self.max_bases:
            self._drop_base(next(iter(self._bases)))
        if full is not None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(full / "model"), use_safetensors=True)
        else:
            from tunewright.core.model_versions import base_model

            model = base_model(self.base_models, chain.base_model, chain.seed).causal_lm()
        model.to(self._device_name())
        model.eval()
        positions = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        base = _Base(key, model, positions)
        self._bases[key] = base
        return base

    def _load_adapter(self, base: _Base, name: str, folder: Path) -> None:
        from peft import PeftModel

        path = str(folder / "model")
        if isinstance(base.model, PeftModel):
            base.model.load_adapter(path, adapter_name=name)
        else:
            base.model = PeftModel.from_pretrained(base.model, path, adapter_name=name)
        base.model.to(self._device_name())
        base.model.eval()
        base.adapters[name] = set()

    def _evict(self, keep: str) -> None:
        def over() -> bool:
            total = sum(v.adapter_bytes for v in self._versions.values())
            return len(self._versions) > self.max_adapters or total > self.max_adapter_bytes

        while over():
            victim = next((v for v in self._versions if v != keep), None)
            if victim is None:
                return
            self._drop_version(victim)

    def _drop_version(self, model_version_id: str) -> None:
        version = self._versions.pop(model_version_id)
        base = self._bases.get(version.base_key)
        if base is not None:
            for name in version.adapters:
                users = base.adapters.get(name, set())
                users.discard(model_version_id)
                if not users:
                    base.adapters.pop(name, None)
                    base.model.delete_adapter(name)
        self._loaded_ids = tuple(self._versions)
        log.info("model version unloaded model_version_id=%s", model_version_id)

    def _drop_base(self, key: tuple[str, ...]) -> None:
        for version_id in [
            v.model_version_id for v in self._versions.values() if v.base_key == key
        ]:
            self._drop_version(version_id)
        self._bases.pop(key, None)

    # --- generating -------------------------------------------------------------------------

    def _run_batch(self, jobs: list[_Job]) -> None:
        import torch

        first = jobs[0].request
        versions = [self._version(j.request.chain) for j in jobs]
        version = versions[0]
        base = self._bases[version.base_key]
        tok = version.tokenizer
        budget = max(j.request.options.max_tokens for j in jobs)
        limit = self.max_prompt_tokens or max(base.max_positions - budget, 1)
        texts, rows, row_versions = [], [], []
        for job, job_version in zip(jobs, versions, strict=True):
            text = _prompt_text(tok, job.request)
            n = len(tok(text, add_special_tokens=job.request.messages is None)["input_ids"])
            if base.max_positions and n > limit:
                job.send(
                    InvalidArgument(
                        f"the prompt is {n} tokens; this model takes at most {limit} with "
                        f"max_tokens={job.request.options.max_tokens}",
                        reason="CONTEXT_LENGTH_EXCEEDED",
                    )
                )
                continue
            texts.append(text)
            rows.append(job)
            row_versions.append(job_version)
        if not rows:
            return
        device = self._device_name()
        batch = tok(
            texts, return_tensors="pt", padding=True, add_special_tokens=first.messages is None
        ).to(device)
        prompt_tokens = [int(n) for n in batch["attention_mask"].sum(dim=1).tolist()]
        streamer = _RowStreamer(rows, tok, version.eos_ids, prompt_tokens)
        options = first.options
        kwargs: dict[str, Any] = {
            "max_new_tokens": budget,
            "do_sample": not options.greedy,
            "eos_token_id": sorted(version.eos_ids),
            "pad_token_id": tok.pad_token_id,
            "streamer": streamer,
            "stopping_criteria": _stopping(streamer),
        }
        if not options.greedy:
            kwargs.update(temperature=options.temperature, top_p=options.top_p)
            if options.seed is not None:
                torch.manual_seed(options.seed)
        model = base.model
        with torch.inference_mode():
            if len({v.model_version_id for v in row_versions}) > 1:
                # one adapter per row (PEFT mixed-adapter batch); "__base__" = no adapter
                names = [v.adapters[0] if v.adapters else "__base__" for v in row_versions]
                model.generate(**batch, **kwargs, adapter_names=names)
            elif version.adapters or not _has_peft(model):
                self._activate(base, version)
                model.generate(**batch, **kwargs)
            else:
                with model.disable_adapter():
                    model.generate(**batch, **kwargs)
        streamer.end()
        self.batches += 1

    def _activate(self, base: _Base, version: _Version) -> None:
        if version.adapters:
            # several adapters active at once: their LoRA deltas add up (a chain)
            names: str | list[str] = (
                version.adapters[0] if len(version.adapters) == 1 else list(version.adapters)
            )
            base.model.base_model.set_adapter(names)


def _public(exc: BaseException) -> BaseException:
    """What a client may see of an engine error (never the exception's own text)."""
    if isinstance(exc, (InvalidArgument, FailedPrecondition)):
        return exc
    return FailedPrecondition(
        f"generation failed: {type(exc).__name__}", reason="GENERATION_FAILED"
    )


def _tokenizer_key(folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
    ):
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _has_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _prompt_text(tok: Any, request: GenerationRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    assert request.messages is not None
    return str(
        tok.apply_chat_template(
            [dict(m) for m in request.messages], tokenize=False, add_generation_prompt=True
        )
    )


def _stopping(streamer: _RowStreamer) -> Any:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class RowsDone(StoppingCriteria):  # type: ignore[misc]
        """Per-row: a row is done once the streamer finished it (EOS, stop, budget, gone)."""

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.tensor(streamer.done_mask(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([RowsDone()])


class _RowStreamer:
    """transformers' streamer protocol (``put`` / ``end``) for a whole batch: the first
    ``put`` is the prompt, then one token per row per step. Text is decoded per row and
    sent as it grows; text that could still become a stop sequence is held back."""

    def __init__(
        self,
        jobs: Sequence[_Job],
        tok: Any,
        eos_ids: frozenset[int],
        prompt_tokens: Sequence[int],
    ) -> None:
        self.jobs = list(jobs)
        self.tok = tok
        self.eos_ids = eos_ids
        self.prompt_tokens = list(prompt_tokens)
        self.ids: list[list[int]] = [[] for _ in jobs]
        self.sent = [0] * len(jobs)  # characters of decoded text already sent
        self.finished = [False] * len(jobs)
        self._prompt_seen = False

    def done_mask(self) -> list[bool]:
        return [f or j.cancelled.is_set() for f, j in zip(self.finished, self.jobs, strict=True)]

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        tokens = value.reshape(-1).tolist()
        for row, token in enumerate(tokens):
            if self.finished[row]:
                continue
            job = self.jobs[row]
            if job.cancelled.is_set():
                self.finished[row] = True
                continue
            if token in self.eos_ids:
                self._finish(row, "stop")
                continue
            self.ids[row].append(int(token))
            self._advance(row)
            if not self.finished[row] and len(self.ids[row]) >= job.request.options.max_tokens:
                self._finish(row, "length")

    def end(self) -> None:
        for row in range(len(self.jobs)):
            if not self.finished[row]:
                self._finish(row, "length")

    def _text(self, row: int) -> str:
        return str(self.tok.decode(self.ids[row], skip_special_tokens=True))

    def _advance(self, row: int) -> None:
        text = self._text(row)
        stops = self.jobs[row].request.options.stop
        for stop in stops:
            at = text.find(stop)
            if at >= 0:
                self._send(row, text[:at])
                self._finish(row, "stop", flush=False)
                return
        ready = len(text)
        if text.endswith("\ufffd"):  # half of a multi-byte character
            ready = len(text.rstrip("\ufffd"))
        for stop in stops:  # a tail that may grow into a stop sequence waits
            for k in range(min(len(stop) - 1, ready), 0, -1):
                if text[:ready].endswith(stop[:k]):
                    ready = min(ready, len(text[:ready]) - k)
                    break
        self._send(row, text[:ready])

    def _send(self, row: int, text: str) -> None:
        if len(text) > self.sent[row]:
            self.jobs[row].send(Delta(text[self.sent[row] :]))
            self.sent[row] = len(text)

    def _finish(self, row: int, reason: str, *, flush: bool = True) -> None:
        if flush:
            self._send(row, self._text(row).rstrip("\ufffd"))
        self.finished[row] = True
        self.jobs[row].send(
            Delta(
                "",
                finish_reason="stop" if reason == "stop" else "length",
                prompt_tokens=self.prompt_tokens[row],
                completion_tokens=len(self.ids[row]),
            )
        )
