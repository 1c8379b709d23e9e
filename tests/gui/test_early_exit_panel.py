"""The early-exit panel: its fields round-trip, and it charts a finished run's accuracy-vs-compute curve."""

from __future__ import annotations

from typing import Any

import pytest

from workbench.gui.panels import panel_classes
from workbench.techniques.early_exit.panel import EarlyExitPanel


def _summary() -> dict[str, Any]:
    curve = [{"threshold": t, "accuracy": 0.8 + 0.1 * t, "mean_macs": 100 * (0.3 + 0.7 * t), "exit_shares": [],
              "macs_saved": 0.7 * (1 - t)} for t in (0.0, 0.5, 1.0)]
    return {"run_id": 7, "stages": [{"name": "early_exit", "threshold": 0.5,
                                     "validation": {"curve": curve, **curve[1], "full_accuracy": 0.9},
                                     "eval": {"full_macs": 100, "accuracy": 0.86, "macs_saved": 0.35},
                                     "latency": {"paired": {"ratio": 1.6, "ci95": [1.5, 1.7]}}}]}


def test_panel_is_registered_and_shows_a_runs_curve(qtbot: Any) -> None:
    assert EarlyExitPanel in panel_classes()
    panel = EarlyExitPanel()
    qtbot.addWidget(panel)
    assert panel.shown_curve() == {}
    panel.show_run_result({"run_id": 1, "stages": [{"name": "quantize"}]})  # no early-exit stage: nothing changes
    assert panel.shown_curve() == {}
    panel.show_run_result(_summary())
    assert panel.shown_curve() == {"run_id": 7, "points": 3, "chosen": 0.5}
    xs, ys = panel.curve.getData()
    assert list(xs) == pytest.approx([30.0, 65.0, 100.0]) and list(ys) == pytest.approx([80.0, 85.0, 90.0])
    assert "1.60x faster" in panel.curve_note.text()
