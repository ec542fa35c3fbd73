"""Fixtures of the serve tests (helpers in serve_models.py)."""

from __future__ import annotations

import pytest
from trained_adapters import ANSWERS, TrainedFolder, train_adapter


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainedFolder]:
    root = tmp_path_factory.mktemp("trained")
    return {
        name: TrainedFolder(name, answer, train_adapter(answer, root / name))
        for name, answer in ANSWERS.items()
    }
