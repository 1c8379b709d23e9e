"""GUI test fixtures: offscreen Qt, short recipes, and a check that no job thread outlives a test.

Every test gets its own WORKBENCH_HOME (tests/conftest.py), so the run store and the QSettings
INI file (stored under it) never touch the user's data.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHORT_RECIPE = """\
version = 1
name = "short"

[model]
source = "zoo"
zoo = "small_cnn"
width = 0.5

[data]
source = "default"
samples_per_class = 40
augment = false

[train]
epochs = {epochs}
log_every = 2

[batching]
batch_size = 32
eval_batch_size = 64

[bench]
batch_sizes = [1, 8]
warmup = 1
iters = 5
telemetry_hz = 10.0
"""


def write_recipe(folder: Path, epochs: int = 1, name: str = "short.toml") -> Path:
    path = folder / name
    path.write_text(SHORT_RECIPE.format(epochs=epochs), encoding="utf-8")
    return path


@pytest.fixture
def short_recipe(tmp_path: Path) -> Path:
    """A recipe that trains 1 epoch on 320 tiny images and times 5 iterations: seconds, not minutes."""
    return write_recipe(tmp_path)


@pytest.fixture
def long_recipe(tmp_path: Path) -> Path:
    """The same, but 200 epochs: a job that is still training when a test stops it."""
    return write_recipe(tmp_path, epochs=200, name="long.toml")


@pytest.fixture
def window(qtbot, short_recipe: Path) -> Iterator[object]:  # noqa: ANN001 - pytest-qt fixture
    from workbench.gui.main_window import MainWindow

    w = MainWindow(recipe=short_recipe)
    w.show()
    yield w
    _close(w)


def _close(w: object) -> None:
    from workbench.gui.main_window import MainWindow

    if isinstance(w, MainWindow):
        w.ask_stop_running_job = lambda: True  # type: ignore[method-assign]
        w.close()


def _flush_deletions(qapp) -> None:  # noqa: ANN001 - the QApplication
    """Carry out pending deleteLater() calls, then collect the garbage that leaves, on this (GUI) thread."""
    from PySide6.QtCore import QCoreApplication, QEvent

    for _ in range(3):  # a deletion can post further deletions (children, dialogs)
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        qapp.processEvents()
    gc.collect()


@pytest.fixture(autouse=True)
def discard_unsaved_edits_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests close windows with edited recipes: answer the unsaved-changes prompt with Discard (a test of
    the prompt itself patches its window's method)."""
    from workbench.gui.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "ask_save_before_close", lambda self: "discard")


@pytest.fixture(autouse=True)
def no_dangling_jobs(qapp) -> Iterator[None]:  # noqa: ANN001 - pytest-qt fixture
    """After each GUI test: close windows, then no job thread and no window timer may still run.

    Garbage is collected here, on the GUI thread, before and after each test, so objects a test
    left behind are not collected later by whichever thread happens to allocate. Pending
    ``deleteLater`` calls are carried out first: until then a closed window's lambda connections keep
    it alive, and it only becomes garbage later, in the middle of the next test (where the cyclic GC
    on a job thread once freed a whole window and deadlocked with the GUI thread).
    """
    _flush_deletions(qapp)
    # What is alive now (earlier tests' torch, ONNX and Qt objects: millions by the end of the suite)
    # is left out of the collections this test and its teardown run: each full collection then scans
    # only the test's own objects (0.5 s each otherwise, about a minute and a half over the suite).
    gc.freeze()
    yield
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from workbench.gui.jobs import live_threads
    from workbench.gui.main_window import MainWindow

    windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
    for w in windows:
        _close(w)
    deadline = time.monotonic() + 10
    while live_threads() and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.02)
    qapp.processEvents()
    running = [t.objectName() for t in live_threads()]
    active = [f"{t.objectName() or 'QTimer'} in {type(t.parent()).__name__}"
              for w in windows for t in w.findChildren(QTimer) if t.isActive()]
    for w in windows:
        w.deleteLater()  # before asserting, so one failure does not spill into the next test
    _flush_deletions(qapp)  # here, on the GUI thread, with every job thread ended
    assert not running, f"job threads still running after the test: {running}"
    assert not active, f"timers still running after close: {active}"

