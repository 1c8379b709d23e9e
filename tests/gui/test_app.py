"""Start-up safety nets: crash-log rotation and the GUI excepthook."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from workbench.gui import app


def test_previous_crash_is_offered_then_rotated(workbench_home: Path) -> None:
    log = app.crash_log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("Fatal Python error: Segmentation fault\n")
    shown = []
    rotated = app.offer_previous_crash(ask=lambda text: True, show=lambda text, path: shown.append((text, path)))
    assert rotated is not None and rotated.name.startswith("crash-") and rotated.exists()
    assert shown and "Segmentation fault" in shown[0][0]
    assert not log.exists() or log.stat().st_size == 0
    assert app.offer_previous_crash(ask=lambda text: True) is None  # offered only once


def test_excepthook_logs_and_shows_dialog(qapp, workbench_home: Path, monkeypatch) -> None:
    calls = []

    class FakeWindow:
        def log(self, message, level="info"):
            calls.append(("log", message, level))

        def show_error_dialog(self, title, message, details=""):
            calls.append(("dialog", message))

    old = sys.excepthook
    try:
        hook = app.install_excepthook(lambda: FakeWindow())
        try:
            raise ValueError("slot exploded")
        except ValueError:
            hook(*sys.exc_info())
    finally:
        sys.excepthook = old
    assert any(c[0] == "dialog" and "slot exploded" in c[1] for c in calls)
    assert (workbench_home / "logs" / "errors.log").read_text().count("slot exploded") >= 1


def test_missing_xcb_libraries_are_named_with_their_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.gui.app import missing_xcb_packages

    if not sys.platform.startswith("linux"):
        pytest.skip("Qt's xcb platform is Linux-only")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    present = {"xcb-icccm", "xcb-keysyms", "xcb-image", "xcb-render-util", "xkbcommon-x11"}
    assert missing_xcb_packages(lambda lib: f"lib{lib}.so" if lib in present else None) == ["libxcb-cursor0"]
    assert missing_xcb_packages(lambda lib: f"lib{lib}.so") == []
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # no window system: nothing to load
    assert missing_xcb_packages(lambda lib: None) == []
