"""The run store: every run, its metric series, logs and artifacts, in SQLite (WAL).

Each write commits at once, so a process killed mid-run (even by SIGKILL) leaves everything it
recorded so far. On open, runs still marked ``running`` whose process is gone become
``interrupted``. One connection is shared across threads behind a lock (telemetry samples arrive
from a sampler thread while the training thread reports metrics).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from workbench.core.events import Reporter
from workbench.core.paths import workbench_home
from workbench.errors import WorkbenchError, short

STATUSES = ("running", "completed", "failed", "cancelled", "interrupted")

#: The runs database's schema version, kept in SQLite's ``PRAGMA user_version``. Version 0 is the
#: first release's file (no version stamp). Bump it and add a step to ``_MIGRATIONS`` for any change.
SCHEMA_VERSION = 1

#: The first release's schema (version 0), kept verbatim: new files start from it and then migrate,
#: so a new file and an upgraded old one end up identical.
_SCHEMA_V0 = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'run',
    status TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    techniques TEXT NOT NULL DEFAULT '[]',
    recipe TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    ended_at REAL,
    summary TEXT NOT NULL DEFAULT '{}',
    error TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    pid_started REAL,
    host TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    t REAL NOT NULL,
    stage TEXT NOT NULL,
    step INTEGER NOT NULL,
    key TEXT NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run_key ON metrics(run_id, key);
CREATE TABLE IF NOT EXISTS logs (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    t REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
"""

#: ``_MIGRATIONS[v]`` turns a version-v file into version v + 1 (run in one transaction each).
_MIGRATIONS: dict[int, str] = {
    # v0 -> v1: a run's logs and artifacts were found by scanning whole tables; index them by run.
    0: """
CREATE INDEX IF NOT EXISTS logs_run ON logs(run_id);
CREATE INDEX IF NOT EXISTS artifacts_run_kind ON artifacts(run_id, kind);
""",
}


@dataclass
class RunRecord:
    id: int
    name: str
    kind: str
    status: str
    model: str
    techniques: list[str]
    recipe: str
    created_at: float
    ended_at: float | None
    summary: dict[str, Any]
    error: str

    @property
    def final(self) -> dict[str, Any]:
        return self.summary.get("final") or {}

    @property
    def baseline(self) -> dict[str, Any]:
        return self.summary.get("baseline") or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.id,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "model": self.model,
            "techniques": self.techniques,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "error": self.error,
            **{k: v for k, v in self.summary.items() if k not in ("run_id", "status")},
        }


