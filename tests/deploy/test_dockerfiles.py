"""docker/*.Dockerfile, read statically (no Docker engine here; the images are not built):
each installs only its service's distribution, the shared kernel and the plugins it uses,
with pinned versions and no pip cache, runs as a non-root user and checks its own health.
Which third-party packages end up in an image is computed from the distributions' declared
requirements (installed in this venv): the registry and ingest images carry no torch."""

from __future__ import annotations

import fnmatch
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from .conftest import DOCKERFILES, REPO, Instruction, dockerfile_instructions

# the plugins each service uses (what it looks up in the plugin registries)
ALLOWED_PLUGINS = {
    "registry": set(),
    "ingest": {"tunewright-curation"},  # curation filters, PII recognizers
    # generators (local, openai-compatible), feedback backends
    "synth": {"tunewright-trl", "tunewright-openai", "tunewright-feedback", "tunewright-argilla"},
    "trainer": {
        "tunewright-trl",
        "tunewright-mlflow",
        "tunewright-tensorboard",
    },  # methods, trackers
    "evaluator": {
        "tunewright-metrics",
        "tunewright-trl",
        "tunewright-openai",
    },  # metrics, generators
    "monitor": {"tunewright-drift"},  # drift detectors
    "serve": {"tunewright-trl"},  # the transformers serving backend, base models
}


def _svc(path: Path) -> str:
    return path.name.removesuffix(".Dockerfile")


def _stages(path: Path) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for ins in dockerfile_instructions(path):
        if ins.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _local_dists(path: Path) -> set[str]:
    """Repository folders with a pyproject.toml the Dockerfile copies in."""
    out = set()
    for ins in dockerfile_instructions(path):
        if ins.keyword == "COPY" and not ins.args.startswith("--from"):
            source = ins.args.split()[0]
            if (REPO / source / "pyproject.toml").is_file():
                out.add(source)
    return out


def _name(folder: str) -> str:
    text = (REPO / folder / "pyproject.toml").read_text()
    match = re.search(r'^name = "([^"]+)"', text, re.M)
    assert match, folder
    return match.group(1)


def test_every_service_has_an_image() -> None:
    services = {p.parent.name for p in (REPO / "services").glob("*/pyproject.toml")}
    assert {_svc(p) for p in DOCKERFILES} == services
    assert set(ALLOWED_PLUGINS) == services


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_svc)
def test_image_installs_only_its_service_core_and_its_plugins(dockerfile: Path) -> None:
    svc = _svc(dockerfile)
    folders = _local_dists(dockerfile)
    names = {_name(f) for f in folders}
    assert names == {"tunewright-core", f"tunewright-{svc}", *ALLOWED_PLUGINS[svc]}
    # exactly those are built into wheels, and nothing else of the repository is copied
    (wheel,) = [i for i in dockerfile_instructions(dockerfile) if "pip wheel" in i.args]
    assert {
        a.removeprefix("./").rstrip("/") for a in wheel.args.split() if a.startswith("./")
    } == folders
    for ins in dockerfile_instructions(dockerfile):
        if ins.keyword == "COPY" and not ins.args.startswith("--from"):
            source = ins.args.split()[0]
            allowed = folders | {"docker/healthcheck.py"}
            assert source in allowed or source.startswith("requirements/"), (svc, source)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_svc)
