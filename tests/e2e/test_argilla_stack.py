"""`tunewright up --with-argilla / status / down`: Argilla (scripts/argilla/serve.py in
.venv-argilla, with the redis-server it starts) joins the local stack, the synth service is
pointed at it, and `down` leaves none of its processes behind. Real processes, free ports."""

from __future__ import annotations

import json
import re
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import yaml


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


def test_up_with_argilla_status_down(tmp_path: Path, stack_cli: Any) -> None:
    def tw(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Argilla's own ARGILLA_* env vars must not reach the stack either
        return stack_cli.run(  # type: ignore[no-any-return]
            *args, cwd=cwd, check=check, timeout=180, drop_env=("TW_", "ARGILLA_")
        )

    ports = stack_cli.free_ports(len(stack_cli.services) + 3)
    config = {
        "data_dir": str(tmp_path / "data"),
        "stack": {
            "nats_port": ports[0],
            "argilla_port": ports[1],
            "serve_http_port": ports[2],
            "ports": dict(zip(stack_cli.services, ports[3:], strict=True)),
        },
    }
    (tmp_path / "tunewright.yaml").write_text(yaml.safe_dump(config))
    started = time.monotonic()
    try:
        out = tw("up", "--with-argilla", "--config", "tunewright.yaml", cwd=tmp_path).stdout
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

        # its Redis takes no command without the generated password (rq's worker unpickles
        # the jobs it finds there); the password, Argilla's data and its log are private
        argilla_dir = tmp_path / "data" / "argilla"
        assert stat.S_IMODE(argilla_dir.stat().st_mode) == 0o700
        password_file = argilla_dir / "redis" / "redis.password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        log_file = tmp_path / "data" / "logs" / "argilla.log"
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
        redis_log = (argilla_dir / "redis" / "redis.log").read_text()
        redis_port = int(re.findall(r"port=(\d+)", redis_log)[-1])
        with socket.create_connection(("127.0.0.1", redis_port), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(64).startswith(b"-NOAUTH")
        assert password_file.read_text().strip().encode() not in (
            Path(f"/proc/{redis_pid}/cmdline").read_bytes()
        )

        # the synth service was started pointing at it
        synth_env = Path(f"/proc/{state['services']['synth']['pid']}/environ").read_bytes()
        assert f"ARGILLA_API_URL=http://127.0.0.1:{ports[1]}".encode() in synth_env.split(b"\0")

        status = tw("status", "--json", "--config", "tunewright.yaml", cwd=tmp_path)
        rows = {s["name"]: s for s in json.loads(status.stdout)["services"]}
        assert rows["argilla"]["health"] == "SERVING" and rows["argilla"]["running"]

        again = tw("up", "--with-argilla", "--config", "tunewright.yaml", cwd=tmp_path).stdout
        assert "argilla: already running" in again
    finally:
        down = tw("down", "--config", "tunewright.yaml", cwd=tmp_path, check=False)
    assert "argilla: stopped" in down.stdout
    assert not stack_cli.alive(argilla_pid) and not stack_cli.alive(redis_pid)
