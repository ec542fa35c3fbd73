"""The vllm backend end to end, with a real child process: the ``vllm`` on PATH is a script
the test writes that runs fake_vllm.py (vLLM itself needs a GPU and is not installed here).

What runs for real: the process start with the command line built by ``serve_command``, the
wait for ``GET /health``, the API-key check, runtime ``POST /v1/load_lora_adapter``, streamed
generation, restart after a crash, and the stop (SIGTERM to the process group, SIGKILL after
the grace period), including a forked worker process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tunewright_vllm.adapters import adapter_for
from tunewright_vllm.backend import VllmBackend
from tunewright_vllm.command import serve_command

from tunewright.core.errors import FailedPrecondition, Unavailable
from tunewright.core.model_versions import TrainedChain
from tunewright.core.plugins import PluginManager
from tunewright.core.serving import Delta, GenerationRequest, SamplingOptions, ServingBackend

TrainFolder = Callable[..., Path]
MakeChain = Callable[..., TrainedChain]
Records = Callable[[Path], list[dict[str, Any]]]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _eventually(check: Callable[[], bool], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _eventually_dead(pid: int, within_s: float = 5.0) -> bool:
    return await _eventually(lambda: not _alive(pid), within_s)


def _backend(tmp_path: Path, **params: Any) -> VllmBackend:
    registries = PluginManager().load()
    spec = registries.serving_backends.get("vllm")
    backend = spec.factory(
        base_models=registries.base_models, log_file=str(tmp_path / "vllm.log"), **params
    )
    assert isinstance(backend, VllmBackend)
    return backend


async def _answer(backend: VllmBackend, chain: TrainedChain, text: str) -> list[Delta]:
    request = GenerationRequest(
        chain, SamplingOptions(max_tokens=16), messages=[{"role": "user", "content": text}]
    )
    return [delta async for delta in backend.generate(request)]


def test_importing_the_plugin_is_cheap() -> None:
    code = (
        "import sys, tunewright_vllm; "
        "heavy = {'httpx', 'tunewright_vllm.backend', 'tunewright_vllm.client'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_plugin_registers_the_vllm_backend() -> None:
    registries = PluginManager().load()
    spec = registries.serving_backends.get("vllm")
    assert spec.plugin == "vllm"
    backend = spec.factory(base_models=registries.base_models, max_loras=2)
    assert isinstance(backend, ServingBackend)
    assert backend.loaded() == []
    with pytest.raises(ValueError, match="unknown vllm backend params: gpus"):
        spec.factory(base_models=registries.base_models, gpus=2)


async def test_start_serve_load_at_runtime_and_close(
    tmp_path: Path,
    base_folder: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
    fake_vllm_on_path: Path,
    records: Records,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_VLLM_STARTUP_S", "1")  # /health refuses until the "model" loads
    monkeypatch.setenv("FAKE_VLLM_WORKER", "1")
    backend = _backend(tmp_path, max_loras=2, dtype="bfloat16", env={"CUDA_VISIBLE_DEVICES": "3"})
    chain_a = make_chain("mv_a", base_folder, trained("mv_a"))
    chain_b = make_chain("mv_b", base_folder, trained("mv_b", r=8))
    assert backend.loaded() == [] and backend.pid is None
    try:
        await backend.prepare(chain_a)
        assert backend.loaded() == ["mv_a"]
        start, worker = records(fake_vllm_on_path)[:2]
        expected = serve_command(
            backend.config,
            adapters=[adapter_for(chain_a)],
            port=backend.port or -1,
            api_key="-",
            base_env={},
        )
        assert ["vllm", *start["argv"]] == expected.argv
        assert start["pid"] == backend.pid and start["pgid"] == backend.pid  # own group
        assert start["env"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        assert start["env"]["CUDA_VISIBLE_DEVICES"] == "3"
        assert len(start["env"]["VLLM_API_KEY"]) >= 32
        assert start["env"]["VLLM_API_KEY"] not in repr(backend)

        deltas = await _answer(backend, chain_a, "hello there")
        assert "".join(d.text for d in deltas) == "mv_a says: hello there"
        assert deltas[-1] == Delta("", finish_reason="stop", prompt_tokens=2, completion_tokens=3)

        # a version promoted later joins the running server at runtime
        await backend.prepare(chain_b)
        assert backend.loaded() == ["mv_a", "mv_b"]
        loads = [e for e in records(fake_vllm_on_path) if e.get("path") == "/v1/load_lora_adapter"]
        assert [e["body"] for e in loads] == [
            {"lora_name": "mv_b", "lora_path": str(chain_b.folders[0] / "model")}
        ]
        assert loads[0]["authorized"]
        assert (await _answer(backend, chain_b, "hi"))[0] == Delta("mv_b says:")
        await backend.prepare(chain_b)  # known: nothing is posted again
        assert len([e for e in records(fake_vllm_on_path) if "path" in e]) == len(loads) + 2
        pid = backend.pid
        assert pid is not None
    finally:
        await backend.close()
    assert await _eventually_dead(pid)
    assert await _eventually_dead(worker["worker_pid"])  # the process group went with it
    assert backend.loaded() == []
    assert "fake vllm: serving" in (tmp_path / "vllm.log").read_text()
    with pytest.raises(FailedPrecondition, match="closed"):
        await backend.prepare(chain_a)


async def test_a_server_that_ignores_sigterm_is_killed(
    tmp_path: Path,
    base_folder: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
    fake_vllm_on_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_VLLM_IGNORE_SIGTERM", "1")
    backend = _backend(tmp_path, stop_timeout_s=0.5)
    await backend.prepare(make_chain("mv_a", base_folder, trained("mv_a")))
    process = backend._process
    assert process is not None
    started = time.monotonic()
    await backend.close()
    assert time.monotonic() - started >= 0.5
    assert process.returncode == -signal.SIGKILL


async def test_a_server_that_exits_at_start_fails_naming_its_log(
    tmp_path: Path,
    base_folder: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
    fake_vllm_on_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_VLLM_EXIT", "3")
    backend = _backend(tmp_path)
    with pytest.raises(FailedPrecondition) as info:
        await backend.prepare(make_chain("mv_a", base_folder, trained("mv_a")))
    assert info.value.reason == "VLLM_START_FAILED"
    assert "code 3" in info.value.message and str(tmp_path / "vllm.log") in info.value.message
    assert "failing at start" in (tmp_path / "vllm.log").read_text()
    assert backend.loaded() == [] and backend.pid is None
    await backend.close()


async def test_a_server_that_never_gets_healthy_times_out_and_is_stopped(
    tmp_path: Path,
    base_folder: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
    fake_vllm_on_path: Path,
    records: Records,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_VLLM_STARTUP_S", "60")
    backend = _backend(tmp_path, startup_timeout_s=1.0)
    with pytest.raises(Unavailable) as info:
        await backend.prepare(make_chain("mv_a", base_folder, trained("mv_a")))
    assert info.value.reason == "VLLM_START_TIMEOUT"
    assert await _eventually_dead(records(fake_vllm_on_path)[0]["pid"])
    await backend.close()


async def test_a_crashed_server_is_started_again_with_every_known_adapter(
    tmp_path: Path,
    base_folder: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
    fake_vllm_on_path: Path,
    records: Records,
) -> None:
    backend = _backend(tmp_path)
    chain_a = make_chain("mv_a", base_folder, trained("mv_a"))
    chain_b = make_chain("mv_b", base_folder, trained("mv_b"))
    try:
        await backend.prepare(chain_a)
        await backend.prepare(chain_b)
        process = backend._process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 5)
        assert backend.loaded() == []
        deltas = await _answer(backend, chain_b, "again")
        assert "".join(d.text for d in deltas) == "mv_b says: again"
        starts = [e for e in records(fake_vllm_on_path) if "argv" in e]
        assert len(starts) == 2
        modules = starts[1]["argv"][starts[1]["argv"].index("--lora-modules") + 1 :]
        assert [m.split("=")[0] for m in modules] == ["mv_a", "mv_b"]
        assert backend.loaded() == ["mv_a", "mv_b"]
    finally:
        await backend.close()


async def test_an_adapter_the_server_lost_is_loaded_again(
    tmp_path: Path,
    base_folder: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
    fake_vllm_on_path: Path,
    records: Records,
) -> None:
    backend = _backend(tmp_path)
    chain_a = make_chain("mv_a", base_folder, trained("mv_a"))
    try:
        await backend.prepare(chain_a)
        async with httpx.AsyncClient(trust_env=False) as http:  # someone unloads it
            response = await http.post(
                f"http://127.0.0.1:{backend.port}/v1/unload_lora_adapter",
                json={"lora_name": "mv_a"},
                headers={"Authorization": f"Bearer {backend._api_key}"},
            )
            assert response.status_code == 200
        deltas = await _answer(backend, chain_a, "back")
        assert "".join(d.text for d in deltas) == "mv_a says: back"
        paths = [e["path"] for e in records(fake_vllm_on_path) if "path" in e]
        assert paths == [
            "/v1/unload_lora_adapter",
            "/v1/chat/completions",  # 404: the model is gone
            "/v1/load_lora_adapter",
            "/v1/chat/completions",
        ]
    finally:
        await backend.close()


async def test_versions_the_running_server_cannot_take_are_refused(
    tmp_path: Path,
    base_folder: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
    fake_vllm_on_path: Path,
    records: Records,
) -> None:
    backend = _backend(tmp_path)  # max_lora_rank 16
    other_base = tmp_path / "models" / "other"
    other_base.mkdir(parents=True)
    (other_base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    tokenizer_config = (base_folder / "tokenizer_config.json").read_text()
    (other_base / "tokenizer_config.json").write_text(tokenizer_config)
    try:
        await backend.prepare(make_chain("mv_a", base_folder, trained("mv_a", r=16)))
        with pytest.raises(FailedPrecondition) as rank:
            await backend.prepare(make_chain("mv_big", base_folder, trained("mv_big", r=64)))
        assert rank.value.reason == "VLLM_LORA_RANK_TOO_LARGE"
        assert "max_lora_rank to at least 64" in rank.value.message
        with pytest.raises(FailedPrecondition) as base:
            await backend.prepare(make_chain("mv_o", other_base, trained("mv_o")))
        assert base.value.reason == "VLLM_OTHER_BASE"
        assert backend.loaded() == ["mv_a"]
        assert not [e for e in records(fake_vllm_on_path) if "path" in e]  # nothing posted
    finally:
        await backend.close()


async def test_a_refused_version_starts_no_process(
    tmp_path: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
    fake_vllm_on_path: Path,
    records: Records,
) -> None:
    backend = _backend(tmp_path)
    with pytest.raises(FailedPrecondition, match="only hf:<folder> bases"):
        await _answer(backend, make_chain("mv_t", "tiny:llama-xs", trained("mv_t")), "hi")
    assert backend.pid is None and records(fake_vllm_on_path) == []
    await backend.close()


async def test_a_missing_vllm_executable_is_a_clear_error(
    tmp_path: Path, base_folder: Path, trained: TrainFolder, make_chain: MakeChain
) -> None:
    backend = _backend(tmp_path, executable=str(tmp_path / "no" / "vllm"))
    with pytest.raises(FailedPrecondition) as info:
        await backend.prepare(make_chain("mv_a", base_folder, trained("mv_a")))
    assert info.value.reason == "VLLM_NOT_INSTALLED"
    await backend.close()


async def test_close_while_vllm_starts_stops_it_at_once(
    tmp_path: Path,
    base_folder: Path,
    trained: TrainFolder,
    make_chain: MakeChain,
    fake_vllm_on_path: Path,
    records: Records,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_VLLM_STARTUP_S", "60")
    backend = _backend(tmp_path)  # startup_timeout_s 900
    starting = asyncio.create_task(
        backend.prepare(make_chain("mv_a", base_folder, trained("mv_a")))
    )
    assert await _eventually(lambda: bool(records(fake_vllm_on_path)))
    started = time.monotonic()
    await backend.close()
    with pytest.raises(FailedPrecondition, match="closed while vLLM started"):
        await starting
    assert time.monotonic() - started < 10
    assert await _eventually_dead(records(fake_vllm_on_path)[0]["pid"])
