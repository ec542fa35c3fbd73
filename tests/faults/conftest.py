"""The fault and abuse suite's figures: every case records what it injected and what it
checked, and the session ends with one table (also written to ``tests/faults/figures.md``
under the pytest cache dir) — faults injected / survived, inputs fuzzed, rows in = rows
accounted, duplicates.

A case asks for ``figures`` and calls :meth:`Figures.record` once it has asserted what it
claims: a row only appears for a case that passed its assertions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass(slots=True)
class Row:
    case: str
    kind: str  # "fault", "fuzz", "auth", "load"
    injected: int = 0  # faults injected, inputs fuzzed or requests attempted
    survived: int = 0  # completed, or failed with a stated reason
    rows_in: int | None = None
    rows_accounted: int | None = None
    duplicates: int | None = None
    outcome: str = ""


@dataclass(slots=True)
class Figures:
    rows: list[Row] = field(default_factory=list)

    def record(self, case: str, kind: str, **values: Any) -> Row:
        row = Row(case, kind, **values)
        self.rows.append(row)
        return row

    def table(self) -> str:
        def cell(value: int | None) -> str:
            return "-" if value is None else str(value)

        lines = [
            "| case | kind | injected | survived | rows in | rows accounted | duplicates | outcome |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.case} | {r.kind} | {r.injected} | {r.survived} | {cell(r.rows_in)} | "
                f"{cell(r.rows_accounted)} | {cell(r.duplicates)} | {r.outcome} |"
            )
        faults = [r for r in self.rows if r.kind in ("fault", "load")]
        fuzz = [r for r in self.rows if r.kind == "fuzz"]
        auth = [r for r in self.rows if r.kind == "auth"]
        rows_in = sum(r.rows_in or 0 for r in self.rows)
        accounted = sum(r.rows_accounted or 0 for r in self.rows)
        lines += [
            "",
            f"faults injected {sum(r.injected for r in faults)}, "
            f"survived {sum(r.survived for r in faults)}; "
            f"inputs fuzzed {sum(r.injected for r in fuzz)} "
            f"(handled {sum(r.survived for r in fuzz)}); "
            f"auth bypass attempts {sum(r.injected for r in auth)}, "
            f"refused {sum(r.survived for r in auth)}; "
            f"rows in {rows_in} = rows accounted {accounted}; "
            f"duplicates {sum(r.duplicates or 0 for r in self.rows)}",
        ]
        return "\n".join(lines)


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any, config: Any) -> None:
    if not _FIGURES.rows:
        return
    table = _FIGURES.table()
    terminalreporter.section("tests/faults figures")
    terminalreporter.write_line(table)
    cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
    out = Path(str(cache.mkdir("faults"))) / "figures.md" if cache is not None else None
    if out is not None:
        out.write_text(table + "\n")
