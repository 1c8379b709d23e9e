"""Atomic file writes: a temp file in the same folder, then os.replace, so readers never see half a file."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (reading it means setting it: done under a lock, restored at once)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_with(path: Path, writer: Callable[[Path], object]) -> None:
    """Call ``writer(tmp_path)`` to produce the file, then move it over ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        # mkstemp makes 0600 files: give the result the mode a plain open() would (or the replaced file's).
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def regular_file(path: str | Path, what: str, hint: str, error: type[Exception] | None = None) -> Path:
    """``path`` as an existing, non-empty regular file, else one clear error naming it.

    FIFOs, sockets and devices are refused before anything opens them: reading one blocks forever
    (or never ends, like /dev/zero). ``error`` defaults to ``WorkbenchError``.
    """
    from workbench.errors import WorkbenchError

    err = error or WorkbenchError
    p = Path(path).expanduser()
    if not str(path).strip():
        raise err(f"no {what} given; {hint}")
    if not p.exists():
        raise err(f"{p}: {what} not found; {hint}")
    if p.is_dir():
        raise err(f"{p}: is a folder, not a {what}; {hint}")
    if not p.is_file():
        raise err(f"{p}: not a regular file (a pipe, socket or device); {hint}")
    if p.stat().st_size == 0:
        raise err(f"{p}: {what} is empty; {hint}")
    return p


def check_output_file(path: str | Path, flag: str, force: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written or would silently replace a file.

    ``flag`` names the option in messages (e.g. ``--out``). A folder, something that is not a regular
    file, an existing file without ``force``, a parent that is a file, or a place this process may not
    write are each one ``WorkbenchError``. Missing parent folders are fine (created when writing).
    """
    from workbench.errors import WorkbenchError, short

    p = Path(path).expanduser()
    where = f"{flag} {short(p)}"
    try:
        if p.is_dir():
            raise WorkbenchError(f"{where}: is a folder; give a file path, e.g. {short(p / 'report.html')}")
        if p.exists() and not p.is_file():
            raise WorkbenchError(f"{where}: not a regular file (a pipe, socket or device); give a file path")
        if p.exists() and not force:
            raise WorkbenchError(f"{where}: already exists; pass --force to replace it, or choose another path")
        ancestor = p.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise WorkbenchError(f"{where}: {short(ancestor)} is a file, not a folder; choose a path inside a folder")
        fd, probe = tempfile.mkstemp(prefix=".wb-write-check-", dir=ancestor)  # os.access lies for root and ACLs
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise WorkbenchError(f"{where}: cannot write there ({exc.strerror or type(exc).__name__}); "
                             "choose a folder you can write to") from None
    return p
