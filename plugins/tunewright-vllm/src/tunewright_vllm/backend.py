"""The ``vllm`` serving backend: a ``vllm serve`` child process on 127.0.0.1 that holds one
``hf:`` base folder and the LoRA adapter of every model version served, one adapter per
request (``model=<adapter name>``).

Lifecycle:

- The process starts lazily, on the first :meth:`VllmBackend.prepare` or
  :meth:`VllmBackend.generate`, with every adapter known then on ``--lora-modules``
  (:func:`tunewright_vllm.command.serve_command`), its stdout and stderr appended to the log
  file, in its own process group (vLLM forks engine and worker processes). The backend waits
  for ``GET /health`` (``startup_timeout_s``), then checks that ``GET /v1/models`` takes its
  API key: a random key per process, so nobody else on the host can use the server or change
  its adapters, and a foreign server that happens to answer on the port is detected.
- A model version prepared or requested later is added at runtime with
  ``POST /v1/load_lora_adapter`` (``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); one whose LoRA rank
  is above the running ``--max-lora-rank`` is refused (raise ``max_lora_rank`` in the settings).
- A process that died is started again, with all known adapters, by the next request.
- :meth:`VllmBackend.close` sends SIGTERM to the process group, waits ``stop_timeout_s``, then
  SIGKILL.

The first version served fixes the base folder: versions of another base are refused (one
vLLM process serves one base model; run another serve service for it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from tunewright.core.errors import FailedPrecondition, Unavailable
from tunewright.core.model_versions import TrainedChain
from tunewright.core.serving import Delta, GenerationRequest
from tunewright_vllm.adapters import Adapter, adapter_for, lora_rank_for
from tunewright_vllm.client import AdapterNotServed, VllmClient, request_body
from tunewright_vllm.command import HOST, serve_command
from tunewright_vllm.config import VllmConfig

log = logging.getLogger(__name__)

HEALTH_POLL_S = 0.5


def free_port(host: str = HOST) -> int:
    """A port nobody listens on now (the OS picks it; vLLM binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class VllmBackend:
    """``factory(base_models=..., **params)``: see the module docstring; params are
    :class:`tunewright_vllm.config.VllmConfig`."""

    def __init__(self, *, base_models: Any = None, **params: Any) -> None:
        self.config = VllmConfig.from_params(params)
        # only hf: folders are served, which vLLM loads itself: no base-model plugin needed
        self.base_models = base_models
        self.log_file = Path(
            self.config.log_file
            or Path(tempfile.gettempdir()) / f"tunewright-vllm-{os.getpid()}.log"
        )
        self._api_key = secrets.token_urlsafe(32)
        self._lock = asyncio.Lock()
        #: adapter name -> adapter, in the order they became known
        self._known: dict[str, Adapter] = {}
        #: (model version id, trained folders) -> its adapter (validated once)
        self._adapters: dict[tuple[str, tuple[Path, ...]], Adapter] = {}
        #: adapter names the running server has
        self._served: set[str] = set()
        self._base: Path | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._client: VllmClient | None = None
        self._rank = 0
        self._closed = False

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"VllmBackend(base={self._base}, port={self.port})"

    @property
    def port(self) -> int | None:
        return None if self._client is None else int(self._client.base_url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    # --- ServingBackend ---------------------------------------------------------------------

    def loaded(self) -> list[str]:
        if not self._running():
            return []
        return [a.model_version_id for a in self._known.values() if a.name in self._served]

    async def prepare(self, chain: TrainedChain) -> None:
        await self._ensure(chain)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        adapter = await self._ensure(request.chain)
        path, body = request_body(request, adapter.name)
        for attempt in (1, 2):
            client = self._client
            if client is None:  # closed since _ensure
                raise FailedPrecondition("the vllm backend is closed", reason="BACKEND_CLOSED")
            try:
                async for delta in client.stream(path, body):
                    yield delta
                return
            except AdapterNotServed:
                if attempt == 2:
                    raise FailedPrecondition(
                        f"vLLM does not serve the adapter of model version "
                        f"{adapter.model_version_id} even after loading it again",
                        reason="VLLM_ADAPTER_MISSING",
                    ) from None
                log.warning(
                    "vLLM lost the adapter of model_version_id=%s; loading it again",
                    adapter.model_version_id,
                )
                async with self._lock:
                    self._served.discard(adapter.name)
                await self._ensure(request.chain)

    async def close(self) -> None:
        self._closed = True  # a start waiting for /health gives up at its next poll
        async with self._lock:
            await self._stop()

    # --- adapters and the process -----------------------------------------------------------

    async def _ensure(self, chain: TrainedChain) -> Adapter:
        """``chain``'s adapter, with the server running and serving it."""
        if self._closed:
            raise FailedPrecondition("the vllm backend is closed", reason="BACKEND_CLOSED")
        key = (chain.model_version_id, chain.folders)
        adapter = self._adapters.get(key) or adapter_for(chain)
        if self._running() and adapter.name in self._served:
            return adapter
        async with self._lock:
            if self._closed:
                raise FailedPrecondition("the vllm backend is closed", reason="BACKEND_CLOSED")
            if self._base is not None and adapter.base != self._base:
                raise FailedPrecondition(
                    f"model version {adapter.model_version_id} is trained on {adapter.base}; "
                    f"this vllm backend serves {self._base} (one base model per vLLM "
                    "process: serve the other base with another serve service)",
                    reason="VLLM_OTHER_BASE",
                )
            self._adapters[key] = adapter
            if not self._running():
                # adapters whose folders the serve service has since removed would stop vLLM
                # at start-up: they are loaded again when they are asked for
                others = [
                    a
                    for a in self._known.values()
                    if a.name != adapter.name and (a.path / "adapter_config.json").is_file()
                ]
                await self._start([*others, adapter])
            elif adapter.name not in self._served:
                await self._load(adapter)
            self._known[adapter.name] = adapter
        return adapter

    def _running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def _load(self, adapter: Adapter) -> None:
        if adapter.rank > self._rank:
            raise FailedPrecondition(
                f"model version {adapter.model_version_id} has LoRA rank {adapter.rank}; the "
                f"running vLLM server was started with --max-lora-rank {self._rank}. Set the "
                f"vllm backend param max_lora_rank to at least {lora_rank_for(adapter.rank)} "
                "and restart the serve service",
                reason="VLLM_LORA_RANK_TOO_LARGE",
            )
        assert self._client is not None
        await self._client.load_adapter(adapter)
        self._served.add(adapter.name)
        log.info(
            "vLLM loaded adapter %s of model_version_id=%s", adapter.name, adapter.model_version_id
        )

    async def _start(self, adapters: list[Adapter]) -> None:
        if self._process is not None:  # it died: say so, start it again
            log.error(
                "vLLM exited with code %s; starting it again (log: %s)",
                self._process.returncode,
                self.log_file,
            )
            await self._stop()
        port = self.config.port or free_port()
        command = serve_command(
            self.config, adapters=adapters, port=port, api_key=self._api_key, base_env=os.environ
        )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        output = await asyncio.to_thread(_open_log, self.log_file)
        try:
            process = await asyncio.create_subprocess_exec(
                *command.argv,
                env=command.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: close() stops the workers too
            )
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot run {self.config.executable!r}: {type(exc).__name__}: {exc} (install "
                "vLLM on the serve host or set the vllm backend param executable)",
                reason="VLLM_NOT_INSTALLED",
            ) from exc
        finally:
            output.close()  # the child has its own descriptor
        self._process = process
        self._client = VllmClient(
            f"http://{HOST}:{port}", self._api_key, timeout_s=self.config.request_timeout_s
        )
        self._rank = command.max_lora_rank
        self._served = set()
        log.info(
            "started vLLM pid=%s port=%s base=%s adapters=%d log=%s",
            process.pid,
            port,
            self._base,
            len(adapters),
            self.log_file,
        )
        try:
            await self._wait_healthy()
            served = set(await self._client.models())
        except BaseException:
            await self._stop()
            raise
        self._served = {a.name for a in adapters if a.name in served}
        self._base = adapters[0].base
        self._known = {}
        for adapter in adapters:
            self._known[adapter.name] = adapter

    async def _wait_healthy(self) -> None:
        assert self._process is not None and self._client is not None
        deadline = time.monotonic() + self.config.startup_timeout_s
        exited = asyncio.ensure_future(self._process.wait())
        try:
            while True:
                if self._closed:
                    raise FailedPrecondition(
                        "the vllm backend was closed while vLLM started", reason="BACKEND_CLOSED"
                    )
                if exited.done():
                    raise FailedPrecondition(
                        f"vLLM exited with code {exited.result()} while starting; see "
                        f"{self.log_file}",
                        reason="VLLM_START_FAILED",
                    )
                if await self._client.healthy():
                    return
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"vLLM did not answer GET /health within "
                        f"{self.config.startup_timeout_s:g}s (raise startup_timeout_s for big "
                        f"models); see {self.log_file}",
                        reason="VLLM_START_TIMEOUT",
                    )
                await asyncio.wait({exited}, timeout=HEALTH_POLL_S)  # wakes up on exit
        finally:
            exited.cancel()

    async def _stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after ``stop_timeout_s``."""
        process, client = self._process, self._client
        self._process, self._client, self._served = None, None, set()
        if client is not None:
            await client.aclose()
        if process is None:
            return
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.config.stop_timeout_s)
            except TimeoutError:
                log.warning(
                    "vLLM pid=%s ignored SIGTERM for %gs; killing it",
                    process.pid,
                    self.config.stop_timeout_s,
                )
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        # workers the leader left behind (its group outlives it while they run)
        _signal_group(process.pid, signal.SIGKILL)
        log.info("vLLM pid=%s stopped with code %s", process.pid, process.returncode)


def _open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
