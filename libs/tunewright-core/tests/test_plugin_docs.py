"""docs/plugins.md documents every hook and every registry with its exact signature.

Like datasette's ``tests/test_docs.py``: adding a hook or changing a registry's ``add`` without
updating the docs fails here. Signatures are rendered from the code as written (annotations
are the source strings, thanks to ``from __future__ import annotations``).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tunewright.core import hookspecs
from tunewright.core.plugins import PluginManager, Registries

DOCS = Path(__file__).resolve().parents[3] / "docs" / "plugins.md"


class _Source:
    """Renders as the given text inside ``inspect.Signature`` (no quotes added)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _as_source(value: Any) -> Any:
    return _Source(value) if isinstance(value, str) else value


def render(qualname: str, func: Callable[..., object]) -> str:
    """``qualname(params) -> ret`` with annotations as written and string defaults in the
    double quotes ruff format uses."""
    sig = inspect.signature(func)
    params = [
        p.replace(
            annotation=_as_source(p.annotation),
            default=_Source(json.dumps(p.default)) if isinstance(p.default, str) else p.default,
        )
        for p in sig.parameters.values()
        if p.name != "self"
    ]
    sig = sig.replace(parameters=params, return_annotation=_as_source(sig.return_annotation))
    return f"{qualname}{sig}"


HOOKS = sorted(name for name in vars(hookspecs) if name.startswith("tw_"))
REGISTRIES = [(field, type(registry)) for field, registry in Registries().items()]
MANAGER_METHODS = ["load", "service_started", "before_train", "after_train", "after_evaluate"]


@pytest.fixture(scope="module")
def docs() -> str:
    return DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(docs: str, hook: str) -> None:
    assert f"## `{hook}`" in docs, f"docs/plugins.md has no section for {hook}"
    signature = render(hook, getattr(hookspecs, hook))
    assert signature in docs, f"docs/plugins.md lacks the exact signature {signature}"


@pytest.mark.parametrize(("field", "cls"), REGISTRIES, ids=[f for f, _ in REGISTRIES])
def test_registry_is_documented_with_its_add_signature(docs: str, field: str, cls: type) -> None:
    assert f"`registries.{field}`" in docs
    signature = render(f"{cls.__name__}.add", cls.add)
    assert signature in docs, f"docs/plugins.md lacks the exact signature {signature}"


@pytest.mark.parametrize("method", MANAGER_METHODS)
def test_manager_method_is_documented(docs: str, method: str) -> None:
    signature = render(f"PluginManager.{method}", getattr(PluginManager, method))
    assert signature in docs, f"docs/plugins.md lacks the exact signature {signature}"


def test_docs_name_no_hook_that_does_not_exist(docs: str) -> None:
    # ``tw_register_*`` / ``tw_register_<x>`` name the family, not a hook
    mentioned = set(re.findall(r"\btw_[a-z_]+\b(?![*<])", docs))
    assert mentioned - set(HOOKS) == set()
