"""Ctrl-C during ``workbench run`` (a real SIGINT to a real process): exit 130, one "cancelled" line,
and the run stored as ``cancelled``, not left for the next open to call "interrupted"."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import tiny_recipe
from workbench.core.store import RunStore
from workbench.recipe import save_recipe


def test_ctrl_c_during_run_is_recorded_as_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "long.toml"
    save_recipe(tiny_recipe("ctrl-c", epochs=200), path)
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "run", str(path), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = Path(env["WORKBENCH_HOME"]) / "runs.sqlite"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait until training is under way
            time.sleep(0.5)
            if db.exists():
                try:
                    with sqlite3.connect(db) as conn:
                        n = conn.execute("SELECT COUNT(*) FROM metrics WHERE key='loss'").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
                if n >= 2:
                    break
        else:
            pytest.fail("the run recorded no training metrics in time")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.strip()][-1] == "cancelled"
    with RunStore() as store:
        run = store.list_runs()[0]
    assert run.status == "cancelled", (run.status, run.error)
    assert run.error == "cancelled by user"
