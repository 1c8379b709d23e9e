"""The Sweep tab: a real (tiny) sweep from the GUI, the budget marker, and re-opening stored sweeps.

One real sweep (mlp on 300 tiny images, 4 batch sizes x 2 precisions, 3 timed calls each) is the
expensive part, so its test checks the whole path: job, charts, budget, stored run, re-open.
The other tests insert sweep runs into the store directly, in the shape ``run_sweep`` stores.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyqtgraph as pg
import pytest
from PySide6.QtCore import Qt

from workbench.analysis.sweep import best_within_budget
from workbench.core.store import RunStore
from workbench.gui.jobs import JobManager
from workbench.gui.main_window import MainWindow
from workbench.gui.sweep import SweepView, parse_int_list
from workbench.gui.widgets import cuda_available

TINY_SWEEP_RECIPE = """\
version = 1
name = "tiny-sweep"

[model]
source = "zoo"
zoo = "mlp"

[data]
source = "default"
samples_per_class = 30
augment = false

[batching]
batch_size = 16

[bench]
batch_sizes = [1, 8]
warmup = 1
iters = 3
threads = 1
max_time_s = 2.0
telemetry_hz = 5.0
"""


def _point(kind: str, prec: str, b: int, p50: float, p95: float, thr: float) -> dict[str, Any]:
    return {"kind": kind, "precision": prec, "batch_size": b, "p50_ms": p50, "p95_ms": p95, "throughput": thr,
            "mean_ms": p50, "iters": 3, "ci95_median_ms": [], "peak_mem_bytes": None}


STORED_SWEEP = {
    "spec": {"batch_sizes": [1, 8, 32], "precisions": ["fp32", "bf16"], "latency_budget_ms": 6.0,
             "latency_key": "p95_ms"},
    "inference": [_point("inference", "fp32", 1, 1.0, 1.5, 1000.0), _point("inference", "fp32", 8, 3.0, 4.0, 2700.0),
                  _point("inference", "fp32", 32, 9.0, 12.0, 3600.0),
                  _point("inference", "bf16", 1, 1.2, 1.6, 830.0), _point("inference", "bf16", 8, 2.5, 5.5, 3200.0),
                  _point("inference", "bf16", 32, 7.0, 8.0, 4600.0)],
    "train": [_point("train", "fp32", 8, 10.0, 11.0, 800.0), _point("train", "fp32", 32, 30.0, 33.0, 1070.0)],
    "skipped": [{"what": "fp16", "reason": "fp16 autocast needs a CUDA GPU and this machine has none"}],
    "notes": [],
    "loader": {"batch_size": 16, "speedup": 1.6, "skipped": [],
               "points": [{"label": "0 workers, no cache", "loader_samples_per_s": 900.0, "train_samples_per_s": 500.0,
                           "is_default": True, "verdict": {"kind": "loader-bound", "message": "waits 40 %"}},
                          {"label": "2 workers, cache", "loader_samples_per_s": 4000.0, "train_samples_per_s": 800.0,
                           "is_default": False, "verdict": {"kind": "compute-bound", "message": "waits 2 %"}}],
               "default": {"label": "0 workers, no cache", "verdict": {
                   "kind": "loader-bound", "message": "training waits for data 40 % of the time",
                   "suggestions": ["set loader.num_workers = 2"]}},
               "best": {"label": "2 workers, cache", "train_samples_per_s": 800.0}},
}


def _marker(view: SweepView) -> tuple[float, float] | None:
    return view.tradeoff_plot.marker_position()


def _expected(view: SweepView) -> tuple[float, float] | None:
    """Where the star belongs for the budget the view holds (the spin box rounds to 0.001 ms)."""
    key = view.latency_key()
    best = best_within_budget(view.points("inference"), view.budget_spin.value(), latency_key=key)
    return None if best is None else (pytest.approx(best[key]), pytest.approx(best["throughput"]))


def test_small_sweep_from_the_gui_then_reopen_it(qtbot: Any, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny-sweep.toml"
    recipe.write_text(TINY_SWEEP_RECIPE, encoding="utf-8")
    w = MainWindow(recipe=recipe)
    w.show()
    view = w.sweep_view
    assert view.objectName() == "sweepView"
    w.sweep_action.trigger()
    assert w.tabs.currentWidget() is view
    view.batch_edit.setText("1,2,4,8")
    view.precision_checks["bf16"].setChecked(True)
    view.iters_spin.setValue(3)
    view.steps_spin.setValue(3)
    view.budget_spin.setValue(1e5)
    qtbot.waitUntil(view.run_button.isEnabled, timeout=3_000)
    qtbot.mouseClick(view.run_button, Qt.MouseButton.LeftButton)
    assert w.jobs.busy and w.stop_action.isEnabled() and not view.run_button.isEnabled()
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=120_000)

    sweeps = w.store.list_runs(kind="sweep")
    assert len(sweeps) == 1 and sweeps[0].status == "completed", sweeps[0].error
    run = sweeps[0]
    stored = run.summary["sweep"]["inference"]
    assert view.run_id == run.id and w.error_messages == []
    assert w.findChild(pg.PlotWidget, "sweepTradeoffChart") is view.tradeoff_plot.plot_widget
    # One trade-off point per batch size per precision, exactly the stored numbers.
    series = view.tradeoff_series()
    for prec in ("fp32", "bf16"):
        mine = sorted((p for p in stored if p["precision"] == prec), key=lambda p: p["batch_size"])
        assert [p["batch_size"] for p in mine] == [1, 2, 4, 8]
        assert series[prec][0] == pytest.approx([p["p95_ms"] for p in mine])
        assert series[prec][1] == pytest.approx([p["throughput"] for p in mine])
    assert series["fp16"] == ([], [])
    assert len(view.train_plot.series["fp32"].buffer) >= 3  # batch 1 cannot train (BatchNorm): skipped with why
    assert "Not measured" in view.notes_label.text()

    # The budget marker follows the budget without re-measuring.
    assert _marker(view) == _expected(view)  # everything fits: the highest throughput overall
    fastest = min(p["p95_ms"] for p in stored)
    view.budget_spin.setValue(math.ceil(fastest * 1000) / 1000)
    assert view.marked_point() is not None
    assert _marker(view) == _expected(view)
    view.budget_spin.setValue(math.floor(fastest * 500) / 1000)
    assert _marker(view) is None and view.marked_point() is None
    assert "No point meets" in view.budget_label.text()
    view.budget_key.setCurrentText("p50")
    view.budget_spin.setValue(1e5)
    assert view.marked_point() is not None and _marker(view) == _expected(view)
    assert len(w.store.list_runs(kind="sweep")) == 1  # re-marking never re-ran anything

    # Re-open the stored sweep from the Runs tab: the same points come back.
    view.budget_key.setCurrentText("p95")
    before = view.tradeoff_series()
    view.show_sweep({}, title="cleared")
    assert view.tradeoff_series()["fp32"] == ([], [])
    w.runs_view.select_runs([run.id])
    assert w.runs_view.open_sweep_action.isEnabled()
    w.runs_view.open_sweep_action.trigger()
    assert w.tabs.currentWidget() is view and f"#{run.id}" in view.title_label.text()
    assert view.budget_key.currentText() == "p95"  # the stored sweep's budget setting comes back too
    assert view.tradeoff_series() == before
    assert view.batch_edit.text() == "1,2,4,8"
    w.close()


def test_stored_sweep_restores_charts_budget_and_loader_verdict(qtbot: Any, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    try:
        run_id = store.create_run("stored sweep", "[model]\n", "mlp", [], kind="sweep")
        store.finish_run(run_id, "completed", {"kind": "sweep", "sweep": STORED_SWEEP})
        plain = store.create_run("plain", "[model]\n", "mlp", [])
        jobs = JobManager()
        view = SweepView(store, jobs, lambda: None)
        qtbot.addWidget(view)
        assert view.open_run(run_id)
        assert view.budget_spin.value() == pytest.approx(6.0) and view.budget_key.currentText() == "p95"
        assert view.batch_edit.text() == "1,8,32"
        assert view.tradeoff_series()["bf16"] == ([1.6, 5.5, 8.0], [830.0, 3200.0, 4600.0])
        assert view.marked_point()["precision"] == "bf16" and view.marked_point()["batch_size"] == 8
        assert _marker(view) == (5.5, 3200.0)
        view.budget_spin.setValue(8.0)  # now bf16 batch 32 fits
        assert _marker(view) == (8.0, 4600.0)
        x, y = view.latency_plot.series["fp32:p50"].item.getData()
        assert list(y) == [1.0, 3.0, 9.0]
        assert view.loader_box.isVisibleTo(view)
        assert view.loader_plot.point_count() == 2
        assert "loader-bound" in view.verdict_label.text() and "num_workers = 2" in view.verdict_label.text()
        assert "fp16" in view.notes_label.text()
        files = view.save_all(tmp_path / "charts")
        assert all(p.stat().st_size > 0 for p in files)
        assert (tmp_path / "charts" / "sweep-tradeoff.csv").read_text().startswith("series,latency_p95_ms,")
        assert not view.open_run(plain) and "not a sweep" in view.status_label.text()
    finally:
        store.close()


def test_controls_validate_and_fp16_explains_itself(qtbot: Any, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    try:
        view = SweepView(store, JobManager(), lambda: None)
        qtbot.addWidget(view)
        assert view.batch_edit.text() == "1,8,32,128"
        fp16 = view.precision_checks["fp16"]
        if not cuda_available():
            assert not fp16.isEnabled() and "CUDA" in fp16.toolTip()
        assert view.run_button.isEnabled()
        view.batch_edit.setText("1,x")
        assert not view.run_button.isEnabled() and "'x'" in view.error_label.text()
        view.batch_edit.setText("8, 1,8")
        assert view.build_spec().batch_sizes == [1, 8]
        view.loader_group.setChecked(True)
        view.workers_edit.setText("0,2")
        view.cache_combo.setCurrentText("on")
        spec = view.build_spec()
        assert spec.workers == [0, 2] and spec.cache == [True]
        view.set_recipe_valid(False)
        assert not view.run_button.isEnabled()
        assert view.start_sweep() is None  # no recipe: nothing starts
        with pytest.raises(ValueError):
            parse_int_list("0", minimum=1, what="batch sizes")
    finally:
        store.close()


def test_stop_cancels_a_sweep_and_keeps_it_as_a_cancelled_run(qtbot: Any, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny-sweep.toml"
    recipe.write_text(TINY_SWEEP_RECIPE, encoding="utf-8")
    w = MainWindow(recipe=recipe)
    w.show()
    view = w.sweep_view
    view.batch_edit.setText("1,2,4,8,16,32")
    view.iters_spin.setValue(100000)  # bounded by bench.max_time_s per point: still running when Stop comes
    qtbot.waitUntil(view.run_button.isEnabled, timeout=3_000)
    view.run_button.click()
    qtbot.waitUntil(lambda: view.run_id is not None, timeout=30_000)
    w.stop_button.click()
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=15_000)
    run = w.store.get_run(view.run_id)
    assert run is not None and run.kind == "sweep" and run.status == "cancelled"
    assert "cancelled" in view.status_label.text() and view.run_button.isEnabled()
    w.close()
