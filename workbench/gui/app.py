"""Application start-up: QApplication, crash safety nets, and ``main()``.

* ``sys.excepthook``: an exception escaping a slot on the GUI thread is logged (errors.log and the
  log dock) and shown in a dialog; the app keeps running instead of aborting.
* ``faulthandler`` writes native crashes (segfaults, aborts) to ``WORKBENCH_HOME/logs/crash.log``;
  its file object stays open for the life of the process, as faulthandler requires. On the next
  start a non-empty crash log is offered to the user, then rotated to ``crash-<timestamp>.log``.
* ``main(screenshot_dir=...)`` renders the window's key states to PNG files and exits.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from PySide6.QtCore import QCoreApplication, QEventLoop, Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from workbench.core.paths import workbench_home
from workbench.gui.widgets import SortArrowStyle

_CRASH_FILE: IO[str] | None = None  # kept open: faulthandler writes into it when the process dies


def crash_log_path() -> Path:
    return workbench_home() / "logs" / "crash.log"


#: Libraries Qt's xcb platform plugin loads (Qt 6.5+ aborts without libxcb-cursor), and Debian's packages.
XCB_LIBRARIES = {"xcb-cursor": "libxcb-cursor0", "xkbcommon-x11": "libxkbcommon-x11-0", "xcb-icccm": "libxcb-icccm4",
                 "xcb-keysyms": "libxcb-keysyms1", "xcb-image": "libxcb-image0",
                 "xcb-render-util": "libxcb-render-util0"}


def missing_xcb_packages(find: Any = None) -> list[str]:
    """Debian packages Qt's xcb platform needs that this Linux machine lacks ([] elsewhere or off xcb).

    Qt aborts with a core dump when one is missing; checking first lets the app say what to install.
    """
    import ctypes.util
    import os

    if not sys.platform.startswith("linux"):
        return []
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return []  # offscreen, wayland, eglfs ...
    if not platform and os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("DISPLAY"):
        return []
    find = find or ctypes.util.find_library
    return [pkg for lib, pkg in XCB_LIBRARIES.items() if find(lib) is None]


def create_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication (reused if one exists, e.g. under pytest-qt)."""
    app = QApplication.instance()
    if app is None:
        QApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(argv if argv is not None else sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setOrganizationName("AccelerationWorkbench")
    app.setApplicationName("Workbench")
    app.setApplicationDisplayName("Acceleration Workbench")
    if not isinstance(app.style(), SortArrowStyle):
        app.setStyle(SortArrowStyle())  # Fusion, with sort arrows that match the order
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True, foreground="#333")
    return app


# ------------------------------------------------------------------------------------------ crashes
def previous_crash_report() -> str | None:
    """Text of the last native crash, if the previous session left one."""
    path = crash_log_path()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text if text.strip() else None


