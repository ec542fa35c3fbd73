"""compose/: the files resolve (docker-compose 1.29 ``config``, GPU override included), secrets
come only from compose/setup.sh, every dependency waits for health, NATS persists and asks
for credentials, artifacts are shared."""

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

SERVICES = ("registry", "ingest", "synth", "trainer", "evaluator", "monitor")
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
    # no other service holds the GPUs
    assert [n for n, s in services.items() if "deploy" in s] == ["trainer"]


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
