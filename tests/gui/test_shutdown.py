"""Closing the app while a job is inside a step that cannot be interrupted: no abort, a clean exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.core.store import RunStore
from workbench.gui.main_window import SHUTDOWN_GRACE_S

SCRIPT = Path(__file__).resolve().parent / "scripts" / "close_during_slow_step.py"
IGNORES_CANCEL_S = 5  # past the 3 s shutdown grace (SHUTDOWN_GRACE_S): the app must wait for it

SLOW_MODEL = f'''\
"""A user model whose constructor takes {IGNORES_CANCEL_S} s and never looks at a cancel token."""
import os
import sys
import time

from torch import nn


class SlowNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        frame, in_run = sys._getframe(), False
        while frame is not None and not in_run:
            in_run, frame = frame.f_code.co_name == "run_recipe", frame.f_back
        if in_run:  # (the model summary builds it too; the test closes the window during the run)
            open(os.environ["SLOW_STEP_MARKER"], "w").close()
        time.sleep({IGNORES_CANCEL_S})
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes))

    def forward(self, x):
        return self.net(x)
'''

RECIPE = """\
version = 1
name = "slow-step"

[model]
source = "python"
path = "{model}"
class_name = "SlowNet"

[data]
source = "synthetic"
synthetic_shape = [3, 8, 8]
synthetic_classes = 4
synthetic_samples = 64

[train]
epochs = 3

[batching]
batch_size = 16

[loader]
num_workers = 0

[bench]
batch_sizes = [1]
iters = 3
warmup = 1
"""


@pytest.mark.slow
def test_closing_during_a_step_that_ignores_cancel_waits_then_exits_cleanly(tmp_path: Path,
                                                                           workbench_home: Path) -> None:
    """The job ignores cancel for IGNORES_CANCEL_S, past the shutdown grace (a wait that once ended in
    "QThread: Destroyed while thread is still running", exit 134): the window says what it waits for,
    the process outlives the job, exits 0, and the run is recorded as cancelled."""
    model = tmp_path / "slow_model.py"
    model.write_text(SLOW_MODEL, encoding="utf-8")
    recipe = tmp_path / "slow.toml"
    recipe.write_text(RECIPE.format(model=model.as_posix()), encoding="utf-8")
    marker = tmp_path / "in-slow-step"
    env = {**os.environ, "WORKBENCH_HOME": str(workbench_home), "SLOW_STEP_MARKER": str(marker),
           "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(recipe), str(marker)], env=env, capture_output=True,
                          text=True, timeout=IGNORES_CANCEL_S * 6)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "QThread: Destroyed" not in proc.stderr and "Aborted" not in proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["run_started"] and seen["exit_code"] == 0
    assert seen["frozen_objects"] > 10_000  # Qt, torch and the window: no per-job collection scans them
    assert seen["close_accepted"] is False and seen["visible_while_waiting"]  # did not close under the job
    assert seen["close_blocked_s"] < 10  # the GUI thread is not frozen for the whole step
    assert seen["wait_dialog_visible"] and "Waiting for Run" in seen["wait_text"]
    assert "cannot be interrupted" in seen["wait_text"]
    assert seen["status_text"].startswith("Closing: waiting for")
    assert seen["second_close_accepted"] is False
    assert seen["ended_at"] - seen["closed_at"] > SHUTDOWN_GRACE_S  # it waited for the step, past the grace
    store = RunStore()
    try:
        runs = store.list_runs()
        assert [r.status for r in runs] == ["cancelled"], [(r.status, r.error) for r in runs]
    finally:
        store.close()


def test_window_waits_for_an_uninterruptible_job_then_closes_by_itself(window, qtbot, monkeypatch) -> None:  # noqa: ANN001
    """In-process version with a short step: close is refused while the step runs (with feedback), no
    new job may start, and the window closes itself, saving its settings, when the job ends."""
    import threading

    from PySide6.QtWidgets import QDialog

    import workbench.gui.main_window as main_window
    from workbench.gui.jobs import live_threads

    monkeypatch.setattr(main_window, "SHUTDOWN_GRACE_S", 0.2)
    release = threading.Event()

    def uninterruptible(reporter, cancel):  # noqa: ANN001
        release.wait(20)  # a native call: the cancel token is not looked at
        cancel.raise_if_cancelled()

    window.ask_stop_running_job = lambda: True
    window.jobs.start("Export", uninterruptible)
    qtbot.waitUntil(lambda: bool(live_threads()), timeout=5_000)
    assert window.close() is False
    assert window.isVisible() and not window.store_is_closed
    dialog = window.findChild(QDialog, "shutdownWaitDialog")
    assert dialog is not None and dialog.isVisible()
    assert window.waiting_for() == ["Export"]
    with pytest.raises(RuntimeError, match="closing"):
        window.jobs.start("Model summary", lambda r, c: None, key="model_summary")
    release.set()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10_000)
    assert not live_threads() and window.store_is_closed
    assert window.findChild(QDialog, "shutdownWaitDialog") is None or not dialog.isVisible()
    assert "closing" in window.log_view.toPlainText()


def test_interpreter_exit_waits_for_a_running_job_thread(tmp_path: Path) -> None:
    """A script that returns while a job thread runs: the atexit hook asks it to stop and waits, so the
    QThread is never destroyed while running (no abort)."""
    script = tmp_path / "leave_a_job_running.py"
    script.write_text(
        "import time\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from workbench.gui.jobs import JobManager\n"
        "app = QApplication([])\n"
        "manager = JobManager()\n"
        "def step(reporter, cancel):\n"
        "    time.sleep(2)  # ignores cancel\n"
        "    cancel.raise_if_cancelled()\n"
        "manager.start('Slow step', step)\n"
        "time.sleep(0.3)\n"
        "del manager\n", encoding="utf-8")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "waiting for Slow step to finish before exiting" in proc.stderr
    assert "QThread: Destroyed" not in proc.stderr
