"""compose/: the files resolve (docker-compose 1.29 ``config``, GPU override included), secrets
come only from compose/setup.sh (serve's TLS certificate too), every dependency waits for
health, NATS persists and asks for credentials, artifacts are shared."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import yaml

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
    # same job store, artifacts and NATS credentials: workers of one durable
    for worker in workers.values():
        assert "trainer-data:/data:rw" in worker["volumes"]
        assert (
            worker["environment"]["TW_NATS__PASSWORD"]
            == (services["nats"]["environment"]["NATS_PASSWORD"])
        )


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
    assert sorted(p.name for p in tls.iterdir()) == ["serve.crt", "serve.key"]
    assert stat.S_IMODE((tls / "serve.key").stat().st_mode) == 0o644
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


def test_nats_runs_jetstream_on_a_volume_with_credentials(resolved: dict[str, Any]) -> None:
    conf = (COMPOSE / "nats.conf").read_text()
    assert re.search(r"jetstream\s*\{[^}]*store_dir:\s*/data", conf)
    assert re.search(r"authorization\s*\{.*password:\s*\$NATS_PASSWORD", conf, re.S)
    nats = resolved["services"]["nats"]
    assert any(v.startswith("nats-data:/data") for v in nats["volumes"])
    assert "nats-data" in resolved["volumes"]
    password = nats["environment"]["NATS_PASSWORD"]
    for name in SERVICES:
        env = resolved["services"][name]["environment"]
        assert env["TW_NATS__URL"] == "nats://nats:4222"
        assert env["TW_NATS__USER"] == "tunewright" and env["TW_NATS__PASSWORD"] == password


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
    assert mounted == {"serve_tls_cert", "serve_tls_key"}
    assert env["TW_SERVE__HTTP__TLS_CERT_FILE"] == "/run/secrets/serve_tls_cert"
    assert env["TW_SERVE__HTTP__TLS_KEY_FILE"] == "/run/secrets/serve_tls_key"
    files = {name: Path(s["file"]) for name, s in resolved["secrets"].items()}
    assert files == {
        "serve_tls_cert": COMPOSE / "tls" / "serve.crt",
        "serve_tls_key": COMPOSE / "tls" / "serve.key",
    }
    # what setup.sh writes beside compose/.env, never committed or sent to a build
    assert "tls/" in (COMPOSE / ".gitignore").read_text().splitlines()
