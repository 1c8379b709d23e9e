"""Functions the isolate tests run in a spawned child (module level and light: the child imports this file)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


class NotRebuildable(Exception):
    """Pickles, but cannot be rebuilt from its args (a common shape of third-party exceptions)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")


def add(a: int, b: int, *, times: int = 1) -> int:
    return (a + b) * times


def fail(message: str) -> None:
    raise ValueError(message)


def fail_unrebuildable() -> None:
    raise NotRebuildable(7, "odd")


def sleep_ignoring_everything(pid_file: str, seconds: float) -> str:
    """A native-like step: never looks at a cancel token."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def crash(how: str) -> None:
    if how == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)
    os._exit(3)
