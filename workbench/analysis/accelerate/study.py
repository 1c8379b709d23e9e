"""The Optuna study behind a search: where it is stored, how workers share it, and how killed trials come back.

The study lives in an Optuna RDB storage: by default a SQLite file beside the runs database
(``accelerate.sqlite``), or any SQLAlchemy URL (PostgreSQL, MySQL) so workers on several machines
share one search. Finished trials are committed as they finish, so killing a process loses only the
trial it was running. That trial is failed and queued again: at once when its worker ran on this
machine and is gone (``recover_dead_workers``), or by Optuna's heartbeat after ``GRACE_S`` when it
ran elsewhere.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from workbench.core.paths import workbench_home
from workbench.errors import WorkbenchError, short

#: Seconds between a running trial's heartbeats, and how long without one marks it dead (other machines).
HEARTBEAT_S = 20
GRACE_S = 90
#: The objectives' directions: speed (higher is better), accuracy drop in points (lower is better).
DIRECTIONS = ("maximize", "minimize")
#: A killed trial is retried once; a configuration that kills its worker twice is left failed.
MAX_RETRY = 1


def default_storage_url() -> str:
    """A SQLite file beside the runs database."""
    return f"sqlite:///{(workbench_home() / 'accelerate.sqlite').as_posix()}"


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def open_storage(url: str) -> Any:
    """An Optuna RDB storage with heartbeats; a URL that cannot be opened is one line saying what works."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    _quiet_optuna()
    if "://" not in url:
        raise WorkbenchError(f"--storage {short(url)!r}: not a database URL; use sqlite:///path/to/file.sqlite, or "
                             "postgresql://user:password@host/db for several machines")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != url:
            parent = Path(path).expanduser().parent
            if not parent.is_dir():
                raise WorkbenchError(f"--storage {short(url)}: folder {short(parent)} does not exist; create it or "
                                     "use another path")
        engine_kwargs = {"connect_args": {"timeout": 60}}  # two workers on one file wait instead of failing
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    except (ImportError, ModuleNotFoundError) as exc:
        raise WorkbenchError(f"--storage {short(url)}: the database driver is not installed ({short(exc)}); "
                             "install it (e.g. psycopg2-binary for PostgreSQL) or use a sqlite:/// URL") from None
    except Exception as exc:  # sqlalchemy's errors (bad URL, refused connection, not a database)
        raise WorkbenchError(f"--storage {short(url)}: cannot open the study storage "
                             f"({type(exc).__name__}: {short(str(exc).splitlines()[0] if str(exc) else '')}); "
                             "check the URL, or use sqlite:///path/to/file.sqlite") from None


def create_or_load(name: str, storage: Any, constraints: Callable[[Any], Sequence[float]], seed: int) -> Any:
    """The study ``name`` (created when new), with a constrained multi-objective TPE sampler."""
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constraints_func=constraints,
                                         n_startup_trials=4)
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=list(DIRECTIONS),
                               load_if_exists=True)


def load_existing(name: str, storage: Any, constraints: Callable[[Any], Sequence[float]], seed: int) -> Any:
    """A study that must exist already (a worker joins; it never starts a search of its own)."""
    import optuna

    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        hint = f"studies there: {', '.join(names[:8])}" if names else "it holds no study yet"
        raise WorkbenchError(f"study {name!r} not found in {short(storage.url)}; {hint} (start one with "
                             "`workbench accelerate RECIPE --storage URL`)")
    return create_or_load(name, storage, constraints, seed)


def worker_identity() -> dict[str, Any]:
    """Who runs a trial: host, pid and the process start time (a reused pid is not mistaken for it)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def _alive(identity: dict[str, Any]) -> bool:
    try:
        proc = psutil.Process(int(identity["pid"]))
        return abs(proc.create_time() - float(identity["started"])) < 1.0
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def recover_dead_workers(study: Any) -> list[int]:
    """Fail and re-queue the running trials whose worker process on this machine has ended.

    Returns the numbers of the trials recovered. Trials of other machines are left to the heartbeat.
    """
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    recovered = []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.user_attrs.get("worker") or {}
        if who.get("host") != host or _alive(who):
            continue
        try:  # the reason first: a finished trial takes no more attributes
            storage.set_trial_user_attr(t._trial_id, "reason", "its worker process ended mid-trial (killed?); "
                                        "queued again")
            if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):  # another worker finished it meanwhile
            continue
        if int(t.user_attrs.get("retries", 0)) < MAX_RETRY:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number,
                                                           "retries": int(t.user_attrs.get("retries", 0)) + 1})
        recovered.append(t.number)
    return recovered
