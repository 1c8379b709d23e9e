"""Run a step that cannot check a cancel token in a child process, so Stop (or closing the app) can kill it.

Why: a long native call (onnxruntime's static calibration, the fp16 graph conversion) holds its
thread until it returns. On a GUI job thread that means Stop does nothing until it is over, and
the app cannot exit under it (Qt aborts when a running QThread is destroyed). In a child process
the same call is killed the moment the cancel token is set, and a native crash in it (a segfault
in onnxruntime) becomes an error message instead of taking the app down.

The child starts with ``spawn`` (never ``fork``: the parent runs Qt and torch threads, and forking
a multi-threaded process can deadlock), so the function must be defined at module level and its
arguments and result must be picklable. The child imports the function's module on every call:
keep such modules light (no torch import: the child then starts in well under a second).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from workbench.core.events import CancelToken
from workbench.errors import Cancelled, WorkbenchError

T = TypeVar("T")

#: How often the parent checks the cancel token while the child works.
POLL_S = 0.05
#: Grace between SIGTERM and SIGKILL when stopping a child.
TERMINATE_GRACE_S = 1.0


class ChildProcessDied(WorkbenchError):
    """The child process ended without a result (a native crash, or killed from outside)."""

    def __init__(self, what: str, how: str) -> None:
        super().__init__(f"{what}: the child process running it died without a result ({how})")
        self.what = what
        self.how = how  # "signal 11", "exit code 1"


class _ChildError(Exception):
    """An exception from the child that could not be pickled, as its type name, message and traceback."""


def _child_main(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        text = "".join(traceback.format_exception(exc))
        try:
            pickle.loads(pickle.dumps(exc))  # some exceptions pickle but cannot be rebuilt
        except Exception:
            exc = _ChildError(f"{type(exc).__name__}: {exc}")
        conn.send(("error", exc, text))
    else:
        conn.send(("ok", result, ""))
    finally:
        conn.close()


def run_in_child(fn: Callable[..., T], *args: Any, cancel: CancelToken | None = None, what: str = "step",
                 **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a fresh ``spawn`` child; its result, or its exception re-raised here.

    Raises ``Cancelled`` as soon as ``cancel`` is set (the child is killed), and ``ChildProcessDied``
    (one line naming ``what``) when the child dies without answering. An interrupt of the waiting
    thread (Ctrl-C) also kills the child: it never outlives this call.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(sender, fn, args, kwargs), name=f"workbench: {what}",
                       daemon=True)
    try:
        proc.start()
        sender.close()  # the child holds the only writer: EOF here means it died
        while True:
            if cancel is not None and cancel.cancelled:
                raise Cancelled("cancelled by user")
            if receiver.poll(POLL_S):
                try:
                    status, payload, child_tb = receiver.recv()
                except EOFError:
                    break
                if status == "ok":
                    return payload  # type: ignore[no-any-return]
                if isinstance(payload, BaseException):
                    payload.add_note(f"in a child process ({what}):\n{child_tb}")
                    raise payload
                break  # pragma: no cover - the child only sends ok/error
            if not proc.is_alive() and not receiver.poll(0):
                break
        proc.join(TERMINATE_GRACE_S)
        code = proc.exitcode
        raise ChildProcessDied(what, f"signal {-code}" if code is not None and code < 0 else f"exit code {code}")
    finally:
        _stop(proc)
        receiver.close()
        sender.close()


def _stop(proc: multiprocessing.process.BaseProcess) -> None:
    """Terminate (then kill) a child that is still running, and reap it."""
    if proc.pid is None:  # never started
        return
    if proc.is_alive():
        proc.terminate()
        proc.join(TERMINATE_GRACE_S)
    if proc.is_alive():
        proc.kill()
    proc.join(TERMINATE_GRACE_S)
    with contextlib.suppress(ValueError):  # still running after SIGKILL (uninterruptible sleep)
        proc.close()
