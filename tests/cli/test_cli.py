from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import tiny_recipe
from workbench.cli import main
from workbench.core.store import RunStore
from workbench.recipe import save_recipe


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    save_recipe(tiny_recipe("cli-tiny"), path)
    return path


def test_run_json_then_runs_and_show(recipe_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(recipe_file), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "completed"
    for key in ("accuracy", "latency_ms_p50", "latency_ms_p95", "throughput", "params", "size_bytes",
                "train_samples_per_s"):
        assert isinstance(result["final"][key], int | float), key
    assert main(["runs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in runs] == [result["run_id"]]
    assert main(["show", str(result["run_id"]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["final"]["accuracy"] == result["final"]["accuracy"]
    assert 'name = "cli-tiny"' in shown["recipe"]


def test_user_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[batching]\nbatch_size = 0\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "batching.batch_size = 0" in err and "Traceback" not in err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err
    assert main(["show", "12345"]) == 2
    assert "no run with ID 12345" in capsys.readouterr().err


def test_failed_run_is_recorded_with_its_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = tiny_recipe()
    r.data.source = "csv"
    r.data.path = str(tmp_path / "nope.csv")
    path = tmp_path / "r.toml"
    save_recipe(r, path)
    assert main(["run", str(path), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "failed" and "nope.csv" in out["error"]
    run = RunStore().get_run(out["run_id"])
    assert run is not None and run.status == "failed" and "nope.csv" in run.error


def test_sigkill_mid_run_leaves_an_interrupted_run_with_metrics(tmp_path: Path) -> None:
    path = tmp_path / "long.toml"
    save_recipe(tiny_recipe("victim", epochs=200), path)
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "run", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = Path(env["WORKBENCH_HOME"]) / "runs.sqlite"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait until training metrics are on disk
            time.sleep(0.5)
            if db.exists():
                try:
                    with sqlite3.connect(db) as conn:
                        n = conn.execute("SELECT COUNT(*) FROM metrics WHERE key='loss'").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
                if n >= 3:
                    break
        else:
            pytest.fail("the run recorded no training metrics in time")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    with RunStore() as store:
        run = store.list_runs()[0]
        assert run.status == "interrupted"
        assert len(store.metrics(run.id)["loss"]) >= 3