def test_image_is_small_pinned_non_root_and_health_checked(dockerfile: Path) -> None:
    svc = _svc(dockerfile)
    stages = _stages(dockerfile)
    assert len(stages) >= 2, "multi-stage: build tools stay in the build stage"
    final = stages[-1]
    base = final[0].args
    if svc == "trainer":
        assert "CUDA_IMAGE" in base and "ARG CUDA_IMAGE=nvidia/cuda:" in dockerfile.read_text()
    else:
        assert "PYTHON_IMAGE" in base and "-slim" in dockerfile.read_text()
    # only the venv comes from the build stage; no compiler or build backend in the final one
    final_runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert "pip" not in final_runs and "hatchling" not in final_runs
    copies = [i.args for i in final if i.keyword == "COPY" and i.args.startswith("--from")]
    assert copies == ["--from=build /opt/venv /opt/venv"]

    for ins in dockerfile_instructions(dockerfile):
        if ins.keyword == "RUN" and re.search(r"pip (install|wheel)", ins.args):
            for command in re.split(r"&&", ins.args):
                if re.search(r"pip (install|wheel)", command):
                    assert "--no-cache-dir" in command, (svc, command)
                    pinned = (
                        "-c requirements/constraints.txt" in command
                        or "--require-hashes" in command
                        or "--no-deps" in command  # wheels of this repository
                        or re.search(r"grep '\^(torch|hatchling)==' requirements/", command)
                    )
                    assert pinned, (svc, command)

    users = [i.args for i in final if i.keyword == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert re.search(r"useradd --system --uid 10001", final_runs)
    (health,) = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert '"/opt/tunewright/healthcheck.py"' in health and "--start-period" in health
    (entry,) = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    assert entry == f'["tunewright-{svc}"]'
    scripts = (REPO / "services" / svc / "pyproject.toml").read_text()
    assert f'tunewright-{svc} = "tunewright.{svc}.server:main"' in scripts
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    (expose,) = [i.args.split() for i in final if i.keyword == "EXPOSE"]
    assert f"TW_GRPC__PORT={expose[0]}" in env  # gRPC first
    if svc == "serve":  # and the HTTP API, bound on every interface like gRPC
        assert expose[1:] == ["8000"] and "TW_SERVE__HTTP__PORT=8000" in env
        assert "TW_SERVE__HTTP__HOST=0.0.0.0" in env and "TW_GRPC__HOST=0.0.0.0" in env
    else:
        assert len(expose) == 1


def _dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        for prefix in prefixes
        for pattern in patterns
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_svc)
def test_every_copied_path_is_in_the_build_context(dockerfile: Path) -> None:
    for ins in dockerfile_instructions(dockerfile):
        if ins.keyword == "COPY" and not ins.args.startswith("--from"):
            for source in ins.args.split()[:-1]:
                assert (REPO / source).exists(), source
                assert not _dockerignored(source), f"{source} is excluded by .dockerignore"
    # and what must never be sent is excluded
    assert _dockerignored("compose/.env") and _dockerignored(".venv/bin/python")
    assert _dockerignored("services/trainer/tests/conftest.py")
    assert _dockerignored("compose/tls/serve.key") and _dockerignored("compose/tls/serve.crt")


def _closure(names: set[str]) -> set[str]:
    """The distributions ``names`` pull in (declared requirements, no extras), lowercased."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_svc)
def test_torch_only_where_a_plugin_needs_it(dockerfile: Path) -> None:
    svc = _svc(dockerfile)
    names = {_name(f) for f in _local_dists(dockerfile)}
    installed = _closure(names)
    text = " ".join(i.args for i in dockerfile_instructions(dockerfile))  # comments dropped
    if svc in ("registry", "ingest", "monitor"):
        assert "torch" not in installed and "torch" not in text
        assert not {"transformers", "bitsandbytes", "nvidia-cudnn-cu12"} & installed
    else:
        assert {"torch", "transformers"} <= installed
        assert "--index-url" in text and "TORCH_INDEX_URL" in text  # torch first, chosen build
    if svc == "trainer":
        assert {"bitsandbytes", "accelerate", "peft", "trl", "mlflow-skinny"} <= installed
        assert "download.pytorch.org/whl/cu" in text  # the CUDA build
    if svc == "registry":
        assert {"sqlalchemy", "alembic", "psycopg"} <= installed
    if svc == "serve":
        assert {"peft", "fastapi", "uvicorn"} <= installed
        assert "download.pytorch.org/whl/cpu" in text  # CPU by default, like the evaluator
