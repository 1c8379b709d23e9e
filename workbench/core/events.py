"""How the engine talks to the outside world: plain callbacks and a cancel token.

Engine functions take a ``Reporter`` and a ``CancelToken``. The CLI prints what it hears, the
store records it, and the GUI adapts it into Qt signals; the engine itself knows none of them.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
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


#: Library deprecation noise (torch, onnx, numpy...): logged once at debug level, never shown to the user.
LIBRARY_NOISE: tuple[type[Warning], ...] = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)

_log = logging.getLogger("workbench.warnings")
_routes = threading.local()  # .stack: the relay/suppress blocks open on this thread, innermost last
_install_lock = threading.Lock()
_previous_showwarning: Callable[..., Any] | None = None
_noise_lock = threading.Lock()
_noise_seen: set[tuple[str, str]] = set()


def _route_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   file: Any = None, line: str | None = None) -> None:
    """The process-wide ``warnings.showwarning``: hand a warning to the blocks open on *this* thread."""
    stack: list[_WarningRoute] = getattr(_routes, "stack", None) or []
    if stack and issubclass(category, LIBRARY_NOISE):
        key = (category.__name__, str(message))
        with _noise_lock:
            if key in _noise_seen:
                return
            _noise_seen.add(key)
        _log.debug("%s: %s (%s:%s)", category.__name__, message, filename, lineno)
        return
    for route in reversed(stack):  # innermost first
        if route.take(category, f"{category.__name__}: {message}"):
            return
    fallback = _previous_showwarning
    if fallback is not None:
        fallback(message, category, filename, lineno, file, line)


def install_warning_hook() -> None:
    """Make ``_route_warning`` the process's ``warnings.showwarning`` (idempotent, any thread).

    Re-installed by every ``relay_warnings`` block because ``catch_warnings`` elsewhere (pytest,
    libraries) saves and restores ``showwarning``. Whatever it replaces keeps serving threads that
    have no block open.
    """
    global _previous_showwarning
    with _install_lock:
        if warnings.showwarning is not _route_warning:
            _previous_showwarning = warnings.showwarning
            warnings.showwarning = _route_warning


class _WarningRoute:
    """A block that takes the warnings raised on its thread while it is open (see ``_route_warning``)."""

    def take(self, category: type[Warning], text: str) -> bool:
        """Handle one warning; False passes it on to the enclosing block (or the previous hook)."""
        raise NotImplementedError

    def __enter__(self) -> _WarningRoute:
        install_warning_hook()
        stack = getattr(_routes, "stack", None)
        if stack is None:
            stack = _routes.stack = []
        stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        stack: list[_WarningRoute] = getattr(_routes, "stack", [])
        if self in stack:
            stack.remove(self)


class suppress_warnings(_WarningRoute):  # noqa: N801 - used as a context manager, reads like a function
    """Drop warnings of ``categories`` raised on this thread inside the block (debug log only).

    The thread-safe replacement for ``with warnings.catch_warnings(): warnings.simplefilter("ignore",
    ...)``, which changes the filters of the whole process while the block runs.
    """

    def __init__(self, *categories: type[Warning]) -> None:
        self.categories = categories

    def take(self, category: type[Warning], text: str) -> bool:
        if issubclass(category, self.categories):
            _log.debug("suppressed: %s", text)
            return True
        return False


class relay_warnings(_WarningRoute):  # noqa: N801 - used as a context manager, reads like a function
    """Forward Python warnings raised on this thread inside the block to ``reporter.log(..., 'warning')``.

    Thread-safe, unlike ``warnings.catch_warnings`` (which swaps process-wide filters and hooks, so
    a block on one thread captured other threads' warnings and could leave the filters wrong): one
    hook is installed once for the process and routes each warning to the innermost block open on
    the thread that raised it (``threading.local``). Nothing else process-wide changes. Each text is
    relayed once per block; library deprecation noise (``LIBRARY_NOISE``) only goes to the debug log.
    """

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._seen: set[str] = set()

    def __enter__(self) -> relay_warnings:
        # Python shows a "default" warning once per code location; a new block (a new run) should hear
        # warnings again that an earlier run already raised. This only resets that bookkeeping.
        reset_once_registry = getattr(warnings, "_filters_mutated", None)
        if reset_once_registry is not None:
            reset_once_registry()
        super().__enter__()
        return self

    def take(self, category: type[Warning], text: str) -> bool:
        if text not in self._seen:
            self._seen.add(text)
            self.reporter.log(text, "warning")
        return True
