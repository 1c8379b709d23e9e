"""Start a data-parallel run with PyTorch's own elastic launcher, and watch it to the end.

One machine: this process creates the run in the store, writes the recipe beside it and starts
``python -m torch.distributed.run --standalone --nproc_per_node N -m workbench.techniques.distributed.worker``
in its own process group. Rank 0 records everything into that run; this process relays its logs and
metrics to the caller's reporter (the CLI's progress or the GUI's plots) while it runs. Stop or
Ctrl-C terminates the whole process group (every rank); a rank that fails makes the run fail with
that rank's message; if this process is killed, the launcher dies with it (parent-death signal) and
the run, still ``running``, becomes ``interrupted`` the next time the store opens.

Several machines: ``node_commands`` gives the exact ``torchrun`` command to start on each machine;
the same recipe runs there, and node 0's rank 0 records the run.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workbench.core.events import CancelToken, Reporter
from workbench.core.paths import artifacts_dir
from workbench.core.pipeline import RunOutcome, recipe_model_label, run_display_name
from workbench.core.store import RunStore
from workbench.errors import RecipeError
from workbench.recipe import Recipe, dumps_recipe

WORKER = "workbench.techniques.distributed.worker"
#: The recipe section this launcher answers for (named in its errors).
SECTION = "distributed"
#: Seconds between SIGTERM to the launcher's process group and SIGKILL.
TERMINATE_GRACE_S = 10.0
POLL_S = 0.25


def inside_launch() -> bool:
    """True in a process that torch.distributed.run started (a rank)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def needs_launch(recipe: Recipe) -> bool:
    """True when the recipe asks for several processes and this process is not already one of its ranks."""
    d = recipe.distributed
    return d is not None and d.nproc_per_node * d.nnodes > 1 and not inside_launch()


def node_commands(recipe_path: str | Path, recipe: Recipe) -> list[str]:
    """The ``torchrun`` command to start on each machine, node 0 first."""
    d = recipe.distributed
    assert d is not None
    return [shlex.join(["torchrun", f"--nnodes={d.nnodes}", f"--node_rank={k}", f"--nproc_per_node={d.nproc_per_node}",
                        "--rdzv_backend=c10d", f"--rdzv_endpoint={d.rdzv_endpoint}", "-m", WORKER, str(recipe_path)])
            for k in range(d.nnodes)]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the launcher gets SIGTERM when this process dies, so ranks never outlive their run."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole process group (torchrun forwards it to the ranks), SIGKILL after a grace."""
    for sig, wait in ((signal.SIGTERM, TERMINATE_GRACE_S), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


class _Relay:
    """Passes the logs and metrics rank 0 writes into the store on to a reporter, as they arrive."""

    def __init__(self, store: RunStore, run_id: int, reporter: Reporter) -> None:
        self.store, self.run_id, self.reporter = store, run_id, reporter
        self.logs_seen = 0
        self.metrics_seen: dict[str, int] = {}

    def pump(self) -> None:
        logs = self.store.logs(self.run_id)
        for _t, level, message in logs[self.logs_seen:]:
            self.reporter.log(message, level)
        self.logs_seen = len(logs)
        for key, rows in self.store.metrics(self.run_id).items():
            for t, stage, step, value in rows[self.metrics_seen.get(key, 0):]:
                self.reporter.metrics(stage, step, {key: value}, t)
            self.metrics_seen[key] = len(rows)


def _rank_errors(folder: Path) -> list[str]:
    """Each failed rank's one line, earliest first: the first rank to fail is the cause, the others
    (their peer's connection closed under them) are its consequence."""
    out = []
    for path in sorted(folder.glob("rank*.error"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        if text:
            out.append(f"{path.stem.replace('rank', 'rank ')}: {text[0]}")
    return out


def launch(recipe: Recipe, *, store: RunStore | None = None, reporter: Reporter | None = None,
           cancel: CancelToken | None = None) -> RunOutcome:
    """Run ``recipe`` as a data-parallel job on this machine; never raises for a failed run."""
    d = recipe.distributed
    assert d is not None
    if d.nnodes > 1:
        raise RecipeError(f"distributed.nnodes = {d.nnodes}: start the run on each machine with the commands "
                          "`workbench run RECIPE --node-commands` prints")
    store = store or RunStore()
    reporter = reporter or Reporter()
    cancel = cancel or CancelToken()
    run_id = store.create_run(run_display_name(recipe), dumps_recipe(recipe), recipe_model_label(recipe),
                              recipe.techniques)
    folder = artifacts_dir(run_id) / "distributed"
    folder.mkdir(parents=True, exist_ok=True)
    recipe_path = folder / "recipe.toml"
    recipe_path.write_text(dumps_recipe(recipe), encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={d.nproc_per_node}",
           "-m", WORKER, str(recipe_path), "--run-id", str(run_id), "--errors", str(folder), "--store", str(store.path)]
    log_path = folder / "launcher.log"
    run_started = getattr(reporter, "run_started", None)
    if callable(run_started):
        run_started(run_id, run_display_name(recipe))
    reporter.log(f"distributed: {d.nproc_per_node} ranks on this machine via torch.distributed.run "
                 f"(log: {log_path})")
    relay = _Relay(store, run_id, reporter)
    cancelled = False
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        try:
            while proc.poll() is None:
                if cancel.cancelled:
                    cancelled = True
                    _terminate(proc)
                    break
                relay.pump()
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            _terminate(proc)
            _finish(store, run_id, "cancelled", "cancelled by user")
            raise
        finally:
            if proc.poll() is None:
                _terminate(proc)
    relay.pump()
    run = store.get_run(run_id)
    assert run is not None
    errors = _rank_errors(folder)
    # Rank 0 may have recorded a failure that is only the echo of another rank's (a closed connection).
    caused_elsewhere = run.status == "failed" and bool(errors) and not errors[0].startswith("rank 0:")
    if run.status == "running" or caused_elsewhere:  # rank 0 did not finish the run: cancelled, or a rank died
        if cancelled:
            _finish(store, run_id, "cancelled", "cancelled by user")
        else:
            message = errors[0] if errors else (f"the ranks ended with exit code {proc.returncode} before rank 0 "
                                                f"recorded the run; see {log_path}")
            _finish(store, run_id, "failed", message)
        run = store.get_run(run_id)
        assert run is not None
    if run.status != "completed" and run.error:
        reporter.log(run.error, "warning" if run.status == "cancelled" else "error")
    return RunOutcome(run_id, run.status, {**run.summary, "run_id": run_id, "status": run.status}, run.error)


def _finish(store: RunStore, run_id: int, status: str, message: str) -> None:
    run = store.get_run(run_id)
    summary: dict[str, Any] = dict(run.summary) if run is not None and run.summary else {}
    summary["status"] = status
    store.finish_run(run_id, status, summary, message)
