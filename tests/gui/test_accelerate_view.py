"""The Accelerate flow as a user clicks it: toolbar button, Start with the Quick budget, the Before → After card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyqtgraph as pg
import pytest
from PySide6.QtCore import Qt

from tests.helpers import ACCELERATE_MINI
from workbench.analysis import accelerate as accelerate_engine
from workbench.gui.main_window import MainWindow

MINI = ACCELERATE_MINI


@dataclass
class _ThreeTrials(accelerate_engine.SearchSettings):
    trials: int = 3


def test_accelerate_button_to_before_after_card(qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Quick budget (two minutes) stays the ceiling; on this tiny model the search ends after three
    # finished trials, so the test does not wait out a time budget.
    monkeypatch.setattr(accelerate_engine, "SearchSettings", _ThreeTrials)
    recipe = tmp_path / "mini.toml"
    recipe.write_text(MINI, encoding="utf-8")
    w = MainWindow(recipe=recipe)
    w.show()
    view = w.accelerate_view
    qtbot.mouseClick(w.accelerate_button, Qt.MouseButton.LeftButton)  # click 1: the toolbar button
    assert w.tabs.currentWidget() is view
    assert view.budget.currentText() == "Quick (2 min)" and view.max_drop.value() == 1.0
    qtbot.waitUntil(view.start_button.isEnabled, timeout=3_000)
    qtbot.mouseClick(view.start_button, Qt.MouseButton.LeftButton)  # click 2: Start
    assert w.jobs.busy and not view.start_button.isEnabled() and w.stop_action.isEnabled()
    # Trials arrive while it runs: queued ones first, then each finished one with its figures.
    qtbot.waitUntil(lambda: "1 trial(s) finished" in view.status.text(), timeout=60_000)
    assert w.jobs.busy and view.table.rowCount() >= 2, view.status.text()
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=120_000)
    assert view.card.isVisible(), view.status.text()

    searches = w.store.list_runs(kind="accelerate")
    assert len(searches) == 1 and searches[0].status == "completed", searches[0].error
    acc = searches[0].summary["accelerate"]
    best = acc["best"]
    assert acc["card"] in view.card_title.text().replace("&gt;", ">")
    assert f"trial {best['number']}" in view.card_body.text() and "Split by cause" in view.card_body.text()
    done = [t for t in acc["trials"] if t["state"] == "complete"]
    assert acc["stopped"] == "3 trials finished" and acc["settings"]["time_budget_s"] == 120.0
    assert len(done) == 3 and view.table.rowCount() == len(acc["trials"])
    # The chart holds exactly the finished trials, the chosen one starred.
    assert w.findChild(pg.PlotWidget, "acceleratePareto") is view.chart
    xs, ys = view._others.getData()
    assert sorted(ys) == pytest.approx(sorted(t["speedup"] for t in done))
    bx, by = view._best.getData()
    assert list(by) == pytest.approx([best["speedup"]]) and list(bx) == pytest.approx([-best["drop_points"]])
    # Every trial is a run of its own, named from what it did, listed in the Runs tab.
    names = {r.name for r in w.store.list_runs()}
    assert all(f"mlp · {t['label']}" in names for t in done)

    # A stored search re-opens from the Runs tab with the same card.
    view.card.setVisible(False)
    assert w.open_accelerate_run(searches[0].id) and view.card.isVisible()
    assert w.error_messages == []
