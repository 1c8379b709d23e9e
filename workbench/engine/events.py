"""How the engine talks to the outside world: plain callbacks and a cancel token.

Engine functions take a ``Reporter`` and a ``CancelToken``. The CLI prints what it hears, the
store records it, and the GUI adapts it into Qt signals; the engine itself knows none of them.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from workbench.errors import Cancelled


class CancelToken:
    """Cooperative cancellation: the engine checks it every batch; nobody kills threads."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by user")


class Reporter:
    """Receives engine events. Subclass and override what you need; every method is a no-op here.

    ``metrics`` carries a flat mapping of numbers (e.g. ``{"loss": 0.3, "samples_per_s": 812.0}``)
    tagged with the current stage and a step counter; ``t`` is ``time.time()`` when measured.
    """

    def stage_started(self, stage: str, total: int | None = None) -> None: ...

    def stage_finished(self, stage: str, result: Mapping[str, Any] | None = None) -> None: ...

    def progress(self, done: int, total: int | None, message: str = "") -> None: ...

    def metrics(self, stage: str, step: int, values: Mapping[str, float], t: float | None = None) -> None: ...

    def log(self, message: str, level: str = "info") -> None: ...


class MultiReporter(Reporter):
    """Fan one stream of events out to several reporters (e.g. store + CLI, or store + GUI)."""

    def __init__(self, reporters: Iterable[Reporter]) -> None:
        self.reporters = list(reporters)

    def stage_started(self, stage: str, total: int | None = None) -> None:
        for r in self.reporters:
            r.stage_started(stage, total)

    def stage_finished(self, stage: str, result: Mapping[str, Any] | None = None) -> None:
        for r in self.reporters:
            r.stage_finished(stage, result)

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        for r in self.reporters:
            r.progress(done, total, message)

    def metrics(self, stage: str, step: int, values: Mapping[str, float], t: float | None = None) -> None:
        t = time.time() if t is None else t
        for r in self.reporters:
            r.metrics(stage, step, values, t)

    def log(self, message: str, level: str = "info") -> None:
        for r in self.reporters:
            r.log(message, level)


class RecordingReporter(Reporter):
    """Keeps every event in a list; handy in tests and for summarising a stage."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def stage_started(self, stage: str, total: int | None = None) -> None:
        self.events.append(("stage_started", (stage, total)))

    def stage_finished(self, stage: str, result: Mapping[str, Any] | None = None) -> None:
        self.events.append(("stage_finished", (stage, dict(result or {}))))

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        self.events.append(("progress", (done, total, message)))

    def metrics(self, stage: str, step: int, values: Mapping[str, float], t: float | None = None) -> None:
        self.events.append(("metrics", (stage, step, dict(values), t)))

    def log(self, message: str, level: str = "info") -> None:
        self.events.append(("log", (message, level)))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [args for k, args in self.events if k == kind]


class relay_warnings:  # noqa: N801 - used as a context manager, reads like a function
    """Forward Python warnings raised inside the block to ``reporter.log(..., 'warning')``."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._ctx = warnings.catch_warnings(record=True)

    def __enter__(self) -> relay_warnings:
        self._records = self._ctx.__enter__()
        warnings.simplefilter("default")
        return self

    def __exit__(self, *exc: object) -> None:
        records = list(self._records or [])
        self._ctx.__exit__(*exc)
        seen: set[str] = set()
        for w in records:
            text = f"{w.category.__name__}: {w.message}"
            if text not in seen:
                seen.add(text)
                self.reporter.log(text, "warning")
