"""Start the real app (``workbench.gui.app.main``) on a recipe, start a run, and close the window while
the run is inside a step that ignores cancellation. Prints what it saw as JSON on the last line.

Used by tests/gui/test_shutdown.py in a subprocess: the point is how the *process* ends.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(recipe: str, marker: str) -> int:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QDialog, QLabel

    from workbench.gui import app as gui_app
    from workbench.gui.main_window import MainWindow

    seen: dict[str, object] = {}
    gui_app.create_app()

    def window() -> MainWindow:
        return next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow))

    def start() -> None:
        w = window()
        w.ask_stop_running_job = lambda: True  # the user confirms "Stop it and close the window"
        seen["run_started"] = w.start_run(False) is not None
        QTimer.singleShot(50, close_when_stuck)

    def close_when_stuck() -> None:
        if not Path(marker).exists():  # the run is not inside the slow step yet
            QTimer.singleShot(50, close_when_stuck)
            return
        w = window()
        seen["frozen_objects"] = gc.get_freeze_count()  # the startup heap, left out of later collections
        t0 = time.monotonic()
        seen["close_accepted"] = w.close()
        seen["close_blocked_s"] = round(time.monotonic() - t0, 2)
        seen["closed_at"] = time.monotonic()
        seen["visible_while_waiting"] = w.isVisible()
        dialog = w.findChild(QDialog, "shutdownWaitDialog")
        seen["wait_dialog_visible"] = dialog is not None and dialog.isVisible()
        label = dialog.findChild(QLabel, "shutdownWaitText") if dialog is not None else None
        seen["wait_text"] = label.text() if label is not None else ""
        seen["status_text"] = w.stage_label.text()
        seen["second_close_accepted"] = w.close()  # the user clicks the close button again

    QTimer.singleShot(0, start)
    seen["exit_code"] = gui_app.main(recipe=recipe)
    seen["ended_at"] = time.monotonic()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
