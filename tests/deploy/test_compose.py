"""compose/: the files resolve (docker-compose 1.29 ``config``, GPU override included), secrets
come only from compose/setup.sh (serve's TLS certificate, the gRPC certificate and the gRPC
identities too), every dependency waits for health, NATS persists, is bounded and gives each
service its own user with the deny list ``tunewright up`` gives it (checked against the
catalog, and on the real nats-server with the compose nats.conf), every service has its own
gRPC identity, artifacts are shared."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from nats.js.errors import NotFoundError

from tunewright.core import catalog, subjects
from tunewright.core.bus import EventBus
from tunewright.core.identities import load_identities, token_digest
from tunewright.core.nats_server import find_binary

from .conftest import (
    COMPOSE,
    COMPOSE_FILES,
    GPU_WORKERS,
    REPO,
    compose_config,
    tunewright_services,
)

SERVICES = ("registry", "ingest", "synth", "trainer", "evaluator", "monitor", "serve")
INFRA = ("nats", "postgres", "argilla", "argilla-worker", "elasticsearch", "redis", "mlflow")
#: what setup.sh generates beyond the example's blanks: the platform token, and each service's
#: NATS password and gRPC token
SERVICE_SECRETS = [
    "GRPC_AUTH_TOKEN",
    *(f"{kind}_{name.upper()}" for name in SERVICES for kind in ("NATS_PASSWORD", "GRPC_TOKEN")),
]
#: gRPC settings every service shares: auth on, the identities, TLS
GRPC_SHARED = (
    "TW_GRPC__AUTH_TOKEN",
    "TW_GRPC__IDENTITIES_FILE",
    "TW_GRPC__TLS_CERT_FILE",
    "TW_GRPC__TLS_KEY_FILE",
)
GRPC_SECRETS = ("grpc_tls_cert", "grpc_tls_key", "grpc_identities")


# --- compose/nats.conf and compose/setup.sh, read -----------------------------------------


def _conf_without_comments() -> str:
    return re.sub(r"#[^\n]*", "", (COMPOSE / "nats.conf").read_text())


def _conf_users() -> dict[str, tuple[str, tuple[str, ...]]]:
    """user -> (the variable holding its password, the subjects it may not publish)."""
    section = re.search(r"users:\s*\[(.*)\]\s*\}\s*\}\s*$", _conf_without_comments(), re.S)
    assert section is not None, "compose/nats.conf: no users list in an account"
    users = {}
    entry = re.compile(
        r"\{\s*user:\s*([\w-]+),\s*password:\s*\$(\w+)\s*"
        r"(?:permissions:\s*\{publish:\s*\{deny:\s*\[([^\]]*)\]\}\}\s*)?\}"
    )
    for name, variable, deny in entry.findall(section.group(1)):
        assert name not in users, f"compose/nats.conf: user {name} twice"
        users[name] = (variable, tuple(re.findall(r'"([^"]+)"', deny)))
    return users


def _users_block() -> str:
    """The service users as compose/nats.conf writes them, from the catalog."""
    lines = []
    for name in SERVICES:
        lines += ["      {", f"        user: {name}, password: $NATS_PASSWORD_{name.upper()}"]
        lines.append("        permissions: {publish: {deny: [")
        lines += [f'          "{subject}",' for subject in catalog.publish_denied_to(name)]
        lines += ["        ]}}", "      }"]
    return "\n".join(lines)


def _setup_services() -> list[str]:
    found = re.search(r'^services="([^"]*)"$', (COMPOSE / "setup.sh").read_text(), re.M)
    assert found is not None, "compose/setup.sh: no services= line"
    return found.group(1).split()


def _env_values(env_file: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )


async def _quiet(_exc: Exception) -> None:
    pass  # a refused connection is asserted on, not logged


@contextmanager
def _compose_nats(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """compose/nats.conf run by the real nats-server, its store and ports moved under tmp_path,
    with the environment compose gives the container; yields the client URL."""
    conf = (COMPOSE / "nats.conf").read_text()
    conf = re.sub(r"^port: 4222$", "port: -1", conf, flags=re.M)
    conf = re.sub(r"^http_port: 8222$", "", conf, flags=re.M)
    conf = conf.replace("store_dir: /data", f'store_dir: "{tmp_path / "js"}"')
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    container_env = {k: v for k, v in env.items() if k.startswith("NATS_PASSWORD")}
    container_env |= {"NATS_MAX_FILE_STORE": "100GB", "NATS_MAX_MEMORY_STORE": "1GB"}
    with (tmp_path / "nats.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(find_binary()), "-c", str(path), "--ports_file_dir", str(tmp_path)],
            env={"PATH": os.environ["PATH"], **container_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        ports = tmp_path / f"{find_binary().name}_{proc.pid}.ports"
        deadline = time.monotonic() + 10
        while not ports.exists():
            assert proc.poll() is None, (tmp_path / "nats.log").read_text()
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.02)
        time.sleep(0.05)  # the file is written at once, but give it its last bytes
        yield str(json.loads(ports.read_text())["nats"][0])
    finally:
        proc.terminate()
        proc.wait(10)


def test_compose_with_gpu_override_resolves(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    expected = set(SERVICES) | set(INFRA)
    # every service distribution in the repository is deployed (a new one needs its image)
    expected |= {p.parent.name for p in (REPO / "services").glob("*/pyproject.toml")}
    assert set(services) == expected
    assert set(tunewright_services(resolved).values()) == expected - set(INFRA)

    (gpus,) = services["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus["driver"] == "nvidia" and gpus["capabilities"] == ["gpu"]
    assert int(services["trainer"]["shm_size"].removesuffix("gb")) >= 1
    # serve answers on one GPU (SERVE_GPU, shared with the trainer), with the CUDA torch
    (gpu,) = services["serve"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["device_ids"] == ["0"]
    assert "/whl/cu" in services["serve"]["build"]["args"]["TORCH_INDEX_URL"]
    # no other service holds the GPUs
    assert sorted(n for n, s in services.items() if "deploy" in s) == ["serve", "trainer"]


def test_one_worker_per_gpu_override_resolves(env_file: Path) -> None:
    result = compose_config(env_file, COMPOSE_FILES[0], GPU_WORKERS)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    kinds = tunewright_services({"services": services})
    workers = {n: s for n, s in services.items() if kinds.get(n) == "trainer"}
    assert set(workers) == {"trainer", "trainer-gpu1"}
    devices = [w["deploy"]["resources"]["reservations"]["devices"] for w in workers.values()]
    assert sorted(d[0]["device_ids"] for d in devices) == [["0"], ["1"]]
    # same job store, artifacts, NATS user and gRPC identity and certificate: workers of one
    # durable, each the trainer
    trainer_env = services["trainer"]["environment"]
    for worker in workers.values():
        assert "trainer-data:/data:rw" in worker["volumes"]
        env = worker["environment"]
        assert env["TW_NATS__USER"] == "trainer"
        assert env["TW_NATS__PASSWORD"] == services["nats"]["environment"]["NATS_PASSWORD_TRAINER"]
        for key in (*GRPC_SHARED, "TW_GRPC__CLIENT_TOKEN"):
            assert env[key] == trainer_env[key], key
        assert {s["source"] for s in worker["secrets"]} == set(GRPC_SECRETS)


def test_without_generated_secrets_nothing_resolves(tmp_path: Path) -> None:
    # the example as it is (empty secrets) and no env file at all both fail, naming the fix
    for env in (COMPOSE / ".env.example", tmp_path / "missing.env"):
        if not env.exists():
            env.write_text("")
        result = compose_config(env)
        assert result.returncode != 0
        assert "run compose/setup.sh first" in result.stderr


def test_setup_writes_fresh_private_secrets_once(tmp_path: Path) -> None:
    setup = COMPOSE / "setup.sh"
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    subprocess.run([str(setup), str(first)], check=True, capture_output=True)
    subprocess.run([str(setup), str(second)], check=True, capture_output=True)
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o600

    blanks = re.findall(r"^([A-Z_]+)=$", (COMPOSE / ".env.example").read_text(), re.M)
    assert len(blanks) >= 9

    # and each service's credentials, which setup.sh adds itself
    blanks += SERVICE_SECRETS

    def secrets(path: Path) -> dict[str, str]:
        pairs = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return {key: pairs[key] for key in blanks}

    a, b = secrets(first), secrets(second)
    assert all(re.fullmatch(r"[0-9a-f]{48}", v) for v in a.values())  # 192 bits each
    assert len(set(a.values())) == len(a)  # all different
    assert not set(a.values()) & set(b.values())  # and new each time

    again = subprocess.run([str(setup), str(first)], capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr
    assert "SERVE_API_KEY" in blanks


def test_setup_update_adds_only_what_an_older_env_lacks(tmp_path: Path) -> None:
    setup = COMPOSE / "setup.sh"
    env = tmp_path / ".env"
    subprocess.run([str(setup), str(env)], check=True, capture_output=True)
    # an .env of the version before serve: no SERVE_API_KEY, a last line without newline
    older = [line for line in env.read_text().splitlines() if not line.startswith("SERVE_")]
    env.write_text("\n".join(older))
    subprocess.run([str(setup), "--update", str(env)], check=True, capture_output=True)
    lines = env.read_text().splitlines()
    assert lines[: len(older)] == older  # nothing changed
    (added,) = lines[len(older) :]
    assert re.fullmatch(r"SERVE_API_KEY=[0-9a-f]{48}", added)
    assert stat.S_IMODE(os.stat(env).st_mode) == 0o600
    again = subprocess.run([str(setup), "--update", str(env)], capture_output=True, text=True)
    assert again.returncode == 0 and env.read_text().splitlines() == lines
    missing = subprocess.run(
        [str(setup), "--update", str(tmp_path / "none.env")], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "without --update" in missing.stderr


def test_setup_makes_serves_certificate_for_its_names(tmp_path: Path) -> None:
    setup = COMPOSE / "setup.sh"
    env = tmp_path / "conf" / ".env"
    env.parent.mkdir()
    extra = {"SERVE_TLS_SAN": "DNS:gpu1.example,IP:10.0.0.5"}
    subprocess.run(
        [str(setup), str(env)], check=True, capture_output=True, env={**os.environ, **extra}
    )
    tls = env.parent / "tls"
    # the folder keeps other users out; the key is readable through it by the container's user
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    assert sorted(p.name for p in tls.iterdir()) == [
        "grpc-identities.yaml",
        "grpc.crt",
        "grpc.key",
        "serve.crt",
        "serve.key",
    ]
    for name in ("serve.key", "grpc.key", "grpc-identities.yaml"):
        assert stat.S_IMODE((tls / name).stat().st_mode) == 0o644, name
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tls / "serve.crt"), "-noout", "-ext", "subjectAltName"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in ("DNS:serve", "DNS:localhost", "IP Address:127.0.0.1", "DNS:gpu1.example"):
        assert name in text, text
    check = subprocess.run(
        ["openssl", "pkey", "-in", str(tls / "serve.key"), "-noout"], capture_output=True
    )
    assert check.returncode == 0
    # a new .env keeps the certificate clients already trust
    cert = (tls / "serve.crt").read_bytes()
    env.unlink()
    subprocess.run([str(setup), str(env)], check=True, capture_output=True)
    assert (tls / "serve.crt").read_bytes() == cert


def test_every_dependency_waits_for_a_health_check(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert spec == {"condition": "service_healthy"}, (name, dependency)
            assert services[dependency].get("healthcheck", {}).get("test"), dependency
    # every service that others wait on, and every tunewright service, has a check
    for name in (*SERVICES, "nats", "postgres", "argilla", "elasticsearch", "redis", "mlflow"):
        assert services[name]["healthcheck"]["test"], name
    for name in SERVICES:
        assert services[name]["healthcheck"]["test"][1:] == [
            "python",
            "/opt/tunewright/healthcheck.py",
        ]
        assert {"nats"} <= set(services[name]["depends_on"])
    assert set(services["registry"]["depends_on"]) == {"nats", "postgres"}
    assert "registry" in services["evaluator"]["depends_on"]
    assert set(services["serve"]["depends_on"]) == {"nats", "registry"}


def test_nats_runs_bounded_jetstream_on_a_volume(resolved: dict[str, Any]) -> None:
    conf = _conf_without_comments()
    jetstream = re.search(r"^jetstream\s*\{([^}]*)\}", conf, re.M)
    assert jetstream is not None
    assert re.search(r"store_dir:\s*/data", jetstream.group(1))
    assert re.search(r"max_memory_store:\s*\$NATS_MAX_MEMORY_STORE", jetstream.group(1))
    assert re.search(r"max_file_store:\s*\$NATS_MAX_FILE_STORE", jetstream.group(1))
    # one account holds everything, with limits of its own
    account = re.search(r"TUNEWRIGHT\s*\{\s*jetstream\s*\{([^}]*)\}", conf)
    assert account is not None
    limits = dict(re.findall(r"(\w+):\s*(\S+)", account.group(1)))
    assert limits["max_memory"] == "$NATS_MAX_MEMORY_STORE"
    assert limits["max_file"] == "$NATS_MAX_FILE_STORE"
    # room for the catalog's streams, the processed-marks bucket and the artifact store
    assert len(catalog.STREAMS) + 2 <= int(limits["max_streams"]) <= 64
    assert len(catalog.CONSUMERS) < int(limits["max_consumers"])
    nats_service = resolved["services"]["nats"]
    assert any(v.startswith("nats-data:/data") for v in nats_service["volumes"])
    assert "nats-data" in resolved["volumes"]
    env = nats_service["environment"]
    assert env["NATS_MAX_FILE_STORE"] == "100GB" and env["NATS_MAX_MEMORY_STORE"] == "1GB"


def test_nats_users_are_the_stacks_one_per_service(resolved: dict[str, Any]) -> None:
    """The users `tunewright up` gives its embedded server, from the same catalog."""
    users = _conf_users()
    expected = {"cli": ("NATS_PASSWORD", ())} | {
        name: (f"NATS_PASSWORD_{name.upper()}", catalog.publish_denied_to(name))
        for name in SERVICES
    }
    wrong = {
        name: got
        for name, got in users.items()
        if name not in expected
        or (got[0], set(got[1])) != (expected[name][0], set(expected[name][1]))
    }
    missing = set(expected) - set(users)
    assert not wrong and not missing, (
        f"compose/nats.conf users differ from the catalog (wrong: {sorted(wrong)}, missing: "
        f"{sorted(missing)}); the service users should read:\n{_users_block()}"
    )
    # every service of the catalog, every service setup.sh makes credentials for
    assert set(SERVICES) == set(catalog.FACT_OWNERS) == set(_setup_services())
    nats_env = resolved["services"]["nats"]["environment"]
    for variable, _deny in expected.values():
        assert re.fullmatch(r"[0-9a-f]{48}", nats_env[variable]), variable
    assert len({nats_env[v] for v, _ in expected.values()}) == len(expected)  # all different
    for name in SERVICES:
        env = resolved["services"][name]["environment"]
        assert env["TW_NATS__URL"] == "nats://nats:4222"
        assert env["TW_NATS__USER"] == name, name
        assert env["TW_NATS__PASSWORD"] == nats_env[f"NATS_PASSWORD_{name.upper()}"], name


async def test_the_compose_nats_conf_refuses_strangers_and_forged_facts(
    env_file: Path, tmp_path: Path
) -> None:
    """compose/nats.conf on the real nats-server (its store and ports moved to tmp): the users
    log in with the passwords setup.sh made, a stranger does not, ingest cannot publish an
    evaluator fact, and the services declare the catalog within the account's limits."""
    env = _env_values(env_file)
    with _compose_nats(env, tmp_path) as url:
        for refused in ({}, {"user": "ingest", "password": "not-it"}, {"user": "tunewright"}):
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(url, allow_reconnect=False, error_cb=_quiet, **refused)
        registry = await EventBus.connect(
            url, name="registry", user="registry", password=env["NATS_PASSWORD_REGISTRY"]
        )
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        ingest = await nats.connect(
            url, user="ingest", password=env["NATS_PASSWORD_INGEST"], error_cb=on_error
        )
        evaluator = await nats.connect(
            url, user="evaluator", password=env["NATS_PASSWORD_EVALUATOR"]
        )
        try:
            await registry.declare()  # what every service does at start-up
            await registry.declare()  # and again at the next start
            account = await registry.js.account_info()
            assert account.limits.max_streams == 32 and account.limits.max_consumers == 256
            assert account.limits.max_storage == 100 * 1024**3
            assert account.limits.max_memory == 1024**3

            subject = subjects.EVALUATOR_RUN_COMPLETED
            stream = catalog.stream_for_subject(subject).name
            with pytest.raises((TimeoutError, nats.errors.Error)):
                await ingest.jetstream().publish(subject, b"forged", timeout=1)
            for _ in range(50):
                if errors:
                    break
                await asyncio.sleep(0.02)
            assert any("permissions violation" in str(e).lower() for e in errors), errors
            with pytest.raises(NotFoundError):
                await registry.js.get_last_msg(stream, subject)
            await evaluator.jetstream().publish(subject, b"real", timeout=5)
            assert (await registry.js.get_last_msg(stream, subject)).data == b"real"
            # the CLI's user may publish anything (like `tunewright up`'s)
            cli = await nats.connect(url, user="cli", password=env["NATS_PASSWORD"])
            await cli.close()
        finally:
            await ingest.close()
            await evaluator.close()
            await registry.close()


