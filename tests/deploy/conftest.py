"""Helpers of the deployment tests: the compose files as docker-compose resolves them, the
Dockerfiles as instructions, and each service's settings class.

There is no Docker engine on the machines these tests run on: Debian's ``docker-compose``
1.29 validates and resolves compose files without one (``config``); images are not built.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunewright.core.settings import TunewrightSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
COMPOSE_FILES = (COMPOSE / "docker-compose.yml", COMPOSE / "gpu.yml")
# the alternative GPU override: one worker per GPU
GPU_WORKERS = COMPOSE / "gpu-workers.yml"
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail(
            "docker-compose is not installed: `apt-get install docker-compose` (Debian's 1.29 "
            "validates compose files without a Docker engine)"
        )
    return found


def compose_config(
    env_file: Path, *files: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``docker-compose --env-file ENV -f … config``: the files merged and interpolated."""
    args = [docker_compose(), "--env-file", str(env_file)]
    for file in files or COMPOSE_FILES:
        args += ["-f", str(file)]
    # only what the test gives: no variable of this shell may leak into the interpolation
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(extra_env or {})}
    return subprocess.run(
        [*args, "config"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """compose/.env as compose/setup.sh writes it (fresh secrets), in a temporary folder."""
    out = tmp_path / ".env"
    subprocess.run([str(COMPOSE / "setup.sh"), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture
def resolved(env_file: Path) -> dict[str, Any]:
    """docker-compose.yml + gpu.yml, resolved by docker-compose itself."""
    result = compose_config(env_file)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


# --- tunewright services ---------------------------------------------------------------


def service_of_dockerfile(dockerfile: str) -> str | None:
    """``docker/trainer.Dockerfile`` -> ``trainer`` (None for images not built here)."""
    match = re.fullmatch(r"docker/([a-z]+)\.Dockerfile", dockerfile)
    return match.group(1) if match else None


def tunewright_services(config: dict[str, Any]) -> dict[str, str]:
    """Compose service name -> tunewright service: built from docker/ or a tunewright image."""
    out = {}
    for name, service in config["services"].items():
        build = service.get("build") or {}
        svc = service_of_dockerfile(build.get("dockerfile", "")) if build else None
        image = re.fullmatch(r"tunewright/([a-z]+):.*", str(service.get("image", "")))
        if svc is None and image is not None:
            svc = image.group(1)
        if svc is not None:
            out[name] = svc
    return out


def settings_class(svc: str) -> type[TunewrightSettings]:
    """``tunewright.<svc>.settings.<Svc>Settings``, the class the service loads."""
    module = importlib.import_module(f"tunewright.{svc}.settings")
    cls = getattr(module, f"{svc.capitalize()}Settings")
    assert issubclass(cls, TunewrightSettings)
    return cls


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if not stripped.endswith("\\"):
            text = " ".join(pending)
            keyword, _, args = text.partition(" ")
            out.append(Instruction(keyword.upper(), args.strip(), start))
            pending = []
    return out
