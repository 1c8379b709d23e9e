from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from workbench.engine.store import RunStore, StoreReporter


def test_run_lifecycle_metrics_logs_artifacts(tmp_path: Path) -> None:
    with RunStore(tmp_path / "s.sqlite") as store:
        rid = store.create_run("a", "version = 1\n", "small_cnn", ["bf16"])
        rep = StoreReporter(store, rid)
        for i in range(5):
            rep.metrics("train", i, {"loss": 1.0 / (i + 1), "samples_per_s": 100.0 + i, "flag": True})
        rep.log("hello", "warning")
        art = tmp_path / "w.safetensors"
        art.write_bytes(b"x")
        store.add_artifact(rid, "weights", art, {"k": 1})
        store.finish_run(rid, "completed", {"final": {"accuracy": 0.9}})
        run = store.get_run(rid)
        assert run is not None and run.status == "completed" and run.final["accuracy"] == 0.9
        assert run.techniques == ["bf16"]
        series = store.metrics(rid)
        assert [v for *_, v in series["loss"]] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
        assert "flag" not in series  # booleans are not metrics
        assert store.logs(rid)[0][1:] == ("warning", "hello")
        assert store.artifacts(rid, "weights")[0].meta == {"k": 1}
        assert [r.id for r in store.list_runs()] == [rid]
        store.delete_run(rid)
        assert store.get_run(rid) is None and store.metrics(rid) == {}


def test_dead_process_run_is_marked_interrupted_and_keeps_metrics(tmp_path: Path) -> None:
    """SIGKILL a process mid-run: the store opens, the run is interrupted, its metrics are kept."""
    db = tmp_path / "s.sqlite"
    code = (
        "import sys, time\n"
        "from workbench.engine.store import RunStore\n"
        f"s = RunStore({str(db)!r})\n"
        "rid = s.create_run('victim')\n"
        "i = 0\n"
        "while True:\n"
        "    s.add_metrics(rid, 'train', i, {'loss': float(i)})\n"
        "    i += 1\n"
        "    if i == 20: print('ready', flush=True)\n"
        "    time.sleep(0.005)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    with RunStore(db) as store:
        run = store.list_runs()[0]
        assert run.status == "interrupted"
        assert "process ended" in run.error
        assert len(store.metrics(run.id)["loss"]) >= 20


def test_running_run_of_live_process_is_not_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with RunStore(db) as store:
        rid = store.create_run("alive")
    with RunStore(db) as store:
        assert store.get_run(rid).status == "running"  # type: ignore[union-attr]
