"""Soak: 200 short GUI jobs back to back (model summaries, data previews, real runs) through the window's
own entry points. No crash; after warm-up no growth in live QObjects or threads, and no QObject that
only the cyclic garbage collector could free (it may run on a job thread)."""

from __future__ import annotations

import collections
import gc
import threading
import time
from pathlib import Path

import psutil
import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QObject
from shiboken6 import Shiboken

from workbench.gui.main_window import MainWindow
from workbench.recipe import load_recipe

JOBS = 200
WARM_UP = 20
#: One cycle of job kinds; runs are the slowest (~0.5 s of GUI and engine work each), so one in eight.
CYCLE = ("summary", "preview") * 3 + ("summary", "run")

TINY_RECIPE = """\
version = 1
name = "soak"

[model]
source = "zoo"
zoo = "mlp"

[data]
source = "synthetic"
synthetic_shape = [3, 8, 8]
synthetic_classes = 4
synthetic_samples = 48

[train]
epochs = 1
log_every = 1

[batching]
batch_size = 16
eval_batch_size = 48

[loader]
num_workers = 0

[bench]
batch_sizes = [1]
warmup = 1
iters = 3
min_time_s = 0.0
max_time_s = 0.2
telemetry_hz = 20.0
threads = 1
"""


def _settle(qapp) -> None:  # noqa: ANN001
    """Deliver queued signals and deferred deletions, then collect garbage (on this, the GUI thread)."""
    for _ in range(3):
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        qapp.processEvents()
    gc.collect()


def _live_qobjects() -> collections.Counter[str]:
    """Python wrappers of live Qt objects, by class (every QObject the app or a job created from Python)."""
    return collections.Counter(type(w).__name__ for w in Shiboken.getAllValidWrappers() if isinstance(w, QObject))


def _threads() -> tuple[int, int]:
    return len(threading.enumerate()), psutil.Process().num_threads()


@pytest.mark.slow
def test_200_short_jobs_leave_no_qobjects_or_threads_behind(qtbot, qapp, tmp_path: Path) -> None:  # noqa: ANN001
    recipe_path = tmp_path / "soak.toml"
    recipe_path.write_text(TINY_RECIPE, encoding="utf-8")
    recipe = load_recipe(recipe_path)
    window = MainWindow(recipe=recipe_path)
    window.show()
    model_panel, data_panel = window.panel("model"), window.panel("data")
    model_panel.debounce.stop()  # the soak starts every job itself, back to back
    data_panel.debounce.stop()
    qtbot.waitUntil(lambda: not window.jobs.jobs(), timeout=30_000)

    outcomes: collections.Counter[str] = collections.Counter()
    spent: collections.Counter[str] = collections.Counter()

    def run_one(kind: str) -> None:
        started = time.monotonic()
        if kind == "summary":
            model_panel._pending = recipe
            model_panel._start_summary()
        elif kind == "preview":
            data_panel._pending = recipe.data
            data_panel._start_previews()
        else:
            assert window.start_run(False) is not None
        qtbot.waitUntil(lambda: not window.jobs.jobs(), timeout=60_000)  # thread ended, job released
        outcomes[kind] += 1
        spent[kind] += time.monotonic() - started

    t0 = time.monotonic()
    for i in range(WARM_UP):
        run_one(CYCLE[i % len(CYCLE)])
    _settle(qapp)
    qobjects_before, threads_before = _live_qobjects(), _threads()
    # Keep (instead of free) whatever only the cyclic GC could free: a QObject among it is one that the
    # GC may free on whichever thread it runs, e.g. a job thread (crashes and deadlocks seen before).
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(WARM_UP, JOBS):
            run_one(CYCLE[i % len(CYCLE)])
        gc.collect()
        cyclic_qobjects = collections.Counter(type(o).__name__ for o in gc.garbage if isinstance(o, QObject))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    _settle(qapp)
    qobjects_after, threads_after = _live_qobjects(), _threads()
    elapsed = time.monotonic() - t0

    assert sum(outcomes.values()) == JOBS and outcomes["run"] == JOBS // len(CYCLE)
    runs = window.store.list_runs()
    assert len(runs) == outcomes["run"] and {r.status for r in runs} == {"completed"}, \
        {(r.status, r.error) for r in runs}
    assert model_panel.summary is not None and data_panel.thumbs.count > 0  # results really arrived
    assert window.error_messages == []
    assert not cyclic_qobjects, f"QObjects left to the cyclic GC: {dict(cyclic_qobjects)}"
    grown = {k: qobjects_after[k] - qobjects_before[k] for k in qobjects_after | qobjects_before
             if qobjects_after[k] != qobjects_before[k]}
    assert grown == {}, f"live QObjects changed after warm-up: {grown}"
    assert threads_after == threads_before, (threads_before, threads_after, threading.enumerate())
    print(f"\nsoak: {JOBS} jobs in {elapsed:.1f} s; {sum(qobjects_after.values())} live QObjects; "
          f"threads (python, os) {threads_after}; seconds per kind " +
          ", ".join(f"{k} {spent[k] / outcomes[k]:.2f}" for k in outcomes))
