"""Engine code runs on GUI job threads: it must not change process-wide state behind other threads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import workbench.engine
from tests.helpers import tiny_recipe
from workbench.engine.events import RecordingReporter
from workbench.engine.pipeline import run_recipe
from workbench.engine.store import RunStore

ENGINE = Path(workbench.engine.__file__).resolve().parent


def _gc_collect_calls() -> list[str]:
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "collect"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "gc"):
                found.append(f"{path.relative_to(ENGINE)}:{node.lineno}")
    return found


def test_no_gc_collect_in_engine_code() -> None:
    """A collection on a job thread can free GUI-thread Qt objects there (deadlock seen with PySide6)."""
    assert _gc_collect_calls() == []


class _ThreadCountAtLoad(RecordingReporter):
    """Notes torch's intra-op thread count while the run is inside its load stage."""

    def __init__(self) -> None:
        super().__init__()
        self.during: list[int] = []

    def stage_started(self, stage: str, total: int | None = None) -> None:
        if stage == "load":
            self.during.append(torch.get_num_threads())


@pytest.mark.parametrize("fails", [False, True])
def test_run_recipe_restores_torch_thread_count(fails: bool, tmp_path: Path) -> None:
    """bench.threads applies during the run only; later jobs (and a failed run's successors) get the old count."""
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        recipe = tiny_recipe(epochs=0, threads=1)
        if fails:
            recipe.data.source = "image_folder"
            recipe.data.path = str(tmp_path / "missing")
        rep = _ThreadCountAtLoad()
        outcome = run_recipe(recipe, store=RunStore(), reporter=rep, benchmark_only=True)
        assert outcome.status == ("failed" if fails else "completed"), outcome.error
        assert rep.during == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)
