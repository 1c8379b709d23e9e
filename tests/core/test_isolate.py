"""Steps that cannot check a cancel token run in a spawned child that Stop kills at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.engine import child_steps
from workbench.core.events import CancelToken
from workbench.core.isolate import ChildProcessDied, run_in_child
from workbench.errors import Cancelled


def test_result_and_arguments_round_trip() -> None:
    assert run_in_child(child_steps.add, 2, 3, times=4, what="adding") == 20


def test_exception_in_the_child_is_raised_here_with_its_traceback() -> None:
    with pytest.raises(ValueError, match="bad calibration data") as info:
        run_in_child(child_steps.fail, "bad calibration data", what="failing step")
    assert any("failing step" in note and "child_steps.py" in note for note in info.value.__notes__)


def test_exception_that_cannot_be_rebuilt_still_names_its_type() -> None:
    with pytest.raises(Exception, match="NotRebuildable: code 7: odd"):
        run_in_child(child_steps.fail_unrebuildable)


def test_cancel_kills_a_step_that_ignores_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    cancel = CancelToken()

    def cancel_once_started() -> None:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        cancel.cancel()

    threading.Thread(target=cancel_once_started, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        run_in_child(child_steps.sleep_ignoring_everything, str(pid_file), 30.0, cancel=cancel, what="sleeper")
    assert time.monotonic() - t0 < 25  # far less than the 30 s the step would take (start-up included)
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize(("how", "expected"), [("segfault", "signal 11"), ("exit", "exit code 3")])
def test_a_child_that_dies_becomes_a_one_line_error(how: str, expected: str) -> None:
    with pytest.raises(ChildProcessDied) as info:
        run_in_child(child_steps.crash, how, what="crashing step")
    assert str(info.value) == f"crashing step: the child process running it died without a result ({expected})"


def test_an_interrupted_wait_kills_the_child(tmp_path: Path) -> None:
    """Ctrl-C (or any exception) in the waiting thread never leaves the child running."""
    pid_file = tmp_path / "pid"

    class Interrupting(CancelToken):
        @property
        def cancelled(self) -> bool:
            if pid_file.exists():
                raise KeyboardInterrupt
            return False

    with pytest.raises(KeyboardInterrupt):
        run_in_child(child_steps.sleep_ignoring_everything, str(pid_file), 30.0, cancel=Interrupting())
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
