from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from workbench.core.store import RunStore, StoreReporter


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
        "from workbench.core.store import RunStore\n"
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


# The first release's schema, written out by hand (not imported): a store written by that version
# has exactly these tables and no user_version stamp.
_V0_SQL = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'run',
    status TEXT NOT NULL, model TEXT NOT NULL DEFAULT '', techniques TEXT NOT NULL DEFAULT '[]',
    recipe TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, ended_at REAL, summary TEXT NOT NULL DEFAULT '{}',
    error TEXT NOT NULL DEFAULT '', pid INTEGER, pid_started REAL, host TEXT NOT NULL DEFAULT '');
CREATE TABLE metrics (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, t REAL NOT NULL,
    stage TEXT NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX metrics_run_key ON metrics(run_id, key);
CREATE TABLE logs (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, t REAL NOT NULL,
    level TEXT NOT NULL, message TEXT NOT NULL);
CREATE TABLE artifacts (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL REFERENCES runs(id)
    ON DELETE CASCADE, kind TEXT NOT NULL, path TEXT NOT NULL, meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL);
INSERT INTO runs (name, status, model, techniques, recipe, created_at, ended_at, summary, error, host)
    VALUES ('old run', 'completed', 'small_cnn', '["bf16"]', 'name = "old run"\n', 1700000000.0, 1700000100.0,
            '{"final": {"accuracy": 0.875}}', '', '');
INSERT INTO runs (name, status, created_at, pid, pid_started, host)
    VALUES ('died', 'running', 1700000200.0, 999999999, 1.0, '');
INSERT INTO metrics VALUES (1, 1700000001.0, 'train', 0, 'loss', 2.5);
INSERT INTO logs VALUES (1, 1700000002.0, 'info', 'hello from v0');
INSERT INTO artifacts (run_id, kind, path, meta, created_at) VALUES (1, 'weights', '/nowhere/w.safetensors',
    '{"model": "small_cnn"}', 1700000003.0);
"""


def test_opens_and_migrates_a_store_written_by_the_previous_version(tmp_path: Path) -> None:
    import sqlite3

    from workbench.core.store import SCHEMA_VERSION, schema_version

    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(_V0_SQL)
    assert schema_version(path) == 0
    with RunStore(path) as store:
        old = store.get_run(1)
        assert old is not None and old.name == "old run" and old.final["accuracy"] == 0.875
        assert old.techniques == ["bf16"]
        assert [v for *_, v in store.metrics(1)["loss"]] == [2.5]
        assert store.logs(1)[0][1:] == ("info", "hello from v0")
        assert store.artifacts(1, "weights")[0].meta == {"model": "small_cnn"}
        died = store.get_run(2)
        assert died is not None and died.status == "interrupted"  # its process is long gone
        new = store.create_run("new run")  # and the migrated file takes new runs
        store.finish_run(new, "completed", {"final": {"accuracy": 0.5}})
    assert schema_version(path) == SCHEMA_VERSION == 1
    with sqlite3.connect(path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"logs_run", "artifacts_run_kind", "metrics_run_key"} <= indexes
    with RunStore(path) as store:  # reopening a current file changes nothing
        assert [r.name for r in store.list_runs()] == ["new run", "died", "old run"]
    assert schema_version(path) == SCHEMA_VERSION


def test_a_new_store_matches_a_migrated_one(tmp_path: Path) -> None:
    import sqlite3

    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    with sqlite3.connect(old) as conn:
        conn.executescript(_V0_SQL)
    RunStore(old).close()
    RunStore(new).close()

    def schema(p: Path) -> set[tuple[str, str]]:
        with sqlite3.connect(p) as conn:
            return {(r[0], r[1]) for r in conn.execute("SELECT type, name FROM sqlite_master")}

    assert schema(old) == schema(new)


def test_unusable_store_files_are_one_line_errors(tmp_path: Path) -> None:
    import sqlite3

    import pytest

    from workbench.errors import WorkbenchError

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, just some text" * 200)
    with pytest.raises(WorkbenchError, match="junk.sqlite: not a usable Workbench runs database"):
        RunStore(junk)
    folder = tmp_path / "folder.sqlite"
    folder.mkdir()
    with pytest.raises(WorkbenchError, match="folder.sqlite: the runs database is a folder"):
        RunStore(folder)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    with pytest.raises(WorkbenchError, match="not a Workbench runs database .tables: songs."):
        RunStore(foreign)
    future = tmp_path / "future.sqlite"
    RunStore(future).close()
    with sqlite3.connect(future) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(WorkbenchError, match="schema version 99, written by a newer Workbench"):
        RunStore(future)
    assert junk.read_bytes().startswith(b"this is not a database")  # nothing was overwritten
