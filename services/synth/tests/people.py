"""Stand-ins for people ranking answers, as a builtin plugin (``PluginManager.load(builtins=
[people])``): real people cannot rank here, and the Argilla path is tested against a real
Argilla server in tests/e2e/test_argilla.py. ``panel`` returns the rankings a test sets in
:data:`RANKINGS`; ``nobody`` never ranks anything (a collection that waits for it waits until
its timeout or its cancel)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunewright.core.plugins import FeedbackBackendRegistry, hookimpl

#: feedback dataset -> (records, rankings) that the ``panel`` backend answers with
RANKINGS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}


class Panel:
    simulated = False

    def __init__(self, *, directory: Path | None = None) -> None:
        self.directory = directory

    def publish(self, dataset: str, records: Sequence[dict[str, Any]]) -> str:
        RANKINGS[dataset] = (list(records), [])
        return f"panel://{dataset}"

    def records(self, dataset: str) -> list[dict[str, Any]]:
        return RANKINGS.get(dataset, ([], []))[0]

    def collect(self, dataset: str) -> list[dict[str, Any]]:
        return RANKINGS.get(dataset, ([], []))[1]


class Nobody(Panel):
    def collect(self, dataset: str) -> list[dict[str, Any]]:
        return []


@hookimpl
def tw_register_feedback_backends(registry: FeedbackBackendRegistry) -> None:
    registry.add(name="panel", factory=Panel, description="test: set rankings")
    registry.add(name="nobody", factory=Nobody, description="test: never ranks")
