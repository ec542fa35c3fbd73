"""`tunewright up --with-argilla / status / down`: Argilla (scripts/argilla/serve.py in
.venv-argilla, with the redis-server it starts) joins the local stack, the synth service is
pointed at it, and `down` leaves none of its processes behind. Real processes, free ports."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

TW = str(Path(sys.executable).parent / "tunewright")
SERVICES = ("registry", "ingest", "synth", "trainer", "evaluator", "monitor")


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


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the redis-server Argilla's launcher started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _tw(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TW_", "ARGILLA_"))}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [TW, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_up_with_argilla_status_down(tmp_path: Path) -> None:
    ports = _free_ports(len(SERVICES) + 2)
    config = {
        "data_dir": str(tmp_path / "data"),
        "stack": {
            "nats_port": ports[0],
            "argilla_port": ports[1],
            "ports": dict(zip(SERVICES, ports[2:], strict=True)),
        },
    }
    (tmp_path / "tunewright.yaml").write_text(yaml.safe_dump(config))
    started = time.monotonic()
    try:
        out = _tw("up", "--with-argilla", "--config", "tunewright.yaml", cwd=tmp_path).stdout
        print(f"\nup --with-argilla: {time.monotonic() - started:.1f} s")
        assert "argilla: started" in out
        state = json.loads((tmp_path / "data" / "stack.json").read_text())
        argilla_pid = state["services"]["argilla"]["pid"]
        (redis_pid,) = _children(argilla_pid)

        # sign-in setup: the users file is private; the owner's key works on the API
        users_file = tmp_path / "data" / "argilla" / "users.json"
        assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
        users = {u["username"]: u for u in json.loads(users_file.read_text())["users"]}
        assert users["annotator"]["role"] == "annotator"
        me = requests.get(
            f"http://127.0.0.1:{ports[1]}/api/v1/me",
            headers={"X-Argilla-Api-Key": users["owner"]["api_key"]},
            timeout=5,
        )
        assert me.ok and me.json()["role"] == "owner"

        # the synth service was started pointing at it
        synth_env = Path(f"/proc/{state['services']['synth']['pid']}/environ").read_bytes()
        assert f"ARGILLA_API_URL=http://127.0.0.1:{ports[1]}".encode() in synth_env.split(b"\0")

        status = _tw("status", "--json", "--config", "tunewright.yaml", cwd=tmp_path)
        rows = {s["name"]: s for s in json.loads(status.stdout)["services"]}
        assert rows["argilla"]["health"] == "SERVING" and rows["argilla"]["running"]

        again = _tw("up", "--with-argilla", "--config", "tunewright.yaml", cwd=tmp_path).stdout
        assert "argilla: already running" in again
    finally:
        down = _tw("down", "--config", "tunewright.yaml", cwd=tmp_path, check=False)
    assert "argilla: stopped" in down.stdout
    assert not _alive(argilla_pid) and not _alive(redis_pid)