def rotate_crash_log() -> Path | None:
    """Move a non-empty crash.log aside (crash-<timestamp>.log) so it is offered only once."""
    path = crash_log_path()
    if not path.exists() or path.stat().st_size == 0:
        return None
    target = path.with_name(f"crash-{time.strftime('%Y%m%d-%H%M%S')}.log")
    n = 1
    while target.exists():
        target = path.with_name(f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{n}.log")
        n += 1
    os.replace(path, target)
    return target


def ask_show_crash_report(text: str) -> bool:
    """Blocking question; tests replace it."""
    answer = QMessageBox.question(None, "Workbench crashed last time",
                                  "The previous session ended with a crash. Show the crash report?",
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def show_crash_report(text: str, rotated: Path | None) -> None:
    box = QMessageBox(QMessageBox.Icon.Warning, "Crash report",
                      f"The crash report was saved as {rotated}." if rotated else "Crash report")
    box.setDetailedText(text)
    box.exec()


def offer_previous_crash(ask: Callable[[str], bool] | None = None,
                         show: Callable[[str, Path | None], None] | None = None) -> Path | None:
    """If the last session crashed, offer its report, then rotate the log. Returns the rotated path."""
    text = previous_crash_report()
    if text is None:
        return None
    wants = (ask or ask_show_crash_report)(text)
    rotated = rotate_crash_log()
    if wants:
        (show or show_crash_report)(text, rotated)
    return rotated


def enable_crash_log() -> Path:
    """Point faulthandler at crash.log (file kept open for the process lifetime)."""
    global _CRASH_FILE
    path = crash_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if _CRASH_FILE is None or _CRASH_FILE.closed:
        _CRASH_FILE = path.open("a", encoding="utf-8")
    faulthandler.enable(file=_CRASH_FILE, all_threads=True)
    return path


# ----------------------------------------------------------------------------------- excepthook
def install_excepthook(window_getter: Callable[[], Any]) -> Callable[..., None]:
    """Log and show exceptions that escape Qt slots instead of letting the process die."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            QCoreApplication.quit()
            return
        from workbench.core.pipeline import log_internal_error

        err = exc if exc.__traceback__ is not None else exc.with_traceback(tb)
        path = log_internal_error(err)
        line = f"{exc_type.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(details)
        window = window_getter()
        if window is None or threading.current_thread() is not threading.main_thread():
            return
        try:
            window.log(f"internal error: {line} (traceback in {path})", "error")
            window.show_error_dialog("Internal error", f"{line}\n\nThe app keeps running; the traceback "
                                     f"was written to {path}.", details)
        except Exception:  # the hook itself must never raise
            pass

    sys.excepthook = hook
    return hook


# ----------------------------------------------------------------------------------- screenshots
def _wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    app = QApplication.instance()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _settle(seconds: float = 0.3) -> None:
    _wait(lambda: False, seconds)


def _shot(widget: QWidget, folder: Path, name: str) -> Path:
    _settle(0.2)
    path = folder / name
    widget.grab().save(str(path))
    print(f"screenshot: {path}")
    return path


def take_screenshots(window: Any, folder: Path) -> list[Path]:
    """Render the key states: default recipe, a real quickstart run with filled plots, a validation
    error, the runs view, and the precision panel's CPU limits."""
    folder.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    window.resize(1480, 940)
    window.show()
    _wait(lambda: window.panel("model").summary is not None, 60)
    _wait(lambda: window.panel("data").thumbs.count > 0, 60)
    window.nav.setCurrentRow(0)
    shots.append(_shot(window, folder, "01-recipe-default.png"))

    # A real run of the default (quickstart) recipe, exactly as `make run` opens it (~30 s on 2 cores).
    window.revalidate()
    job = window.start_run(False)
    if job is not None:
        _wait(lambda: window.dashboard.throughput.point_count() > 3, 120)
        window.nav.setCurrentRow(1)
        shots.append(_shot(window, folder, "02-run-in-progress.png"))
        _wait(lambda: not window.jobs.busy, 300)
        _settle(0.5)
    window.tabs.setCurrentIndex(0)
    shots.append(_shot(window, folder, "03-run-finished-dashboard.png"))

    window.nav.setCurrentRow(2)  # the precision panel on this machine
    for i, p in enumerate(window.panels):
        if p.section_name == "precision":
            window.nav.setCurrentRow(i)
    shots.append(_shot(window, folder, "04-precision-panel.png"))

    window.tabs.setCurrentIndex(1)
    window.runs_view.refresh()
    shots.append(_shot(window, folder, "05-runs-view.png"))

    shots += accelerate_screenshots(window, folder)

    # Validation-error state: a Python-file model without a path, and a bad kwargs field.
    window.tabs.setCurrentIndex(0)
    model = window.panel("model")
    model.fields["source"].setter("python")
    model.fields["kwargs"].widget.setText("{depth: 6")
    model.sync_states()
    window.revalidate()
    window.nav.setCurrentRow(0)
    shots.append(_shot(window, folder, "06-validation-error.png"))
    return shots


def accelerate_screenshots(window: Any, folder: Path) -> list[Path]:
    """The demo path, for real: the Accelerate button, Start with the defaults (Quick), trials arriving, the card.

    Prints how long Start took to reach the Before → After card (the demo's goal: two minutes).
    """
    shots: list[Path] = []
    view = window.accelerate_view
    window.accelerate_action.trigger()
    view.choose_quick()
    t0 = time.monotonic()
    if view.start() is None:
        return shots
    _wait(lambda: "finished" in view.status.text() and view.table.rowCount() > 1, 240)
    shots.append(_shot(window, folder, "10-accelerate-running.png"))
    _wait(lambda: not window.jobs.busy, 600)
    print(f"accelerate: Start to Before → After card in {time.monotonic() - t0:.0f} s "
          f"(card shown: {view.card.isVisible()})")
    _settle(0.5)
    shots.append(_shot(window, folder, "11-accelerate-card.png"))
    return shots


# ---------------------------------------------------------------------------------------- main
def freeze_startup_heap() -> None:
    """Leave the startup heap out of every later garbage collection.

    The window runs a full collection on the GUI thread after each job (so no job thread ever frees a
    Qt object); its cost grows with every object alive, and the ~240k objects of Qt, torch and the
    window itself live as long as the app. Frozen (``gc.freeze``), they are no longer scanned: the
    pause falls by about 0.12 s per job (``benchmarks/bench_gc_pause.py``; what remains after the
    first quantizing run is what that run imported).
    """
    gc.collect()
    gc.freeze()


def main(recipe: str | None = None, screenshot_dir: str | None = None) -> int:
    """Start the app. With ``screenshot_dir``, render the key states to PNG and exit."""
    missing = missing_xcb_packages() if QApplication.instance() is None else []
    if missing:
        print(f"workbench: Qt's window system libraries are missing ({', '.join(missing)}); install them with: "
              f"sudo apt-get install {' '.join(missing)}  (or run headless: QT_QPA_PLATFORM=offscreen)",
              file=sys.stderr)
        return 2
    app = create_app()
    enable_crash_log()
    from workbench.gui.main_window import MainWindow

    holder: dict[str, Any] = {}
    install_excepthook(lambda: holder.get("window"))
    if screenshot_dir is None:
        offer_previous_crash()
    window = MainWindow(recipe=recipe)
    holder["window"] = window
    app.aboutToQuit.connect(window.shutdown)
    if screenshot_dir is not None:
        try:
            take_screenshots(window, Path(screenshot_dir))
        finally:
            window.shutdown()
            window.close()
        return 0
    window.show()
    QTimer.singleShot(0, window.raise_)
    freeze_startup_heap()
    code = int(app.exec())
    finish_jobs_before_exit(app, window)
    return code


def finish_jobs_before_exit(app: QApplication, window: Any) -> None:
    """After the event loop: never let the process end under a running job thread (Qt would abort).

    Closing the window already waits for its jobs; this covers the other ways out of the event
    loop (``QApplication.quit``, Ctrl-C, the session ending). Jobs are asked to stop; one inside a
    step that cannot be interrupted is waited for, with the window still painting and a line on
    stderr saying what the app waits for. Then the window finishes its shutdown (settings, store).
    """
    from workbench.gui.jobs import running_jobs, wait_for_jobs

    if not window.shutdown(0.0):
        names = ", ".join(window.waiting_for()) or ", ".join(job.name for job in running_jobs())
        print(f"workbench: waiting for {names} to finish its current step before exiting…", file=sys.stderr,
              flush=True)
        wait_for_jobs(poll=lambda: app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50))
        app.processEvents()
        window.shutdown(0.0)
