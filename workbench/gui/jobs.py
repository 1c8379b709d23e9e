"""Background jobs: a worker QObject on its own QThread, adapting engine callbacks to Qt signals.

Every long task of the GUI (a recipe run, a benchmark, the max-batch search, a model summary, data
previews) is a plain function ``fn(reporter, cancel) -> result`` run by ``JobManager.start``. The
function never sees a widget: it gets a fully built recipe through its closure, reports through
an engine ``Reporter`` and checks the ``CancelToken``. The worker turns those callbacks into
past-tense signals (``started, progressed, metrics, warned, errored, finished``) that Qt queues
to the GUI thread.

Rate limits: metric events are collected under a lock and emitted as one list at most every
``METRICS_INTERVAL_S`` (a training loop or a 100 Hz telemetry sampler cannot flood the event
queue); progress is throttled the same way; everything pending is flushed when the job ends.

Shutdown: ``JobManager.shutdown`` cancels every job and waits for its thread. Cancellation is
cooperative (the engine checks the token every batch); ``QThread.terminate`` is never used. A step
that cannot check the token either runs in a killable child process (``engine.isolate``) or is
waited for: a running QThread must never be destroyed (Qt aborts the process). So every started
job is held here until its thread has ended, whoever else lets go of it, ``wait_for_jobs`` lets
the app outlive its last job, and an ``atexit`` hook waits for any job thread still running when
the interpreter exits.
"""

from __future__ import annotations

import atexit
import itertools
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QDeadlineTimer, QObject, Qt, QThread, QTimer, Signal, Slot

from workbench.core.events import CancelToken, Reporter
from workbench.errors import Cancelled

#: Seconds between two batched ``metrics`` (and ``progressed``) signals of one job.
METRICS_INTERVAL_S = 0.05

JobFn = Callable[[Reporter, CancelToken], Any]

#: Every job started whose thread has not been seen to end, by id. Strong references: a job (and
#: its QThread) stays alive while its thread runs even when its manager or window is gone.
_STARTED: dict[int, Job] = {}
_LIVE_LOCK = threading.Lock()
_JOB_IDS = itertools.count(1)


def running_jobs() -> list[Job]:
    """Jobs whose thread is still running, in start order (for shutdown and tests)."""
    with _LIVE_LOCK:
        jobs = list(_STARTED.values())
    out = []
    for job in jobs:
        try:
            if job.thread.isRunning():
                out.append(job)
        except RuntimeError:  # C++ object already deleted: certainly not running
            continue
    return out


def live_threads() -> list[QThread]:
    """Job threads that are still running (for shutdown checks and tests)."""
    return [job.thread for job in running_jobs()]


