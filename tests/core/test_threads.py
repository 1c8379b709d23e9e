"""Engine code runs on GUI job threads: it must not change process-wide state behind other threads."""

from __future__ import annotations

import ast
import logging
import threading
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_recipe
from workbench.core.events import RecordingReporter, install_warning_hook, relay_warnings, suppress_warnings
from workbench.core.store import RunStore
from workbench.techniques import run_recipe

WORKBENCH = Path(__file__).resolve().parents[2] / "workbench"
#: Code that runs on GUI job threads: everything but the GUI itself.
ENGINE_DIRS = [WORKBENCH / d for d in ("core", "techniques", "analysis", "recipe")]


def _gc_collect_calls() -> list[str]:
    found = []
    for path in sorted(p for d in ENGINE_DIRS if d.exists() for p in d.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "collect"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "gc"):
                found.append(f"{path.relative_to(WORKBENCH)}:{node.lineno}")
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


def _warn(text: str, category: type[Warning] = UserWarning) -> None:
    warnings.warn(text, category, stacklevel=1)


def _relayed(rep: RecordingReporter) -> list[str]:
    return [m for m, level in rep.of("log") if level == "warning"]


def test_relay_warnings_routes_each_threads_warnings_to_its_own_reporter() -> None:
    """Two overlapping blocks on two threads, and a third thread with no block: nobody gets another's warning,
    and the block that ends first does not cut off the other one."""
    filters_before = list(warnings.filters)
    a_rep, b_rep = RecordingReporter(), RecordingReporter()
    both_inside = threading.Barrier(3)
    a_left = threading.Event()
    errors: list[BaseException] = []

    def in_block(rep: RecordingReporter, name: str, leave_first: bool) -> None:
        try:
            with relay_warnings(rep):
                _warn(f"{name} before")
                both_inside.wait(10)
                _warn(f"{name} during")
                if leave_first:
                    return
                assert a_left.wait(10)
                _warn(f"{name} after the other block ended")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            if leave_first:
                a_left.set()

    def outsider() -> None:
        both_inside.wait(10)
        _warn("outsider")

    threads = [threading.Thread(target=in_block, args=(a_rep, "a", True)),
               threading.Thread(target=in_block, args=(b_rep, "b", False)),
               threading.Thread(target=outsider)]
    with warnings.catch_warnings(record=True) as fallback:  # what threads without a block still see
        warnings.simplefilter("always")
        install_warning_hook()
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    assert not errors, errors
    assert _relayed(a_rep) == ["UserWarning: a before", "UserWarning: a during"]
    assert _relayed(b_rep) == ["UserWarning: b before", "UserWarning: b during",
                               "UserWarning: b after the other block ended"]
    assert [str(w.message) for w in fallback] == ["outsider"]
    assert warnings.filters == filters_before


def test_library_deprecation_noise_is_logged_once_at_debug_not_relayed(caplog: pytest.LogCaptureFixture) -> None:
    rep = RecordingReporter()
    with caplog.at_level(logging.DEBUG, logger="workbench.warnings"), relay_warnings(rep):
        for _ in range(3):
            _warn("torch.foo is deprecated (test noise)", FutureWarning)
            _warn("old API (test noise)", DeprecationWarning)
        _warn("your data has a problem")
    assert _relayed(rep) == ["UserWarning: your data has a problem"]
    noise = [r.getMessage() for r in caplog.records if r.name == "workbench.warnings"]
    assert len(noise) == 2 and all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "workbench.warnings")
    assert any("torch.foo is deprecated" in m for m in noise) and any("old API" in m for m in noise)


def test_a_new_block_hears_a_warning_an_earlier_block_already_relayed() -> None:
    """Each run's log gets its own warnings, even when an earlier run raised the same one at the same line."""
    first, second = RecordingReporter(), RecordingReporter()
    for rep in (first, second):
        with relay_warnings(rep):
            _warn("same place, same text")
            _warn("same place, same text")
    assert _relayed(first) == _relayed(second) == ["UserWarning: same place, same text"]


def test_suppress_warnings_drops_only_its_categories_on_its_own_thread() -> None:
    """The thread-safe stand-in for catch_warnings + simplefilter('ignore'): filters never change, and
    another thread's warnings of the same category still reach that thread's run."""
    filters_before = list(warnings.filters)
    mine, theirs = RecordingReporter(), RecordingReporter()
    inside = threading.Barrier(2)

    def other_thread() -> None:
        with relay_warnings(theirs):
            inside.wait(10)
            _warn("their user warning")
            inside.wait(10)

    t = threading.Thread(target=other_thread)
    t.start()
    with relay_warnings(mine):
        with suppress_warnings(UserWarning):
            inside.wait(10)
            _warn("dropped user warning")
            _warn("kept runtime warning", RuntimeWarning)
            assert warnings.filters == filters_before
            inside.wait(10)
        _warn("user warning after the block")
    t.join(10)
    assert _relayed(mine) == ["RuntimeWarning: kept runtime warning", "UserWarning: user warning after the block"]
    assert _relayed(theirs) == ["UserWarning: their user warning"]
    assert warnings.filters == filters_before