@dataclass
class Artifact:
    id: int
    run_id: int
    kind: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def _process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class RunStore:
    """SQLite-backed store. ``RunStore()`` opens ``$WORKBENCH_HOME/runs.sqlite``."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else workbench_home() / "runs.sqlite"
        self._lock = threading.RLock()
        self._conn = self._open(self.path)
        self.mark_interrupted()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        """Connect, check it is a runs database we can read, and migrate it to ``SCHEMA_VERSION``.

        Anything else (a folder, a junk or foreign file, a newer Workbench's file) is one
        ``WorkbenchError`` naming the file, never a traceback.
        """
        fix = "move it away (Workbench then starts a new one) or point WORKBENCH_HOME at another folder"
        if path.is_dir():
            raise WorkbenchError(f"{path}: the runs database is a folder; {fix}")
        if path.exists() and not path.is_file():
            raise WorkbenchError(f"{path}: the runs database is not a regular file (a pipe, socket or device); {fix}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkbenchError(f"{path.parent}: cannot create the folder for the runs database "
                                 f"({exc.strerror or type(exc).__name__}); {fix}") from None
        conn = None
        try:
            conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            _migrate(conn, path, fix)
        except WorkbenchError:
            if conn is not None:
                conn.close()
            raise
        except sqlite3.DatabaseError as exc:  # "file is not a database", malformed, read-only, locked ...
            if conn is not None:
                conn.close()
            raise WorkbenchError(f"{path}: not a usable Workbench runs database ({short(exc)}); {fix}") from None
        return conn

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            cur = self._conn.execute(sql, params)
            self._conn.commit()
            return cur

    def mark_interrupted(self) -> int:
        """Runs left 'running' by a process that no longer exists are marked interrupted."""
        host = socket.gethostname()
        with self._lock:
            rows = self._conn.execute("SELECT id, pid, pid_started, host FROM runs WHERE status='running'").fetchall()
        dead = []
        for r in rows:
            if r["host"] and r["host"] != host:
                continue  # another machine's run (shared folder): not ours to judge
            started = _process_start_time(r["pid"]) if r["pid"] else None
            if started is None or r["pid_started"] is None or abs(started - r["pid_started"]) > 1.0:
                dead.append(r["id"])
        for run_id in dead:
            self._write(
                "UPDATE runs SET status='interrupted', ended_at=COALESCE(ended_at, ?), "
                "error=CASE WHEN error='' THEN 'process ended while the run was in progress' ELSE error END "
                "WHERE id=?",
                (time.time(), run_id),
            )
        return len(dead)

    # -- runs --------------------------------------------------------------------------------
    def create_run(
        self, name: str, recipe_toml: str = "", model: str = "", techniques: list[str] | None = None, kind: str = "run"
    ) -> int:
        pid = os.getpid()
        cur = self._write(
            "INSERT INTO runs (name, kind, status, model, techniques, recipe, created_at, pid, pid_started, host) "
            "VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
            (name, kind, model, json.dumps(techniques or []), recipe_toml, time.time(), pid,
             _process_start_time(pid), socket.gethostname()),
        )
        return int(cur.lastrowid)

    def update_summary(self, run_id: int, summary: Mapping[str, Any]) -> None:
        """Save a partial summary while running (so a crash keeps what was measured)."""
        self._write("UPDATE runs SET summary=? WHERE id=?", (json.dumps(summary, default=_json_default), run_id))

    def finish_run(
        self, run_id: int, status: str, summary: Mapping[str, Any] | None = None, error: str = "",
        techniques: Sequence[str] | None = None,
    ) -> None:
        """Record how a run ended; ``techniques`` replaces the ones it was created with by those that ran."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        sets, values = ["status=?", "ended_at=?", "error=?"], [status, time.time(), error]
        if summary is not None:
            sets.append("summary=?")
            values.append(json.dumps(summary, default=_json_default))
        if techniques is not None:
            sets.append("techniques=?")
            values.append(json.dumps(list(techniques)))
        self._write(f"UPDATE runs SET {', '.join(sets)} WHERE id=?", (*values, run_id))

    def rename_run(self, run_id: int, name: str) -> None:
        self._write("UPDATE runs SET name=? WHERE id=?", (name, run_id))

    def get_run(self, run_id: int) -> RunRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _record(row) if row else None

    def list_runs(self, kind: str | None = None) -> list[RunRecord]:
        with self._lock:
            if kind:
                rows = self._conn.execute("SELECT * FROM runs WHERE kind=? ORDER BY id DESC", (kind,)).fetchall()
            else:
                rows = self._conn.execute("SELECT * FROM runs ORDER BY id DESC").fetchall()
        return [_record(r) for r in rows]

    def delete_run(self, run_id: int) -> None:
        """Delete a run, its series, logs and its artifact folder."""
        for art in self.artifacts(run_id):
            if art.path.is_file() and _is_within(art.path, workbench_home()):
                art.path.unlink(missing_ok=True)
        folder = workbench_home() / "artifacts" / f"run-{run_id:06d}"
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            for table in ("metrics", "logs", "artifacts"):
                self._conn.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            self._conn.execute("DELETE FROM runs WHERE id=?", (run_id,))
            self._conn.commit()

    # -- series, logs, artifacts -------------------------------------------------------------
    def add_metrics(self, run_id: int, stage: str, step: int, values: Mapping[str, float], t: float | None = None) -> None:
        t = time.time() if t is None else t
        rows = [(run_id, t, stage, step, k, float(v)) for k, v in values.items() if _is_number(v)]
        if not rows:
            return
        with self._lock:
            self._conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._conn.commit()

    def metrics(self, run_id: int, keys: list[str] | None = None) -> dict[str, list[tuple[float, str, int, float]]]:
        """Series by key: lists of (t, stage, step, value) in time order."""
        sql = "SELECT t, stage, step, key, value FROM metrics WHERE run_id=?"
        params: list[Any] = [run_id]
        if keys:
            sql += f" AND key IN ({','.join('?' * len(keys))})"
            params += keys
        sql += " ORDER BY t, rowid"
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        out: dict[str, list[tuple[float, str, int, float]]] = {}
        for r in rows:
            out.setdefault(r["key"], []).append((r["t"], r["stage"], r["step"], r["value"]))
        return out

    def add_log(self, run_id: int, message: str, level: str = "info") -> None:
        self._write("INSERT INTO logs VALUES (?, ?, ?, ?)", (run_id, time.time(), level, message))

    def logs(self, run_id: int) -> list[tuple[float, str, str]]:
        with self._lock:
            rows = self._conn.execute("SELECT t, level, message FROM logs WHERE run_id=? ORDER BY t, rowid", (run_id,))
            return [(r["t"], r["level"], r["message"]) for r in rows.fetchall()]

    def add_artifact(self, run_id: int, kind: str, path: str | Path, meta: Mapping[str, Any] | None = None) -> int:
        cur = self._write(
            "INSERT INTO artifacts (run_id, kind, path, meta, created_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, kind, str(path), json.dumps(dict(meta or {}), default=_json_default), time.time()),
        )
        return int(cur.lastrowid)

    def artifacts(self, run_id: int, kind: str | None = None) -> list[Artifact]:
        sql = "SELECT * FROM artifacts WHERE run_id=?"
        params: list[Any] = [run_id]
        if kind:
            sql += " AND kind=?"
            params.append(kind)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return [Artifact(r["id"], r["run_id"], r["kind"], Path(r["path"]), json.loads(r["meta"])) for r in rows]


def _migrate(conn: sqlite3.Connection, path: Path, fix: str) -> None:
    """Bring the file to ``SCHEMA_VERSION``: create it (as v0, then migrate) or upgrade step by step."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise WorkbenchError(f"{path}: the runs database has schema version {version}, written by a newer "
                             f"Workbench (this one reads up to {SCHEMA_VERSION}); upgrade Workbench, or {fix}")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version == 0 and tables and "runs" not in tables:
        raise WorkbenchError(f"{path}: an SQLite file but not a Workbench runs database (tables: "
                             f"{short(', '.join(sorted(tables)))}); {fix}")
    if version == 0:
        conn.executescript(_SCHEMA_V0)
    while version < SCHEMA_VERSION:
        # One write transaction per step: a crash mid-migration leaves the previous version intact, and
        # a second process opening the same old file waits, then sees the step done and skips it.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version < SCHEMA_VERSION:
                for statement in filter(str.strip, _MIGRATIONS[version].split(";")):
                    conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def schema_version(path: str | Path) -> int:
    """The schema version stamped in a runs database file (0 = the first release's, unstamped)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


class StoreReporter(Reporter):
    """Records a run's metrics and log lines into the store as they happen."""

    def __init__(self, store: RunStore, run_id: int) -> None:
        self.store = store
        self.run_id = run_id

    def metrics(self, stage: str, step: int, values: Mapping[str, float], t: float | None = None) -> None:
        self.store.add_metrics(self.run_id, stage, step, values, t)

    def log(self, message: str, level: str = "info") -> None:
        self.store.add_log(self.run_id, message, level)

    def stage_started(self, stage: str, total: int | None = None) -> None:
        self.store.add_log(self.run_id, f"stage {stage} started", "stage")

    def stage_finished(self, stage: str, result: Mapping[str, Any] | None = None) -> None:
        self.store.add_log(self.run_id, f"stage {stage} finished", "stage")


def _record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"], name=row["name"], kind=row["kind"], status=row["status"], model=row["model"],
        techniques=json.loads(row["techniques"] or "[]"), recipe=row["recipe"], created_at=row["created_at"],
        ended_at=row["ended_at"], summary=json.loads(row["summary"] or "{}"), error=row["error"],
    )


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v  # excludes NaN


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _json_default(o: object) -> object:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    return str(o)
