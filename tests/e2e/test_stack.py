"""`tunewright up / status / down` against real processes: nats-server from the venv and the
seven services, on free ports in a temporary data dir (never the machine's own NATS)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from pydantic import SecretStr, ValidationError

from tunewright.cli.stack import (
    SERVICES,
    Probe,
    ServiceProcess,
    Stack,
    StackError,
    StackSettings,
    StackState,
    mask_url,
    service_env,
)
from tunewright.core import catalog
from tunewright.core.nats_server import find_binary
from tunewright.core.settings import GrpcSettings


@pytest.fixture
def stack_dir(tmp_path: Path, stack_cli: Any) -> Iterator[Path]:
    nats_port, http_port, *ports = stack_cli.free_ports(2 + len(stack_cli.services))
    config = {
        "stack": {
            "nats_port": nats_port,
            "serve_http_port": http_port,
            "ports": dict(zip(stack_cli.services, ports, strict=True)),
        }
    }
    (tmp_path / "tunewright.yaml").write_text(yaml.safe_dump(config))
    yield tmp_path
    stack_cli.run("down", "--config", "tunewright.yaml", cwd=tmp_path, check=False)


def state_text_of(data_dir: Path) -> str:
    return (data_dir / ".tunewright" / "stack.json").read_text()


def _serve_http(data_dir: Path) -> str:
    port = yaml.safe_load((data_dir / "tunewright.yaml").read_text())["stack"]["serve_http_port"]
    return f"http://127.0.0.1:{port}"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_text().split("\0")
    return dict(line.split("=", 1) for line in raw if "=" in line)


def _pids(data_dir: Path) -> dict[str, int]:
    state = json.loads((data_dir / ".tunewright" / "stack.json").read_text())
    pids = {name: proc["pid"] for name, proc in state["services"].items()}
    pids["nats"] = int((data_dir / ".tunewright" / "nats" / "nats-server.pid").read_text())
    return pids


def test_up_status_down(stack_dir: Path, stack_cli: Any) -> None:
    up = stack_cli.run("up", "--config", "tunewright.yaml", cwd=stack_dir)
    first = _pids(stack_dir)
    assert set(first) == {*stack_cli.services, "nats"}

    # serve's HTTP API: a key made for it, private, named (not printed) by `up`
    key_file = stack_dir / ".tunewright" / "serve.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 40
    base = _serve_http(stack_dir)
    assert f"serve: OpenAI-compatible API on {base}/v1, bearer token in {key_file}" in up.stdout
    assert key not in up.stdout + up.stderr
    assert _environ(first["serve"])["TW_SERVE__HTTP__API_KEY"] == key
    assert "TW_SERVE__HTTP__API_KEY" not in _environ(first["trainer"])  # serve's alone
    assert requests.get(f"{base}/health", timeout=5).status_code == 200  # open
    assert requests.get(f"{base}/v1/models", timeout=5).status_code == 401
    models = requests.get(
        f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5
    )
    assert models.status_code == 200, models.text  # the registry answered: no aliases yet
    assert models.json()["object"] == "list"

    status = json.loads(
        stack_cli.run("status", "--json", "--config", "tunewright.yaml", cwd=stack_dir).stdout
    )
    assert status["healthy"] is True
    by_name = {s["name"]: s for s in status["services"]}
    for name in stack_cli.services:
        assert by_name[name]["health"] == "SERVING", by_name[name]
        reflected = set(by_name[name]["reflected_services"])
        # every server lists its own service, health and reflection
        assert f"tunewright.{name}.v1.{name.capitalize()}Service" in reflected
        assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= reflected
    assert {s["name"] for s in status["streams"]} == {s.name for s in catalog.STREAMS}
    assert {c["durable"] for c in status["consumers"]} == {c.durable for c in catalog.CONSUMERS}
    assert all(c["num_pending"] == 0 for c in status["consumers"])

    # up twice starts nothing twice
    again = stack_cli.run("up", "--config", "tunewright.yaml", cwd=stack_dir)
    assert again.stdout.count("already running") == 1 + len(stack_cli.services), again.stdout
    assert _pids(stack_dir) == first
    assert key_file.read_text().strip() == key and str(key_file) in again.stdout

    human = stack_cli.run("status", "--config", "tunewright.yaml", cwd=stack_dir).stdout
    assert "TW_TRAINER_WORK" in human and "trainer-worker" in human

    stack_cli.run("down", "--config", "tunewright.yaml", cwd=stack_dir)
    deadline = time.monotonic() + 10
    while any(stack_cli.alive(pid) for pid in first.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [name for name, pid in first.items() if stack_cli.alive(pid)], (
        "down left processes behind"
    )
    assert not (stack_dir / ".tunewright" / "stack.json").exists()
    assert key_file.read_text().strip() == key  # kept for the next `up`

    down = stack_cli.run(
        "status", "--json", "--config", "tunewright.yaml", cwd=stack_dir, check=False
    )
    assert down.returncode == 1
    assert all(s["health"] == "UNREACHABLE" for s in json.loads(down.stdout)["services"])


def test_default_up_refuses_unauthenticated_grpc_calls_and_nats_publishes(
    stack_dir: Path, stack_cli: Any
) -> None:
    """Secure by default: with no credentials configured, `up` makes a platform gRPC token and
    an embedded-NATS token (0600) and every service requires them; the CLI's own commands
    (status here; the demo runs upload and run) send them."""
    import asyncio

    import grpc
    import nats

    from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

    added = stack_cli.run(
        "identity",
        "add",
        "ci-bot",
        "--role",
        "submitter",
        "--config",
        "tunewright.yaml",
        cwd=stack_dir,
    )
    submitter = added.stdout.strip()
    up = stack_cli.run("up", "--config", "tunewright.yaml", cwd=stack_dir)
    data = stack_dir / ".tunewright"
    assert submitter not in (data / "identities.yaml").read_text()  # only its sha256
    assert stat.S_IMODE((data / "identities.yaml").stat().st_mode) == 0o600
    token = (data / "grpc.token").read_text().strip()
    nats_users = json.loads((data / "nats-users.json").read_text())
    for name in ("grpc.token", "nats-users.json"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    assert set(nats_users) == {"cli", *stack_cli.services}
    for secret in (token, *nats_users.values()):
        assert len(secret) >= 32 and secret not in up.stdout + up.stderr
    config = yaml.safe_load((stack_dir / "tunewright.yaml").read_text())["stack"]
    registry = f"127.0.0.1:{config['ports']['registry']}"
    request = registry_pb2.ListAliasesRequest()
    with grpc.insecure_channel(registry) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListAliases(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as wrong:
            stub.ListAliases(request, timeout=10, metadata=(("authorization", "Bearer x"),))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        platform = (("authorization", f"Bearer {token}"),)
        stub.ListAliases(request, timeout=10, metadata=platform)  # the platform token works
        as_bot = (("authorization", f"Bearer {submitter}"),)
        stub.ListAliases(request, timeout=10, metadata=as_bot)  # an identity may read
        with pytest.raises(grpc.RpcError) as forbidden:
            stub.Promote(
                registry_pb2.PromoteRequest(
                    model_version_id="mv_x", alias="production", force=True, reason="x"
                ),
                timeout=10,
                metadata=as_bot,
            )
        assert forbidden.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # each service calls with its own identity, handed to it alone; only the evaluator's
        # may register an evaluation — not the platform (admin) token, not another service's
        service_tokens = json.loads((data / "service-tokens.json").read_text())
        assert stat.S_IMODE((data / "service-tokens.json").stat().st_mode) == 0o600
        pids = _pids(stack_dir)
        for name in stack_cli.services:
            env = _environ(pids[name])
            assert env["TW_GRPC__CLIENT_TOKEN"] == service_tokens[name]
            assert not set(service_tokens.values()) - {service_tokens[name]} & set(env.values())
        register = registry_pb2.RegisterEvaluationRequest(
            evaluation=registry_pb2.Evaluation(candidate_model_version_id="mv_missing")
        )
        for caller in (token, service_tokens["trainer"], submitter):
            with pytest.raises(grpc.RpcError) as not_evaluator:
                stub.RegisterEvaluation(
                    register, timeout=10, metadata=(("authorization", f"Bearer {caller}"),)
                )
            assert not_evaluator.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as past_the_check:  # refused for what it says
            stub.RegisterEvaluation(
                register,
                timeout=10,
                metadata=(("authorization", f"Bearer {service_tokens['evaluator']}"),),
            )
        assert past_the_check.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    url = f"nats://127.0.0.1:{config['nats_port']}"

    async def publish(subject: str, **credentials: str) -> list[str]:
        """Publish once; the errors the server reported back (permission violations)."""
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(
            url,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
            error_cb=on_error,
            **credentials,
        )
        try:
            await nc.publish(subject, b"forged")
            await nc.flush(timeout=3)
            await asyncio.sleep(0.3)  # the server's -ERR arrives after the flush's PONG
        finally:
            await nc.close()
        return errors

    completed = "tw.evaluator.run.completed"
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(publish(completed))  # no credentials: no connection at all

    def user(name: str) -> dict[str, str]:
        return {"user": name, "password": nats_users[name]}

    forged = asyncio.run(publish(completed, **user("trainer")))
    assert any("permissions violation" in e.lower() for e in forged), forged
    assert asyncio.run(publish(completed, **user("evaluator"))) == []  # its own fact
    assert asyncio.run(publish("tw.trainer.job.requested", **user("registry"))) == []

    status = json.loads(
        stack_cli.run("status", "--json", "--config", "tunewright.yaml", cwd=stack_dir).stdout
    )
    assert status["healthy"] is True


def test_up_restarts_only_what_died(stack_dir: Path, stack_cli: Any) -> None:
    stack_cli.run("up", "--config", "tunewright.yaml", cwd=stack_dir)
    before = _pids(stack_dir)
    os.kill(before["trainer"], 9)
    while stack_cli.alive(before["trainer"]):
        time.sleep(0.05)
    out = stack_cli.run("up", "--config", "tunewright.yaml", cwd=stack_dir).stdout
    assert "trainer: started" in out
    after = _pids(stack_dir)
    assert after["trainer"] != before["trainer"]
    assert {k: v for k, v in after.items() if k != "trainer"} == {
        k: v for k, v in before.items() if k != "trainer"
    }


def test_up_reports_a_service_that_cannot_start(stack_dir: Path, stack_cli: Any) -> None:
    config = yaml.safe_load((stack_dir / "tunewright.yaml").read_text())
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    config["stack"]["ports"]["registry"] = busy.getsockname()[1]
    (stack_dir / "tunewright.yaml").write_text(yaml.safe_dump(config))
    try:
        result = stack_cli.run("up", "--config", "tunewright.yaml", cwd=stack_dir, check=False)
    finally:
        busy.close()
    assert result.returncode == 1
    assert "registry exited during start-up" in result.stderr
    assert "cannot bind" in result.stderr


def test_unknown_setting_is_an_error(tmp_path: Path, stack_cli: Any) -> None:
    (tmp_path / "bad.yaml").write_text("stack:\n  nats_prot: 4999\n")
    result = stack_cli.run("up", "--config", "bad.yaml", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "nats_prot" in result.stderr


def test_stack_ports_default_what_a_config_leaves_out(tmp_path: Path) -> None:
    # a config written for the six services before serve existed still starts all seven
    six = {"ingest": 1, "synth": 2, "trainer": 3, "evaluator": 4, "registry": 5, "monitor": 6}
    settings = StackSettings(data_dir=tmp_path, stack={"ports": six})
    assert settings.stack.ports == {**six, "serve": 50057}
    assert set(StackSettings().stack.ports) == set(SERVICES)
    assert StackSettings().stack.serve_http_port == 8000
    with pytest.raises(ValidationError, match="unknown service"):
        StackSettings(stack={"ports": {"servee": 1}})
    with pytest.raises(ValidationError, match="serve_api_key is empty"):
        StackSettings(stack={"serve_api_key": " "})


def test_serve_key_comes_from_the_config_the_token_or_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TW_SERVE__HTTP__API_KEY", raising=False)
    explicit = Stack(StackSettings(data_dir=tmp_path, stack={"serve_api_key": "mine"}))
    assert explicit._serve_api_key() == ("mine", "stack.serve_api_key")
    token = Stack(StackSettings(data_dir=tmp_path, grpc={"auth_token": "tok"}))
    assert token._serve_api_key() == (None, "grpc.auth_token")  # serve accepts it as it is
    assert not (tmp_path / "serve.key").exists()

    stack = Stack(StackSettings(data_dir=tmp_path))
    assert stack._serve_api_key(create=False) == (None, str(tmp_path / "serve.key"))
    key, where = stack._serve_api_key()
    assert where == str(tmp_path / "serve.key") and key
    assert stat.S_IMODE((tmp_path / "serve.key").stat().st_mode) == 0o600
    assert Stack(StackSettings(data_dir=tmp_path))._serve_api_key()[0] == key  # reused
    (tmp_path / "serve.key").chmod(0o644)
    assert stack._serve_api_key()[0] == key
    assert stat.S_IMODE((tmp_path / "serve.key").stat().st_mode) == 0o600
    assert not [p.name for p in tmp_path.iterdir() if p.name != "serve.key"]  # no temp left
    other = tmp_path / "other"
    assert Stack(StackSettings(data_dir=other))._serve_api_key()[0] != key  # new each dir

    monkeypatch.setenv("TW_SERVE__HTTP__API_KEY", "exported")  # set by hand: left to serve
    assert stack._serve_api_key() == (None, "$TW_SERVE__HTTP__API_KEY")


def test_mask_url_hides_credentials() -> None:
    assert mask_url("nats://u:pw@h:1,tls://tok@h2:2,nats://h3:3") == (
        "nats://***@h:1,tls://***@h2:2,nats://h3:3"
    )
    assert mask_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


def test_service_env_hands_on_every_shared_setting(tmp_path: Path) -> None:
    settings = StackSettings(
        workspace="acme",
        data_dir=tmp_path,
        nats={"url": "nats://h:1", "user": "u", "password": "pw", "creds_file": "x.creds"},
        grpc={"auth_token": "tok", "grace_period_s": 2},
        log={"level": "DEBUG", "json": False},
        plugins={"disabled": ["a", "b"]},
        artifacts={"backend": "nats"},
    )
    env = service_env(settings)
    assert env["TW_WORKSPACE"] == "acme"
    assert env["TW_DATA_DIR"] == str(tmp_path)
    assert env["TW_NATS__PASSWORD"] == "pw" and env["TW_NATS__USER"] == "u"
    assert env["TW_NATS__CREDS_FILE"] == str(Path("x.creds").resolve())  # children run elsewhere
    assert env["TW_GRPC__AUTH_TOKEN"] == "tok" and env["TW_GRPC__GRACE_PERIOD_S"] == "2.0"
    assert env["TW_LOG__LEVEL"] == "DEBUG" and env["TW_LOG__JSON"] == "false"
    assert env["TW_PLUGINS__DISABLED"] == '["a", "b"]'
    assert env["TW_ARTIFACTS__BACKEND"] == "nats"
    assert "TW_NATS__TOKEN" not in env  # unset stays unset
    assert not [k for k in env if k.startswith(("TW_STACK", "TW_SERVICE_NAME"))]


def test_probe_follows_the_grpc_settings(tmp_path: Path) -> None:
    assert Probe.from_settings(GrpcSettings(host="0.0.0.0")).host == "127.0.0.1"
    assert Probe.from_settings(GrpcSettings(host="::1")).host == "[::1]"
    cert = tmp_path / "cert.pem"
    cert.write_bytes(b"PEM")
    probe = Probe.from_settings(
        GrpcSettings(
            host="10.1.2.3",
            tls_cert_file=cert,
            tls_key_file=tmp_path / "key.pem",
            auth_token=SecretStr("tok"),
        )
    )
    assert (probe.host, probe.root_cert) == ("10.1.2.3", b"PEM")
    assert probe.metadata == (("authorization", "Bearer tok"),)
    missing = GrpcSettings(tls_cert_file=tmp_path / "absent.pem", tls_key_file=cert)
    with pytest.raises(StackError, match=r"grpc.tls_cert_file .*absent.pem: cannot read"):
        Probe.from_settings(missing)


def test_recorded_nats_url_is_masked_and_status_uses_the_configured_one(tmp_path: Path) -> None:
    settings = StackSettings(data_dir=tmp_path, nats={"url": "nats://u:pw@h:1"})
    StackState(nats_url=mask_url(settings.nats.url), embedded_nats=False).save(tmp_path)
    assert "pw" not in (tmp_path / "stack.json").read_text()
    assert Stack(settings).nats_url() == "nats://u:pw@h:1"
    other = StackSettings(data_dir=tmp_path, nats={"url": "nats://h:1"})
    assert Stack(other).nats_url() == "nats://h:1"  # credentials must come from nats.user/...


@pytest.fixture
def nats_with_password(tmp_path: Path, stack_cli: Any) -> Iterator[str]:
    """A nats-server that wants user ``tw`` / password ``s3cret-pw``; yields its address."""
    (port,) = stack_cli.free_ports(1)
    store = tmp_path / "external-nats"
    args = [str(find_binary()), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        [*args, "--user", "tw", "--pass", "s3cret-pw"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_up_hands_settings_to_services_and_probes_with_tls_and_token(
    stack_dir: Path, nats_with_password: str, stack_cli: Any
) -> None:
    cert, key = stack_dir / "cert.pem", stack_dir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    config = yaml.safe_load((stack_dir / "tunewright.yaml").read_text())
    config.update(
        workspace="acme",
        log={"level": "DEBUG"},
        # relative paths: the services run in the data dir, the CLI makes them absolute
        grpc={"tls_cert_file": "cert.pem", "tls_key_file": "key.pem", "auth_token": "t0ken"},
        nats={"user": "tw", "password": "s3cret-pw"},
    )
    (stack_dir / "tunewright.yaml").write_text(yaml.safe_dump(config))
    url = f"nats://tw:s3cret-pw@{nats_with_password}"
    # the services only reach SERVING if they got the NATS credentials and the TLS files
    up = stack_cli.run("up", "--config", "tunewright.yaml", "--nats-url", url, cwd=stack_dir)
    status = stack_cli.run("status", "--json", "--config", "tunewright.yaml", cwd=stack_dir)
    report = json.loads(status.stdout)
    assert report["healthy"] is True, status.stdout  # TLS probes, NATS with credentials
    # status knows the URL from stack.json, masked: it connects without the userinfo, with
    # the configured nats.user / nats.password
    assert report["nats"]["url"] == f"nats://{nats_with_password}"
    assert f"nats://***@{nats_with_password}" in state_text_of(stack_dir)
    for svc in report["services"]:
        assert f"tunewright.{svc['name']}.v1.{svc['name'].capitalize()}Service" in set(
            svc["reflected_services"]
        )
    state_text = state_text_of(stack_dir)
    for text in (up.stdout, up.stderr, status.stdout, status.stderr, state_text):
        assert "s3cret-pw" not in text and "t0ken" not in text

    # serve's HTTP API takes the platform's token: no key of its own is made
    assert "bearer token = grpc.auth_token" in up.stdout
    assert not (stack_dir / ".tunewright" / "serve.key").exists()
    serve_pid = json.loads(state_text)["services"]["serve"]["pid"]
    assert "TW_SERVE__HTTP__API_KEY" not in _environ(serve_pid)
    base = _serve_http(stack_dir)
    assert requests.get(f"{base}/v1/models", timeout=5).status_code == 401
    models = requests.get(f"{base}/v1/models", headers={"Authorization": "Bearer t0ken"}, timeout=5)
    # past authentication (what the answer is depends on the registry call, which does not
    # use TLS yet: core's RegistryClient opens a plaintext channel)
    assert models.status_code not in (401, 403), models.text

    pid = json.loads(state_text)["services"]["trainer"]["pid"]
    env = _environ(pid)
    assert env["TW_WORKSPACE"] == "acme" and env["TW_LOG__LEVEL"] == "DEBUG"
    assert env["TW_GRPC__TLS_CERT_FILE"] == str(cert.resolve())
    assert env["TW_NATS__PASSWORD"] == "s3cret-pw"
    assert "TW_CONFIG" not in env
    log = (stack_dir / ".tunewright" / "logs" / "trainer.log").read_text()
    assert '"level": "DEBUG"' in log  # the service really runs at the configured level


# stands in for a service (its argv names the module, as process_alive checks) that ignores
# SIGTERM and has a child of its own
STUBBORN_SERVICE = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_down_kills_the_process_group_after_the_timeout(tmp_path: Path, stack_cli: Any) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN_SERVICE, "tunewright.trainer.server"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    child_pid = int(proc.stdout.readline())
    settings = StackSettings(data_dir=tmp_path, stack={"stop_timeout_s": 0.3})
    said: list[str] = []
    Stack(settings, say=said.append)._terminate(
        [ServiceProcess(name="trainer", pid=proc.pid, port=0, log_file="")]
    )
    assert said == ["trainer: did not stop in time, killing"]
    assert proc.wait(5) == -9
    deadline = time.monotonic() + 5
    while stack_cli.alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stack_cli.alive(child_pid), "the service's child outlived it"
