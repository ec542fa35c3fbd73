"""Services import only core and the generated stubs, never each other (checked rule)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())
STUB_DOMAINS = sorted(
    p.parent.name for p in (ROOT / "libs/tunewright-core/src/tunewright").glob("*/v1")
)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from tunewright import trainer` imports the trainer package itself
            if node.module == "tunewright":
                found += [(node.lineno, f"tunewright.{a.name}") for a in node.names]
    return found


def _allowed(module: str, own: str | None) -> bool:
    if not module.startswith("tunewright."):
        return True
    parts = module.split(".")
    if parts[1] == "core":
        return True
    if len(parts) >= 3 and parts[1] in STUB_DOMAINS and parts[2] == "v1":
        return True  # generated stubs of any domain
    return own is not None and parts[1] == own


def _violations(base: Path, own: str | None) -> list[str]:
    bad = []
    for path in sorted(base.rglob("*.py")):
        for lineno, module in _imports(path):
            if not _allowed(module, own):
                bad.append(f"{path.relative_to(ROOT)}:{lineno} imports {module}")
    return bad


def test_services_import_only_core_stubs_and_themselves() -> None:
    assert SERVICES == ["evaluator", "ingest", "monitor", "registry", "serve", "synth", "trainer"]
    bad = []
    for svc in SERVICES:
        bad += _violations(ROOT / "services" / svc / "src", svc)
    assert not bad, "\n".join(bad)


def test_core_imports_no_service_plugin_or_cli() -> None:
    bad = _violations(ROOT / "libs/tunewright-core/src/tunewright/core", None)
    assert not bad, "\n".join(bad)


def test_first_party_plugins_import_only_core_and_stubs() -> None:
    bad = []
    for plugin in sorted((ROOT / "plugins").glob("*/src")):
        bad += _violations(plugin, None)
    assert not bad, "\n".join(bad)


def test_checker_catches_a_cross_service_import(tmp_path: Path) -> None:
    src = tmp_path / "mod.py"
    src.write_text(
        "from tunewright.trainer.worker import run\nfrom tunewright.trainer.v1 import trainer_pb2\n"
    )
    assert [m for _, m in _imports(src) if not _allowed(m, "ingest")] == [
        "tunewright.trainer.worker"
    ]
