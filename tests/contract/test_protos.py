"""protos/ is lint-clean (buf) and the committed stubs match it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_buf_lint_is_clean() -> None:
    result = subprocess.run(
        [BIN / "buf", "lint"], cwd=ROOT / "protos", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_stubs_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, ROOT / "scripts/protogen.py", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
