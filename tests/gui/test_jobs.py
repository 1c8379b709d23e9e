"""The job machinery: worker on a QThread, batched metric signals, errors, cancellation, ETA."""

from __future__ import annotations

import time

import numpy as np
import pytest

from workbench.gui.jobs import EtaEstimator, JobManager, MetricEvent, format_eta, live_threads
from workbench.gui.plots import RingBuffer


def test_10000_metric_events_arrive_batched(qtbot) -> None:
    """10,000 engine metric callbacks reach the GUI thread intact, in far fewer signals."""
    manager = JobManager()
    received: list[MetricEvent] = []
    signals = []

    def fn(reporter, cancel):
        for i in range(10_000):
            reporter.metrics("train", i, {"loss": 1.0 / (i + 1), "samples_per_s": float(i)})
        return "ok"

    job = manager.start("stress", fn)
    job.metrics.connect(lambda batch: (signals.append(len(batch)), received.extend(batch)))
    with qtbot.waitSignal(job.finished, timeout=30_000) as blocker:
        pass
    assert blocker.args == ["ok"]
    qtbot.waitUntil(lambda: len(received) == 10_000, timeout=5_000)
    assert [e.step for e in received] == list(range(10_000))
    assert len(signals) < 10_000  # batched, not one signal per step
    qtbot.waitUntil(lambda: not live_threads(), timeout=5_000)


def test_10000_raw_signal_emits_do_not_crash(qtbot) -> None:
    """Guards against PySide6 6.12.0's bool_dealloc abort: 10,000 real emits across threads."""
    manager = JobManager()
    count = [0]

    def fn(reporter, cancel):
        worker = reporter._worker
        for i in range(10_000):
            worker.progressed.emit(i, 10_000, "stress")
        return True

    job = manager.start("raw-stress", fn)
    job.progressed.connect(lambda *_a: count.__setitem__(0, count[0] + 1))
    with qtbot.waitSignal(job.finished, timeout=60_000) as blocker:
        pass
    assert blocker.args == [True]
    qtbot.waitUntil(lambda: count[0] == 10_000, timeout=10_000)
    qtbot.waitUntil(lambda: not live_threads(), timeout=5_000)


def test_error_in_job_is_reported_not_raised(qtbot) -> None:
    manager = JobManager()

    def fn(reporter, cancel):
        raise ValueError("bad thing\nsecond line")

    job = manager.start("failing", fn)
    with qtbot.waitSignal(job.errored, timeout=10_000) as blocker:
        pass
    message, tb = blocker.args
    assert message == "ValueError: bad thing"
    assert "Traceback" in tb
    qtbot.waitUntil(lambda: not manager.busy and not live_threads(), timeout=5_000)


def test_cancel_is_cooperative_and_fast(qtbot) -> None:
    manager = JobManager()
    cancelled = []

    def fn(reporter, cancel):
        while True:
            cancel.raise_if_cancelled()
            time.sleep(0.01)

    job = manager.start("endless", fn)
    job.cancelledJob.connect(lambda: cancelled.append(True))
    qtbot.waitUntil(job.is_running, timeout=5_000)
    with pytest.raises(RuntimeError, match="already running"):
        manager.start("second", fn)
    t0 = time.monotonic()
    job.cancel()
    assert job.wait(2.0)
    assert time.monotonic() - t0 < 2.0
    qtbot.waitUntil(lambda: cancelled == [True], timeout=2_000)


def test_helper_job_with_same_key_supersedes_older(qtbot) -> None:
    manager = JobManager()

    def slow(reporter, cancel):
        for _ in range(500):
            cancel.raise_if_cancelled()
            time.sleep(0.01)
        return "old"

    old = manager.start("a", slow, key="summary")
    new = manager.start("b", lambda r, c: "new", key="summary")
    assert old.cancelled and not manager.is_current(old) and manager.is_current(new)
    assert manager.shutdown(5.0)
    qtbot.waitUntil(lambda: not live_threads(), timeout=5_000)


def test_ring_buffer_keeps_the_newest_points() -> None:
    rb = RingBuffer(capacity=5)
    rb.extend((i, i * 10) for i in range(8))
    x, y = rb.arrays()
    assert np.array_equal(x, [3, 4, 5, 6, 7]) and np.array_equal(y, [30, 40, 50, 60, 70])
    rb.clear()
    assert len(rb) == 0 and rb.arrays()[0].size == 0


def test_eta_estimator() -> None:
    eta = EtaEstimator()
    assert eta.update(0, 100, "train: epoch 1", now=0.0) is None
    assert eta.update(10, 100, "train: epoch 1", now=5.0) == pytest.approx(45.0)
    assert eta.update(0, 4, "timing batch 1", now=6.0) is None  # new segment
    assert format_eta(45.0) == "45s" and format_eta(125) == "2m 05s" and format_eta(None) == ""
