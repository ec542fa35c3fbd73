"""Every ``TW_*`` variable a compose file or an image gives a service is a key of that
service's settings model, and the resolved values load.

Stricter than the service itself: at start-up a service ignores ``TW_<SECTION>__…`` for a
section it does not have (one environment may serve several services), so a misspelt section
would be dropped silently; here it fails.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from tunewright.core.settings import ENV_PREFIX, load_settings

from .conftest import (
    COMPOSE_FILES,
    GPU_WORKERS,
    REPO,
    dockerfile_instructions,
    settings_class,
    tunewright_services,
)


def _section(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def setting_path(model: type[BaseModel], variable: str) -> str:
    """``TW_TRAINER__LAUNCH__STRATEGY`` -> ``trainer.launch.strategy``, or raise naming it."""
    assert variable.startswith(ENV_PREFIX), variable
    path: list[str] = []
    segments = variable[len(ENV_PREFIX) :].lower().split("__")
    for depth, segment in enumerate(segments):
        fields = {(f.alias or n).lower(): f for n, f in model.model_fields.items()}
        field = fields.get(segment)
        if field is None:
            known = ", ".join(sorted(fields))
            where = ".".join(path) or "the top level"
            raise AssertionError(f"{variable}: no key {segment!r} at {where} (known: {known})")
        path.append(segment)
        section = _section(field.annotation)
        if depth < len(segments) - 1:
            assert section is not None, f"{variable}: {'.'.join(path)} is not a section"
            model = section
        else:
            assert section is None, f"{variable}: {'.'.join(path)} is a section, not a value"
    return ".".join(path)


def image_env(svc: str) -> dict[str, str]:
    """``TW_*`` variables the service's image sets with ENV."""
    env: dict[str, str] = {}
    for ins in dockerfile_instructions(REPO / "docker" / f"{svc}.Dockerfile"):
        if ins.keyword == "ENV":
            env.update(re.findall(r"(TW_[A-Z0-9_]+)=(\S+)", ins.args))
    return env


def test_every_tw_variable_in_the_compose_files_is_a_setting() -> None:
    checked: dict[str, list[str]] = {}
    base = yaml.safe_load(COMPOSE_FILES[0].read_text())
    for path in (*COMPOSE_FILES, GPU_WORKERS):
        config = yaml.safe_load(path.read_text())
        # an override names services of the main file, or new ones by image
        services = tunewright_services(base) | tunewright_services(config)
        for name, service in config["services"].items():
            env = service.get("environment") or {}
            tw = [key for key in env if key.startswith(ENV_PREFIX)]
            if name not in services:
                assert not tw, f"{path.name}: {name} is not a tunewright service: {tw}"
                continue
            cls = settings_class(services[name])
            for key in tw:
                checked.setdefault(name, []).append(setting_path(cls, key))
    assert set(checked) == {
        *("registry", "ingest", "synth", "trainer", "evaluator", "monitor", "serve"),
        "trainer-gpu1",
    }
    assert "trainer.launch.nproc_per_node" in checked["trainer"]  # from gpu.yml
    assert "registry.database_url" in checked["registry"]
    assert "serve.http.api_key" in checked["serve"]


def test_every_tw_variable_an_image_sets_is_a_setting() -> None:
    for dockerfile in sorted((REPO / "docker").glob("*.Dockerfile")):
        svc = dockerfile.name.removesuffix(".Dockerfile")
        env = image_env(svc)
        assert {"TW_DATA_DIR", "TW_GRPC__HOST", "TW_GRPC__PORT"} <= set(env), svc
        for key in env:
            setting_path(settings_class(svc), key)


def test_resolved_environments_load_each_services_settings(
    resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The image's ENV plus compose's (interpolated) environment, loaded like at start-up."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    loaded = {}
    for name, svc in tunewright_services(resolved).items():
        env = {**image_env(svc), **resolved["services"][name]["environment"]}
        with monkeypatch.context() as m:
            for key, value in env.items():
                if key.startswith(ENV_PREFIX):
                    setting_path(settings_class(svc), key)
                    m.setenv(key, str(value))
            loaded[name] = load_settings(settings_class(svc))
    kinds = tunewright_services(resolved)
    for name, settings in loaded.items():
        assert settings.grpc.host == "0.0.0.0"
        # its own NATS user and gRPC identity (trainer-gpu1 is a trainer); auth and TLS on
        assert settings.nats.user == kinds[name] and settings.nats.password is not None
        assert settings.grpc.tls and settings.grpc.auth_token is not None
        assert settings.grpc.client_token is not None and settings.grpc.identities_file
        assert str(settings.artifacts_root) == "/artifacts"
        ports = resolved["services"][name]["ports"]
        inside = {settings.grpc.port}
        if name == "serve":  # and its HTTP API
            inside.add(settings.serve.http.port)
        assert {int(p.rsplit(":", 1)[1].removesuffix("/tcp")) for p in ports} == inside, (
            name,
            ports,
        )
    url = loaded["registry"].registry.database_url.get_secret_value()
    assert url.startswith("postgresql+psycopg://tunewright:") and url.endswith(
        "@postgres:5432/tunewright"
    )
    assert loaded["evaluator"].evaluator.registry_address == "registry:50055"
    assert loaded["synth"].synth.registry_address == "registry:50055"
    assert loaded["monitor"].monitor.registry_address == "registry:50055"
    assert loaded["trainer"].trainer.launch.launcher == "none"  # gpu.yml default: one process
    # serve: HTTPS on every interface of the container with the key setup.sh generated (the
    # settings refuse a token off loopback without TLS, so this loading is that check)
    http = loaded["serve"].serve.http
    assert loaded["serve"].serve.registry_address == "registry:50055"
    assert (http.host, http.port) == ("0.0.0.0", 8000)
    assert http.tls_cert_file == "/run/secrets/serve_tls_cert"
    assert http.api_key is not None and not http.insecure_no_auth
