"""Shared fixtures: every test gets its own WORKBENCH_HOME so runs never leak between tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# One generated default dataset for the whole session (generation is deterministic, so sharing is safe).
_SHARED_DATASETS = Path(__file__).resolve().parent.parent / ".pytest_cache" / "workbench-datasets"


@pytest.fixture(autouse=True)
def workbench_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "wbhome"
    home.mkdir()
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    _SHARED_DATASETS.mkdir(parents=True, exist_ok=True)
    (home / "datasets").symlink_to(_SHARED_DATASETS, target_is_directory=True)
    return home


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
