"""`tunewright up / status / down` against real processes: nats-server from the venv and the
five services, on free ports in a temporary data dir (never the machine's own NATS)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tunewright.core import catalog

TW = str(Path(sys.executable).parent / "tunewright")
SERVICES = ("registry", "ingest", "synth", "trainer", "evaluator")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _tw(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TW_")}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [TW, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"tunewright {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture
def stack_dir(tmp_path: Path) -> Iterator[Path]:
    nats_port, *ports = _free_ports(6)
    config = {"stack": {"nats_port": nats_port, "ports": dict(zip(SERVICES, ports, strict=True))}}
    (tmp_path / "tunewright.yaml").write_text(yaml.safe_dump(config))
    yield tmp_path
    _tw("down", "--config", "tunewright.yaml", cwd=tmp_path, check=False)


def _pids(data_dir: Path) -> dict[str, int]:
    state = json.loads((data_dir / ".tunewright" / "stack.json").read_text())
    pids = {name: proc["pid"] for name, proc in state["services"].items()}
    pids["nats"] = int((data_dir / ".tunewright" / "nats" / "nats-server.pid").read_text())
    return pids


def test_up_status_down(stack_dir: Path) -> None:
    _tw("up", "--config", "tunewright.yaml", cwd=stack_dir)
    first = _pids(stack_dir)
    assert set(first) == {*SERVICES, "nats"}

    status = json.loads(
        _tw("status", "--json", "--config", "tunewright.yaml", cwd=stack_dir).stdout
    )
    assert status["healthy"] is True
    by_name = {s["name"]: s for s in status["services"]}
    for name in SERVICES:
        assert by_name[name]["health"] == "SERVING", by_name[name]
        reflected = set(by_name[name]["reflected_services"])
        # every server lists its own service, health and reflection
        assert f"tunewright.{name}.v1.{name.capitalize()}Service" in reflected
        assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= reflected
    assert {s["name"] for s in status["streams"]} == {s.name for s in catalog.STREAMS}
    assert {c["durable"] for c in status["consumers"]} == {c.durable for c in catalog.CONSUMERS}
    assert all(c["num_pending"] == 0 for c in status["consumers"])

    # up twice starts nothing twice
    again = _tw("up", "--config", "tunewright.yaml", cwd=stack_dir)
    assert again.stdout.count("already running") == 6, again.stdout
    assert _pids(stack_dir) == first

    human = _tw("status", "--config", "tunewright.yaml", cwd=stack_dir).stdout
    assert "TW_TRAINER_WORK" in human and "trainer-worker" in human

    _tw("down", "--config", "tunewright.yaml", cwd=stack_dir)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in first.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [name for name, pid in first.items() if _alive(pid)], "down left processes behind"
    assert not (stack_dir / ".tunewright" / "stack.json").exists()

    down = _tw("status", "--json", "--config", "tunewright.yaml", cwd=stack_dir, check=False)
    assert down.returncode == 1
    assert all(s["health"] == "UNREACHABLE" for s in json.loads(down.stdout)["services"])


def test_up_restarts_only_what_died(stack_dir: Path) -> None:
    _tw("up", "--config", "tunewright.yaml", cwd=stack_dir)
    before = _pids(stack_dir)
    os.kill(before["trainer"], 9)
    while _alive(before["trainer"]):
        time.sleep(0.05)
    out = _tw("up", "--config", "tunewright.yaml", cwd=stack_dir).stdout
    assert "trainer: started" in out
    after = _pids(stack_dir)
    assert after["trainer"] != before["trainer"]
    assert {k: v for k, v in after.items() if k != "trainer"} == {
        k: v for k, v in before.items() if k != "trainer"
    }


def test_up_reports_a_service_that_cannot_start(stack_dir: Path) -> None:
    config = yaml.safe_load((stack_dir / "tunewright.yaml").read_text())
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    config["stack"]["ports"]["registry"] = busy.getsockname()[1]
    (stack_dir / "tunewright.yaml").write_text(yaml.safe_dump(config))
    try:
        result = _tw("up", "--config", "tunewright.yaml", cwd=stack_dir, check=False)
    finally:
        busy.close()
    assert result.returncode == 1
    assert "registry exited during start-up" in result.stderr
    assert "cannot bind" in result.stderr


def test_unknown_setting_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("stack:\n  nats_prot: 4999\n")
    result = _tw("up", "--config", "bad.yaml", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "nats_prot" in result.stderr
