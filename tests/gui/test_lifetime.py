"""Job lifetimes: finished jobs are freed on the GUI thread, and nothing a job left behind can crash the app."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from workbench.gui.jobs import JobManager, live_threads


@pytest.fixture
def gc_off() -> Iterator[None]:
    """Only reference counting frees objects during the test (so a reference cycle shows up as a leak)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("key", [JobManager.EXCLUSIVE, "model_summary"])
def test_finished_jobs_are_freed_by_reference_counting(qtbot, gc_off, key: str) -> None:
    """Job, worker, reporter and thread go away without the cyclic GC, for runs and for helper jobs alike."""
    manager = JobManager()
    leaked: list[object] = []

    def fn(reporter, cancel):  # noqa: ANN001
        reporter.metrics("train", 1, {"loss": 0.5})
        reporter.log("hello")
        leaked.append(reporter)  # e.g. a sampler thread that outlives its job
        return 42

    job = manager.start("tiny", fn, key=key)
    refs = {name: weakref.ref(obj) for name, obj in
            (("job", job), ("worker", job.worker), ("thread", job.thread))}
    results: list[object] = []
    job.finished.connect(results.append)
    del job
    qtbot.waitUntil(lambda: results == [42] and not manager.jobs() and not live_threads(), timeout=10_000)
    qtbot.waitUntil(lambda: all(r() is None for r in refs.values()), timeout=5_000)
    # The reporter the job leaked is detached: calling it later does nothing (and keeps nothing alive).
    reporter = leaked.pop()
    assert reporter._worker is None  # type: ignore[attr-defined]
    reporter.log("late")  # type: ignore[attr-defined]
    reporter.metrics("train", 2, {"loss": 0.4})  # type: ignore[attr-defined]
    reporter.flush()  # type: ignore[attr-defined]


def test_a_failed_run_shows_as_failed_not_done(window, qtbot, monkeypatch) -> None:  # noqa: ANN001
    """Status text, progress text and bar colour say "failed" for a failed run and a job that raises."""
    from PySide6.QtGui import QPalette

    import workbench.core.data as data
    from workbench.gui.main_window import FAILED_COLOUR

    def broken(section):  # noqa: ANN001, ANN202
        raise RuntimeError("synthetic failure for the test")

    def bar_colour() -> str:
        return window.progress.palette().color(QPalette.ColorRole.Highlight).name()

    def ended(job) -> None:  # noqa: ANN001
        qtbot.waitUntil(lambda: job.done and not window.jobs.busy, timeout=60_000)
        qtbot.waitUntil(lambda: window.progress.property("state") != "running", timeout=5_000)

    monkeypatch.setattr(data, "load_dataset", broken)
    ended(window.start_run(False))
    assert window.store.list_runs()[0].status == "failed"
    assert window.progress.format() == "Failed" and window.progress.property("state") == "failed"
    assert bar_colour() == FAILED_COLOUR
    assert window.stage_label.text().startswith("Last job: Run failed at")

    ended(window.jobs.start("Quick job", lambda r, c: 1))
    assert window.progress.format() == "Done" and window.progress.property("state") == "done"
    assert bar_colour() != FAILED_COLOUR
    assert window.stage_label.text().startswith("Last job: Quick job finished at")

    ended(window.jobs.start("Exploding job", lambda r, c: 1 / 0))
    assert window.progress.format() == "Failed" and bar_colour() == FAILED_COLOUR
    assert window.stage_label.text().startswith("Last job: Exploding job failed at")


def test_ended_job_threads_leave_threading_enumerate(qtbot) -> None:  # noqa: ANN001
    """A job thread that Python code asked about (Thread.start, logging) is not listed once it has ended."""
    import threading

    manager = JobManager()
    before = set(threading.enumerate())
    names: list[str] = []

    def fn(reporter, cancel):  # noqa: ANN001
        names.append(threading.current_thread().name)  # registers a "dummy" Thread for this Qt thread
        helper = threading.Thread(target=lambda: None)
        helper.start()
        helper.join()

    for _ in range(3):
        manager.start("asks", fn)
        qtbot.waitUntil(lambda: not manager.jobs() and not live_threads(), timeout=10_000)
    assert len(names) == 3
    assert set(threading.enumerate()) == before
