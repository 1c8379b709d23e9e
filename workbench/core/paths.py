"""Where Workbench keeps its data: ``$WORKBENCH_HOME`` or the user data directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from workbench.errors import WorkbenchError, short


def workbench_home() -> Path:
    """Root for the run store, artifacts, generated datasets and crash logs."""
    env = os.environ.get("WORKBENCH_HOME")
    if env:
        root = Path(env).expanduser()
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support" / "AccelerationWorkbench"
    elif os.name == "nt":
        root = Path(os.environ.get("LOCALAPPDATA", Path.home())) / "AccelerationWorkbench"
    else:
        root = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "acceleration-workbench"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WorkbenchError(f"WORKBENCH_HOME = {short(root)}: is a file, not a folder; point WORKBENCH_HOME at a "
                             "folder (it holds the runs database, artifacts and datasets)") from None
    except OSError as exc:
        raise WorkbenchError(f"WORKBENCH_HOME = {short(root)}: cannot create this folder "
                             f"({exc.strerror or type(exc).__name__}); point WORKBENCH_HOME at a writable folder") from None
    return root


def datasets_dir() -> Path:
    d = workbench_home() / "datasets"
    d.mkdir(parents=True, exist_ok=True)
    return d


def artifacts_dir(run_id: int) -> Path:
    d = workbench_home() / "artifacts" / f"run-{run_id:06d}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def quickstart_recipe_path() -> Path:
    """The recipe ``make run`` opens and the headless fallback runs."""
    from workbench import RESOURCES

    return RESOURCES / "recipes" / "quickstart.toml"