def test_every_service_has_its_own_grpc_identity_and_tls(
    resolved: dict[str, Any], env_file: Path
) -> None:
    env = _env_values(env_file)
    identities = load_identities(env_file.parent / "tls" / "grpc-identities.yaml")
    tokens = set()
    for name in SERVICES:
        service = resolved["services"][name]
        service_env = service["environment"]
        token = service_env["TW_GRPC__CLIENT_TOKEN"]
        assert token == env[f"GRPC_TOKEN_{name.upper()}"], name
        identity = identities[token_digest(token)]
        assert (identity.name, identity.role) == (name, "service")
        tokens.add(token)
        # auth on (the platform token), the identities file and TLS, from the secrets
        assert service_env["TW_GRPC__AUTH_TOKEN"] == env["GRPC_AUTH_TOKEN"]
        assert {k: service_env[k] for k in GRPC_SHARED[1:]} == {
            "TW_GRPC__IDENTITIES_FILE": "/run/secrets/grpc_identities",
            "TW_GRPC__TLS_CERT_FILE": "/run/secrets/grpc_tls_cert",
            "TW_GRPC__TLS_KEY_FILE": "/run/secrets/grpc_tls_key",
        }
        assert set(GRPC_SECRETS) <= {s["source"] for s in service["secrets"]}, name
    assert len(tokens) == len(SERVICES)  # each its own
    # the platform token is not a service's identity; the file holds nothing else
    assert token_digest(env["GRPC_AUTH_TOKEN"]) not in identities
    assert len(identities) == len(SERVICES)
    files = {name: Path(resolved["secrets"][name]["file"]) for name in GRPC_SECRETS}
    assert files == {
        "grpc_tls_cert": COMPOSE / "tls" / "grpc.crt",
        "grpc_tls_key": COMPOSE / "tls" / "grpc.key",
        "grpc_identities": COMPOSE / "tls" / "grpc-identities.yaml",
    }
    # services call each other by compose name; the health check asks localhost
    text = subprocess.run(
        [
            "openssl",
            "x509",
            "-in",
            str(env_file.parent / "tls" / "grpc.crt"),
            "-noout",
            "-ext",
            "subjectAltName",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in (*SERVICES, "localhost"):
        assert f"DNS:{name}," in text or text.rstrip().endswith(f"DNS:{name}"), (name, text)
    assert "IP Address:127.0.0.1" in text


def test_setup_rewrites_the_service_identities_and_keeps_peoples(tmp_path: Path) -> None:
    setup = COMPOSE / "setup.sh"
    env = tmp_path / ".env"
    subprocess.run([str(setup), str(env)], check=True, capture_output=True)
    identities = tmp_path / "tls" / "grpc-identities.yaml"
    alice = "  - {name: alice, role: promoter, token_sha256: " + token_digest("alice-token") + "}"
    identities.write_text(identities.read_text() + alice + "\n")
    # an .env of the version before per-service credentials: setup.sh --update adds them and
    # the identities follow the new tokens; alice stays
    older = [
        line
        for line in env.read_text().splitlines()
        if not line.startswith(("NATS_PASSWORD_", "GRPC_"))
    ]
    env.write_text("\n".join(older) + "\n")
    subprocess.run([str(setup), "--update", str(env)], check=True, capture_output=True)
    added = env.read_text().splitlines()[len(older) :]
    assert sorted(line.split("=", 1)[0] for line in added) == sorted(SERVICE_SECRETS)
    loaded = load_identities(identities)
    values = _env_values(env)
    assert {(i.name, i.role) for i in loaded.values()} == {("alice", "promoter")} | {
        (name, "service") for name in SERVICES
    }
    for name in SERVICES:
        assert loaded[token_digest(values[f"GRPC_TOKEN_{name.upper()}"])].name == name


def test_services_share_one_artifact_volume(resolved: dict[str, Any]) -> None:
    for name in SERVICES:
        service = resolved["services"][name]
        assert "artifacts:/artifacts:rw" in service["volumes"], name
        assert service["environment"]["TW_ARTIFACTS__ROOT"] == "/artifacts"


def test_no_secret_is_written_in_a_compose_file() -> None:
    secretish = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|DATABASE_URL|ELASTICSEARCH$|REDIS_URL")
    for path in COMPOSE_FILES:
        config = yaml.safe_load(path.read_text())
        for name, service in config["services"].items():
            env = service.get("environment") or {}
            for key, value in env.items():
                if secretish.search(key):
                    assert re.search(r"\$\{[A-Z_]+:\?", str(value)), (path.name, name, key)


def test_published_ports_listen_on_loopback_by_default(resolved: dict[str, Any]) -> None:
    published = [
        (name, port)
        for name, service in resolved["services"].items()
        for port in service.get("ports", [])
    ]
    assert {name for name, _ in published} >= {*SERVICES, "nats", "argilla", "mlflow"}
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), (name, port)
    # elasticsearch, redis and postgres stay on the compose network
    assert not {"elasticsearch", "redis", "postgres"} & {name for name, _ in published}
    # serve publishes gRPC and its HTTP API
    assert sorted(p for n, p in published if n == "serve") == [
        "127.0.0.1:50057:50057/tcp",
        "127.0.0.1:8000:8000/tcp",
    ]


def test_serve_answers_https_with_the_generated_key_and_certificate(
    resolved: dict[str, Any],
) -> None:
    serve = resolved["services"]["serve"]
    env = serve["environment"]
    assert re.fullmatch(r"[0-9a-f]{48}", env["TW_SERVE__HTTP__API_KEY"])  # from setup.sh
    mounted = {s["source"] for s in serve["secrets"]}
    assert mounted == {"serve_tls_cert", "serve_tls_key", *GRPC_SECRETS}
    assert env["TW_SERVE__HTTP__TLS_CERT_FILE"] == "/run/secrets/serve_tls_cert"
    assert env["TW_SERVE__HTTP__TLS_KEY_FILE"] == "/run/secrets/serve_tls_key"
    files = {name: Path(s["file"]) for name, s in resolved["secrets"].items()}
    assert {k: v for k, v in files.items() if k.startswith("serve_")} == {
        "serve_tls_cert": COMPOSE / "tls" / "serve.crt",
        "serve_tls_key": COMPOSE / "tls" / "serve.key",
    }
    # what setup.sh writes beside compose/.env, never committed or sent to a build
    assert "tls/" in (COMPOSE / ".gitignore").read_text().splitlines()