def wait_for_jobs(timeout_s: float | None = None, poll: Callable[[], None] | None = None) -> bool:
    """Block until every job thread has ended (True) or ``timeout_s`` passed (False); cancels nothing.

    ``poll`` runs between short waits (the app passes ``processEvents`` so the window keeps painting
    and the jobs' last signals are delivered).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while jobs := running_jobs():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        jobs[0].wait(0.1)
        if poll is not None:
            poll()
    return True


@atexit.register
def _wait_for_job_threads_at_exit() -> None:
    """Last line of defence: the interpreter is exiting with a job thread still running. Destroying it
    would abort the process, so ask every job to stop and wait for it (saying so on stderr)."""
    jobs = running_jobs()
    if not jobs:
        return
    names = ", ".join(sorted({job.name for job in jobs}))
    print(f"workbench: waiting for {names} to finish before exiting…", file=sys.stderr, flush=True)
    for job in jobs:
        job.cancel()
    wait_for_jobs()


@dataclass(frozen=True)
class MetricEvent:
    """One engine ``metrics`` callback, as delivered in a batch to the GUI thread."""

    stage: str
    step: int
    values: dict[str, float]
    t: float


class _SignalReporter(Reporter):
    """The engine-facing side of a worker: callbacks from any thread become (batched) signals.

    Kept separate from the QObject because the QObject's ``metrics`` attribute is a signal. The
    worker holds its reporter and the reporter its worker: ``detach`` breaks that cycle when the job's
    thread has ended, so both are freed by reference counting on the GUI thread, never by the cyclic
    GC on whichever thread happens to run it. A detached reporter drops what it is told.
    """

    def __init__(self, worker: JobWorker) -> None:
        self._worker: JobWorker | None = worker
        self._lock = threading.Lock()
        self._pending: list[MetricEvent] = []
        self._last_metrics_emit = 0.0
        self._pending_progress: tuple[int, int, str] | None = None
        self._last_progress_emit = 0.0

    # -- engine Reporter interface (called from the worker thread and the telemetry thread) --------
    def run_started(self, run_id: int, name: str) -> None:
        if (w := self._worker) is not None:
            w.runStarted.emit(int(run_id), str(name))

    def stage_started(self, stage: str, total: int | None = None) -> None:
        self.flush()
        if (w := self._worker) is not None:
            w.stageStarted.emit(str(stage), -1 if total is None else int(total))

    def stage_finished(self, stage: str, result: Mapping[str, Any] | None = None) -> None:
        self.flush()
        if (w := self._worker) is not None:
            w.stageFinished.emit(str(stage), dict(result or {}))

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        now = time.monotonic()
        item = (int(done), -1 if total is None else int(total), str(message))
        with self._lock:
            due = now - self._last_progress_emit >= METRICS_INTERVAL_S or (total is not None and done >= total)
            if due:
                self._last_progress_emit = now
                self._pending_progress = None
            else:
                self._pending_progress = item
        if due and (w := self._worker) is not None:
            w.progressed.emit(*item)

    def metrics(self, stage: str, step: int, values: Mapping[str, float], t: float | None = None) -> None:
        event = MetricEvent(str(stage), int(step), {str(k): float(v) for k, v in values.items()
                                                       if isinstance(v, int | float)},
                            time.time() if t is None else float(t))
        now = time.monotonic()
        with self._lock:
            self._pending.append(event)
            if now - self._last_metrics_emit < METRICS_INTERVAL_S:
                return
            batch, self._pending = self._pending, []
            self._last_metrics_emit = now
        if (w := self._worker) is not None:
            w.metrics.emit(batch)

    def log(self, message: str, level: str = "info") -> None:
        if (w := self._worker) is None:
            return
        if level == "warning":
            w.warned.emit(str(message))
        else:
            w.logged.emit(str(message), str(level))

    # -- helpers -------------------------------------------------------------------------------
    def flush(self) -> None:
        """Emit whatever is still pending (called at stage boundaries and at the end)."""
        with self._lock:
            batch, self._pending = self._pending, []
            progress, self._pending_progress = self._pending_progress, None
            self._last_metrics_emit = time.monotonic()
        if (w := self._worker) is None:
            return
        if batch:
            w.metrics.emit(batch)
        if progress is not None:
            w.progressed.emit(*progress)

    def detach(self) -> None:
        """Forget the worker (breaks the worker <-> reporter cycle); later callbacks are dropped."""
        self._worker = None


class JobWorker(QObject):
    """Runs one job function on its QThread and reports through signals only (never touches widgets).

    ``finished`` always fires last, with the function's result, or ``None`` after an error or a
    cancellation (``errored`` / ``cancelledJob`` fire first). It is connected *directly* to
    ``QThread.quit`` so a GUI thread blocked in ``wait()`` cannot deadlock the shutdown.
    """

    started = Signal(str)  # job name
    progressed = Signal(int, int, str)  # done, total (-1 = unknown), message
    metrics = Signal(object)  # list[MetricEvent], batched
    warned = Signal(str)
    logged = Signal(str, str)  # message, level
    errored = Signal(str, str)  # one-line message, traceback
    finished = Signal(object)  # result (None after error/cancel)
    cancelledJob = Signal()
    runStarted = Signal(int, str)  # run id, run name (pipeline runs only)
    stageStarted = Signal(str, int)  # stage, total (-1 = unknown)
    stageFinished = Signal(str, object)  # stage, result dict

    def __init__(self, name: str, fn: JobFn, cancel: CancelToken) -> None:
        super().__init__()
        self.name = name
        self._fn: JobFn | None = fn
        self.cancel_token = cancel
        self.reporter = _SignalReporter(self)

    def release(self) -> None:
        """Drop the reporter's link back to this worker and the job function (and what its closure holds).

        Called on the GUI thread once the job's thread has ended, so whatever the closure held is
        freed there, by reference counting.
        """
        self.reporter.detach()
        self._fn = None

    @Slot()
    def run(self) -> None:
        result: Any = None
        self.started.emit(self.name)
        fn = self._fn
        try:
            if fn is None:
                raise RuntimeError(f"job {self.name!r} was already run")
            result = fn(self.reporter, self.cancel_token)
        except Cancelled:
            self.reporter.flush()
            self.cancelledJob.emit()
        except BaseException as exc:  # noqa: BLE001 - a job must never take the GUI down
            self.reporter.flush()
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            message = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
            self.errored.emit(message, "".join(traceback.format_exception(exc)))
        else:
            self.reporter.flush()
        del fn
        self.finished.emit(result)
        _forget_dummy_thread()


def _forget_dummy_thread() -> None:
    """Drop the ``threading`` record of this (Qt) thread, which is about to end.

    Python registers a "dummy" Thread for a thread it did not start the first time code there asks
    for ``threading.current_thread()`` (``Thread.start``, logging), and never removes it ("it is
    impossible to detect the termination of alien threads"), so ``threading.enumerate()`` would keep
    listing ended job threads. Here the end is known. Private names, guarded: without them the record
    merely stays.
    """
    active = getattr(threading, "_active", None)
    lock = getattr(threading, "_active_limbo_lock", None)
    dummy = getattr(threading, "_DummyThread", None)
    if active is None or lock is None or dummy is None:
        return
    ident = threading.get_ident()
    with lock:
        if isinstance(active.get(ident), dummy):
            del active[ident]


class Job(QObject):
    """Handle on one running job: its worker, its thread and its cancel token (GUI-thread object).

    Signals are re-emitted from here so callers can connect before the thread starts and never
    see the worker (which lives on the other thread and is deleted when it ends).

    Callers that connect lambdas should capture ``job.id`` (an int), not the job: a job referenced
    from its own connections forms a cycle that Python's GC may free on the wrong thread.
    """

    started = Signal(str)
    progressed = Signal(int, int, str)
    metrics = Signal(object)
    warned = Signal(str)
    logged = Signal(str, str)
    errored = Signal(str, str)
    finished = Signal(object)
    cancelledJob = Signal()
    runStarted = Signal(int, str)
    stageStarted = Signal(str, int)
    stageFinished = Signal(str, object)
    settled = Signal(object)  # self, right after ``finished`` (for the manager)
    ended = Signal(object)  # self: the thread has stopped; the manager forgets the job

    def __init__(self, name: str, fn: JobFn, key: str) -> None:
        super().__init__()
        self.id = next(_JOB_IDS)
        self.name = name
        self.key = key
        self.cancel_token = CancelToken()
        self.started_at = time.monotonic()
        self.done = False
        self.thread = QThread()
        self.thread.setObjectName(f"job:{name}")
        self.worker = JobWorker(name, fn, self.cancel_token)
        self.worker.moveToThread(self.thread)
        for sig in ("started", "progressed", "metrics", "warned", "logged", "errored", "cancelledJob",
                    "runStarted", "stageStarted", "stageFinished"):
            getattr(self.worker, sig).connect(getattr(self, sig))  # queued: worker is on another thread
        self.worker.finished.connect(self._on_worker_finished)
        # Direct: quit the thread's loop from the worker thread itself, even while the GUI waits.
        self.worker.finished.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        # No worker.deleteLater: the worker is Python-owned (Job.worker), so C++ deleting it on the worker
        # thread left a dangling wrapper that segfaulted in tests; it is freed with its Job instead.
        self.thread.started.connect(self.worker.run)
        self.thread.finished.connect(self._on_thread_finished)

    def start(self) -> None:
        with _LIVE_LOCK:
            _STARTED[self.id] = self
        self.thread.start()

    def cancel(self) -> None:
        """Ask the job to stop at its next checkpoint (the engine checks every batch)."""
        self.cancel_token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    def is_running(self) -> bool:
        try:
            return not self.done and self.thread.isRunning()
        except RuntimeError:
            return False

    def wait(self, timeout_s: float) -> bool:
        """Block until the thread ends (True) or the timeout passes (False)."""
        try:
            return bool(self.thread.wait(QDeadlineTimer(int(timeout_s * 1000))))
        except RuntimeError:
            return True

    @Slot(object)
    def _on_worker_finished(self, result: object) -> None:
        self.done = True
        self.finished.emit(result)
        self.settled.emit(self)

    @Slot()
    def _on_thread_finished(self) -> None:
        self.thread.wait()  # 'finished' is emitted just before the thread exits: let it exit fully
        with _LIVE_LOCK:
            _STARTED.pop(self.id, None)
        self.worker.release()  # here, on the GUI thread: no cycle left for the cyclic GC
        self.ended.emit(self)


class JobManager(QObject):
    """Starts jobs and keeps track of them; the single place that stops them all at exit.

    ``exclusive`` jobs (run, benchmark, max-batch search) run one at a time: starting one while
    another is running raises ``RuntimeError`` (the GUI disables its buttons first). Keyed helper
    jobs (model summary, data previews) are light and may run beside it; starting a helper with
    the same key cancels the older one, whose late result is then dropped.
    """

    busyChanged = Signal(bool)  # an exclusive job started/ended
    jobStarted = Signal(object)  # Job
    allEnded = Signal()  # the last running job's thread has ended

    EXCLUSIVE = "exclusive"

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._jobs: dict[str, Job] = {}
        self._all: list[Job] = []
        # Ended jobs are released right after their own signal dispatch (never inside it).
        self._ended: list[Job] = []
        self._closed = False

    @property
    def busy(self) -> bool:
        """True while an exclusive job is running."""
        job = self._jobs.get(self.EXCLUSIVE)
        return job is not None and not job.done

    def current(self, key: str = EXCLUSIVE) -> Job | None:
        job = self._jobs.get(key)
        return job if job is not None and not job.done else None

    def jobs(self) -> list[Job]:
        """Jobs whose thread has not ended yet."""
        return list(self._all)

    def start(self, name: str, fn: JobFn, *, key: str = EXCLUSIVE) -> Job:
        """Run ``fn(reporter, cancel)`` on a new thread. Connect to the returned job's signals at once."""
        if self._closed:
            raise RuntimeError(f"cannot start {name}: the application is closing")
        self._ended.clear()
        old = self._jobs.get(key)
        if old is not None and not old.done:
            if key == self.EXCLUSIVE:
                raise RuntimeError(f"a job is already running ({old.name}); stop it first")
            old.cancel()  # superseded helper: its result is stale
        job = Job(name, fn, key)
        self._jobs[key] = job
        self._all.append(job)
        job.settled.connect(self._on_finished)
        job.ended.connect(self._on_ended)
        job.start()
        self.jobStarted.emit(job)
        if key == self.EXCLUSIVE:
            self.busyChanged.emit(True)
        return job

    def is_current(self, job: Job | int) -> bool:
        """False once a newer job with the same key replaced this one, or it was cancelled (drop its result)."""
        job_id = job if isinstance(job, int) else job.id
        return any(j.id == job_id and not j.cancelled for j in self._jobs.values())

    def cancel_all(self) -> None:
        for job in self._all:
            job.cancel()

    def close(self) -> None:
        """Refuse new jobs from now on (the app is closing) and ask the running ones to stop."""
        self._closed = True
        self.cancel_all()

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Cancel every job and wait for its thread; True when all ended in time.

        Blocks the calling (GUI) thread for up to ``timeout_s``: keep it short and, on False, wait
        for ``allEnded`` instead of destroying anything.
        """
        self.cancel_all()
        deadline = time.monotonic() + timeout_s
        ok = True
        for job in list(self._all):
            ok = job.wait(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def release_ended(self) -> None:
        """Drop the handles of jobs whose thread has ended (called outside their signal dispatch)."""
        self._ended.clear()

    def _on_finished(self, job: Job) -> None:
        if job.key == self.EXCLUSIVE and self._jobs.get(job.key) is job:
            self.busyChanged.emit(False)

    def _on_ended(self, job: Job) -> None:
        if job in self._all:
            self._all.remove(job)
            self._ended.append(job)
            # Free it right after this signal's dispatch (not inside it), on this (the GUI) thread.
            QTimer.singleShot(0, self.release_ended)
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
        if not self._all:
            self.allEnded.emit()


class EtaEstimator:
    """Estimates time left from (done, total) progress: elapsed / done × remaining, per segment.

    A new segment starts when ``total`` or the message prefix changes (stage switch), or when
    ``done`` goes backwards.
    """

    def __init__(self) -> None:
        self._segment: tuple[int, str] | None = None
        self._t0 = 0.0
        self._done0 = 0
        self._last_done = 0

    def reset(self) -> None:
        self._segment = None

    def update(self, done: int, total: int, message: str = "", now: float | None = None) -> float | None:
        """Seconds left, or None when unknown (no total yet, or nothing done in this segment)."""
        now = time.monotonic() if now is None else now
        if total <= 0:
            self._segment = None
            return None
        seg = (total, message.split(":")[0])
        if seg != self._segment or done < self._last_done:
            self._segment, self._t0, self._done0 = seg, now, done
        self._last_done = done
        progressed = done - self._done0
        elapsed = now - self._t0
        if progressed <= 0 or elapsed <= 0:
            return None
        return max(0.0, elapsed / progressed * (total - done))


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"
