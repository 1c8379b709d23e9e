"""RunsView against a real RunStore: the table, the compare charts, speedups, delete and exports.

Runs are inserted with the store's own create_run/finish_run and the summary shape the pipeline
writes ({"final": ..., "baseline": ..., "stages": [...]}), so the view is tested on real data shapes.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QComboBox, QLineEdit, QTableView, QToolButton, QWidget

from workbench.core.store import RunStore
from workbench.gui.runs import (
    CHARTS,
    COL_STATUS,
    COL_THROUGHPUT,
    COLUMNS,
    EMPTY_MESSAGE,
    RUN_ID_ROLE,
    STATUS_COLOURS,
    RunsView,
)

RECIPE = '[model]\nzoo = "mobilenet_tiny"\n\n[quantize]\nenabled = true\n'


def metrics(acc: float, p50: float, p95: float, thr: float, size: int) -> dict[str, Any]:
    return {"accuracy": acc, "latency_ms_p50": p50, "latency_ms_p95": p95, "throughput": thr,
            "params": 1_200_000, "size_bytes": size, "train_samples_per_s": 850.0,
            "latency_batch": 1, "throughput_batch": 64}


# Throughputs chosen so that sorting them as text ("12,000" < "2,410" < "950") would be wrong.
INT8 = metrics(0.905, 1.9, 2.4, 12000.0, 1_250_000)
FP32 = metrics(0.912, 4.0, 5.0, 2410.0, 5_000_000)
BF16 = metrics(0.910, 8.0, 9.5, 950.0, 2_500_000)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


@pytest.fixture
def runs(store: RunStore) -> dict[str, int]:
    """Four runs; the int8 one is the oldest, so the plain fp32 run must win the default baseline."""
    ids = {}
    ids["int8"] = store.create_run("int8 dynamic", RECIPE, "mobilenet_tiny", ["quantize"])
    store.finish_run(ids["int8"], "completed", {
        "baseline": FP32, "final": INT8,
        "stages": [{"name": "quantize", "before": FP32, "after": INT8, "note": "dynamic int8, QDQ"}]})
    ids["fp32"] = store.create_run("fp32 baseline", "[model]\n", "mobilenet_tiny", [])
    store.finish_run(ids["fp32"], "completed", {"final": FP32})
    ids["bf16"] = store.create_run("bf16 autocast", "[precision]\n", "resnet_small", ["precision"])
    store.finish_run(ids["bf16"], "cancelled", {"final": BF16})
    ids["failed"] = store.create_run("distill teacher", "[distill]\n", "resnet_small", ["distill"])
    store.finish_run(ids["failed"], "failed", {}, error="CUDA out of memory while loading the teacher")
    return ids


@pytest.fixture
def view(qtbot: Any, store: RunStore, runs: dict[str, int]) -> RunsView:
    v = RunsView(store)
    qtbot.addWidget(v)
    v.resize(1200, 800)
    v.show()
    qtbot.waitExposed(v)
    return v


def shown_ids(v: RunsView) -> list[int]:
    return [v.proxy.index(r, 0).data(RUN_ID_ROLE) for r in range(v.proxy.rowCount())]


def row_of(v: RunsView, run_id: int) -> int:
    return shown_ids(v).index(run_id)


def test_table_lists_runs_and_sorts_numerically_by_throughput(view: RunsView, runs: dict[str, int]) -> None:
    table = view.findChild(QTableView, "runsTable")
    assert table is view.table
    assert sorted(shown_ids(view)) == sorted(runs.values())
    assert [view.proxy.headerData(c, Qt.Orientation.Horizontal) for c in range(len(COLUMNS))][0] == "ID"
    r = row_of(view, runs["int8"])
    assert view.proxy.index(r, COL_THROUGHPUT).data() == "12,000.0"
    assert view.proxy.index(r, 5).data() == "90.50"  # accuracy in %

    table.sortByColumn(COL_THROUGHPUT, Qt.SortOrder.AscendingOrder)
    assert shown_ids(view) == [runs["bf16"], runs["fp32"], runs["int8"], runs["failed"]]
    table.sortByColumn(COL_THROUGHPUT, Qt.SortOrder.DescendingOrder)
    assert shown_ids(view) == [runs["int8"], runs["fp32"], runs["bf16"], runs["failed"]]  # blanks stay last


def test_filter_matches_name_model_or_technique(view: RunsView, runs: dict[str, int]) -> None:
    edit = view.findChild(QLineEdit, "runsFilter")
    edit.setText("quantize")
    assert shown_ids(view) == [runs["int8"]]
    edit.setText("RESNET")
    assert sorted(shown_ids(view)) == sorted([runs["bf16"], runs["failed"]])
    edit.clear()
    assert len(shown_ids(view)) == 4


def test_two_selected_runs_show_bars_with_the_stored_numbers(view: RunsView, runs: dict[str, int]) -> None:
    view.select_runs([runs["fp32"], runs["bf16"]])
    assert view.selected_ids() == [runs["fp32"], runs["bf16"]]  # oldest first
    values = view.compare_values()
    assert values["mode"] == "runs"
    assert values["run_ids"] == [runs["fp32"], runs["bf16"]]
    expected = {"throughput": [2410.0, 950.0], "latency_ms_p50": [4.0, 8.0], "accuracy": [91.2, 91.0],
                "size_bytes": [5.0, 2.5]}  # accuracy in %, size in MB: what the charts show
    for chart in CHARTS:
        assert values[chart.key] == pytest.approx(expected[chart.key])
        assert view.charts[chart.key].heights() == pytest.approx(expected[chart.key])
        assert view.charts[chart.key].axis.labels() == ["#2 fp32 baseline", "#3 bf16 autocast"]

    # Charts are created once and updated: the same item objects after a new selection.
    bars = view.charts["throughput"].bars
    view.select_runs([runs["fp32"], runs["bf16"], runs["int8"]])
    assert view.charts["throughput"].bars is bars
    assert view.charts["throughput"].heights() == pytest.approx([12000.0, 2410.0, 950.0])


def test_speedup_against_default_and_chosen_baseline(view: RunsView, runs: dict[str, int]) -> None:
    view.select_runs([runs["int8"], runs["fp32"], runs["bf16"]])
    assert view.baseline_id() == runs["fp32"]  # plain fp32 wins over the older int8 run
    combo = view.findChild(QComboBox, "baselineCombo")
    assert [combo.itemData(i) for i in range(combo.count())] == [runs["int8"], runs["fp32"], runs["bf16"]]
    assert combo.currentData() == runs["fp32"]

    rows = {row["run_id"]: row for row in view.speedup_rows()}
    int8 = rows[runs["int8"]]
    assert int8["latency_speedup"] == pytest.approx(4.0 / 1.9)
    assert int8["throughput_speedup"] == pytest.approx(12000.0 / 2410.0)
    assert int8["accuracy_delta_pts"] == pytest.approx(-0.7)
    assert int8["size_ratio"] == pytest.approx(0.25)
    assert rows[runs["fp32"]]["latency_speedup"] == pytest.approx(1.0)
    r = [row["run_id"] for row in view.speedup_rows()].index(runs["int8"])
    assert view.speedup_table.item(r, 1).text() == "2.11× @ 1"
    assert view.speedup_table.item(r, 3).text() == "-0.70 pts"

    view.set_baseline(runs["bf16"])
    assert combo.currentData() == runs["bf16"]
    assert view.compare_values()["baseline_index"] == 2
    rows = {row["run_id"]: row for row in view.speedup_rows()}
    assert rows[runs["int8"]]["throughput_speedup"] == pytest.approx(12000.0 / 950.0)
    assert rows[runs["fp32"]]["latency_speedup"] == pytest.approx(8.0 / 4.0)
    with pytest.raises(ValueError):
        view.set_baseline(runs["failed"])  # not selected


def test_single_run_compares_its_own_baseline_and_lists_stages(view: RunsView, runs: dict[str, int]) -> None:
    view.select_runs([runs["int8"]])
    values = view.compare_values()
    assert values["mode"] == "baseline_vs_final"
    assert values["throughput"] == pytest.approx([2410.0, 12000.0])
    assert view.speedup_rows()[1]["latency_speedup"] == pytest.approx(4.0 / 1.9)
    assert view.stages_table.rowCount() == 1
    assert view.stages_table.item(0, 0).text() == "quantize"
    assert view.stages_table.item(0, 3).text() == "2,410.0 → 12,000.0"

    view.select_runs([runs["fp32"]])  # no separate baseline: a hint instead of charts
    assert view.compare_values()["mode"] == "none"
    assert view.compare_stack.currentWidget() is view.compare_hint


def test_delete_asks_first_and_declining_keeps_the_run(view: RunsView, store: RunStore,
                                                       runs: dict[str, int], qtbot: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    questions: list[str] = []
    monkeypatch.setattr(view, "confirm", lambda title, text: questions.append(text) or False)
    view.select_runs([runs["bf16"], runs["failed"]])
    assert view.delete_selected() == []
    assert len(questions) == 1 and "bf16 autocast" in questions[0]
    assert store.get_run(runs["bf16"]) is not None

    monkeypatch.setattr(view, "confirm", lambda title, text: True)
    with qtbot.waitSignal(view.runsDeleted, timeout=1000) as blocker:
        view.delete_action.trigger()
    assert sorted(blocker.args[0]) == sorted([runs["bf16"], runs["failed"]])
    assert store.get_run(runs["bf16"]) is None and store.get_run(runs["failed"]) is None
    assert sorted(shown_ids(view)) == sorted([runs["int8"], runs["fp32"]])


def test_csv_export_has_every_row_with_unrounded_numbers(view: RunsView, runs: dict[str, int],
                                                         tmp_path: Path) -> None:
    path = view.export_csv(tmp_path / "runs.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    by_id = {int(r["ID"]): r for r in rows}
    assert sorted(by_id) == sorted(runs.values())
    int8 = by_id[runs["int8"]]
    assert float(int8["Throughput (samples/s)"]) == 12000.0
    assert float(int8["Latency p50 (ms)"]) == 1.9
    assert float(int8["Accuracy (%)"]) == pytest.approx(90.5)
    assert float(int8["Size (MB)"]) == pytest.approx(1.25)
    assert int8["Techniques"] == "quantize"
    assert by_id[runs["failed"]]["Error"].startswith("CUDA out of memory")
    assert by_id[runs["failed"]]["Throughput (samples/s)"] == ""


def test_export_dialog_path_and_png_overwrite_prompt(view: RunsView, runs: dict[str, int], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out" / "table.csv"
    monkeypatch.setattr(view, "ask_save_path", lambda *a: target)
    view.export_csv_action.trigger()
    assert target.read_text().startswith("ID,Name,Model")

    view.select_runs([runs["fp32"], runs["int8"]])
    chart_csv = tmp_path / "compare.csv"
    monkeypatch.setattr(view, "ask_save_path", lambda *a: chart_csv)
    view.save_chart_csv_action.trigger()
    rows = list(csv.reader(chart_csv.open(newline="")))
    assert len(rows) == 3 and rows[1][0] == str(runs["int8"])

    folder = tmp_path / "charts"
    folder.mkdir()
    existing = view.chart_png_paths(folder)[0]
    existing.write_bytes(b"keep me")
    asked: list[str] = []
    monkeypatch.setattr(view, "ask_folder", lambda caption: folder)
    monkeypatch.setattr(view, "confirm", lambda title, text: asked.append(text) or False)
    view.save_png_action.trigger()
    assert asked and existing.name in asked[0]
    assert existing.read_bytes() == b"keep me"  # declined: nothing overwritten


def test_open_recipe_emits_the_recipe_text(view: RunsView, runs: dict[str, int], qtbot: Any) -> None:
    view.select_runs([runs["int8"]])
    assert view.open_recipe_action.isEnabled()
    with qtbot.waitSignal(view.openRecipeRequested, timeout=1000) as blocker:
        view.open_recipe_action.trigger()
    assert blocker.args == [RECIPE]
    view.select_runs([runs["int8"], runs["fp32"]])
    assert not view.open_recipe_action.isEnabled()  # one recipe at a time


def test_failed_rows_show_the_error_and_status_colour(view: RunsView, runs: dict[str, int]) -> None:
    r = row_of(view, runs["failed"])
    for col in (0, COL_STATUS, COL_THROUGHPUT):
        assert "CUDA out of memory" in view.proxy.index(r, col).data(Qt.ItemDataRole.ToolTipRole)
    assert view.proxy.index(r, COL_STATUS).data(Qt.ItemDataRole.ForegroundRole) == STATUS_COLOURS["failed"]
    cancelled = view.proxy.index(row_of(view, runs["bf16"]), COL_STATUS)
    assert cancelled.data(Qt.ItemDataRole.ForegroundRole) == STATUS_COLOURS["cancelled"]
    ok = row_of(view, runs["fp32"])
    assert view.proxy.index(ok, COL_STATUS).data(Qt.ItemDataRole.ToolTipRole) is None


def test_png_export_writes_non_empty_images(view: RunsView, runs: dict[str, int], tmp_path: Path) -> None:
    view.select_runs([runs["fp32"], runs["int8"], runs["bf16"]])
    paths = view.save_charts_png(tmp_path / "charts")
    assert len(paths) == len(CHARTS)
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = QImage(str(path))
        assert image.width() >= 800 and image.height() > 100


def test_empty_state_then_refresh_shows_new_runs(qtbot: Any, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "empty.sqlite")
    try:
        v = RunsView(store)
        qtbot.addWidget(v)
        assert v.stack.currentWidget() is v.empty_label
        assert v.empty_label.text() == EMPTY_MESSAGE
        run_id = store.create_run("first", "", "mlp", [])
        store.finish_run(run_id, "completed", {"final": FP32})
        v.refresh()
        assert v.stack.currentWidget() is not v.empty_label
        assert shown_ids(v) == [run_id]
    finally:
        store.close()


def test_refresh_keeps_the_selection(view: RunsView, store: RunStore, runs: dict[str, int]) -> None:
    view.select_runs([runs["fp32"], runs["int8"]])
    view.set_baseline(runs["int8"])
    extra = store.create_run("new", "", "mlp", [])
    view.refresh()
    assert extra in shown_ids(view)
    assert view.selected_ids() == [runs["int8"], runs["fp32"]]
    assert view.baseline_id() == runs["int8"]


def test_every_control_has_a_tooltip(view: RunsView, runs: dict[str, int]) -> None:
    view.select_runs([runs["fp32"], runs["int8"]])
    controls: list[QWidget] = []
    for kind in (QToolButton, QLineEdit, QComboBox, QTableView):
        controls += view.findChildren(kind)
    controls += [c.widget for c in view.charts.values()]
    assert len(controls) >= 12
    missing = [f"{type(w).__name__} {w.objectName()!r}" for w in controls
               if not w.toolTip() and not isinstance(w.parent(), QComboBox | QLineEdit)]
    assert not missing


PAIRED_SPEEDUP = {
    "paired": True, "reliable": False, "rounds": 10,
    "reason": "other processes used 1.10 CPU cores on average while timing (more than 0.25)",
    "latency": {"1": {"ratio": 5.5, "ci95": [5.1, 5.9], "baseline_ms": 4.4, "final_ms": 0.8}},
    "throughput": {"64": {"ratio": 4.0, "ci95": [3.8, 4.2], "baseline_per_s": 2000.0, "final_per_s": 8000.0}},
    "steps": [{"name": "runtime switch", "detail": "torch eager fp32 → onnxruntime fp32", "ratio": 3.5,
               "ci95": [3.3, 3.7], "batch": 1},
              {"name": "quantize", "detail": "onnxruntime fp32 → onnxruntime static INT8", "ratio": 1.57,
               "ci95": [1.5, 1.6], "batch": 1}],
}


def test_single_run_with_paired_timing_shows_ci_split_and_reliability(view: RunsView, store: RunStore) -> None:
    run_id = store.create_run("static int8", RECIPE, "small_cnn", ["quantize"])
    store.finish_run(run_id, "completed", {"baseline": FP32, "final": INT8, "speedup": PAIRED_SPEEDUP,
                                           "stages": [{"name": "quantize", "before": FP32, "after": INT8}]})
    view.refresh()
    view.select_runs([run_id])
    row = view.speedup_rows()[1]
    assert row["latency_speedup"] == pytest.approx(5.5)  # the paired ratio, not 4.0 / 1.9 from separate timings
    assert row["latency_ci95"] == [5.1, 5.9]
    assert view.speedup_table.item(1, 1).text() == "5.50× @ 1 (CI 5.10–5.90×)"
    banner = view.proof_banner_values()
    assert banner["kind"] == "paired" and banner["warn"] and banner["reliable"] is False
    assert "runtime switch (torch eager fp32 → onnxruntime fp32) 3.50x × quantize" in banner["text"]
    assert "Unreliable: other processes used 1.10 CPU cores" in view.proof_label.text()
    assert not view.proof_label.isHidden()


def test_runs_compared_across_runs_are_unpaired_and_batch_mismatch_is_not_comparable(
        view: RunsView, store: RunStore) -> None:
    at_8 = {**FP32, "latency_batch": 8, "throughput_batch": 8}
    a = store.create_run("fp32 at batch 1", "[model]\n", "small_cnn", [])
    store.finish_run(a, "completed", {"final": FP32})
    b = store.create_run("fp32 at batch 8", "[model]\n", "small_cnn", [])
    store.finish_run(b, "completed", {"final": at_8})
    view.refresh()
    view.select_runs([a, b])
    view.set_baseline(a)
    rows = {r["run_id"]: r for r in view.speedup_rows()}
    assert rows[b]["latency_speedup"] is None
    assert "batch 1, 64 vs 8" in rows[b]["latency_note"]
    i = [r["run_id"] for r in view.speedup_rows()].index(b)
    assert view.speedup_table.item(i, 1).text() == "not comparable"
    banner = view.proof_banner_values()
    assert banner["kind"] == "unpaired" and banner["warn"]
    assert "measured in separate runs at different times" in banner["text"]


# ------------------------------------------------------------------------------------------- pinned baseline


def test_a_pinned_baseline_stays_on_top_and_joins_every_comparison(view: RunsView, runs: dict[str, int],
                                                                    qtbot: Any) -> None:
    view.select_runs([runs["int8"]])
    assert view.pin_action.isEnabled()
    with qtbot.waitSignal(view.pinnedBaselineChanged) as blocker:
        view.pin_selected()
    assert blocker.args == [runs["int8"]] and not view.pin_action.isEnabled() and view.unpin_action.isEnabled()
    for column, order in ((0, Qt.SortOrder.AscendingOrder), (0, Qt.SortOrder.DescendingOrder),
                          (COL_THROUGHPUT, Qt.SortOrder.AscendingOrder), (1, Qt.SortOrder.DescendingOrder)):
        view.table.sortByColumn(column, order)
        assert shown_ids(view)[0] == runs["int8"]  # whichever way the table is sorted
    rest = shown_ids(view)[1:]
    assert rest == sorted(rest, key=lambda i: view.model.run_at(view.model.row_of(i)).name.casefold(), reverse=True)
    top = view.proxy.index(0, 1)
    assert top.data().startswith("⚑ ") and top.data(Qt.ItemDataRole.FontRole).bold()
    assert "pinned baseline" in top.data(Qt.ItemDataRole.ToolTipRole)
    # Two other runs selected: the pinned one is compared too, and it is the baseline (over the plain fp32 run).
    view.select_runs([runs["fp32"], runs["bf16"]])
    assert view.compare_values()["run_ids"][0] == runs["int8"] and view.baseline_id() == runs["int8"]
    assert view.report_run_ids()[0] == runs["int8"]
    # One run without a baseline of its own is compared with the pinned one instead of showing a hint.
    view.select_runs([runs["fp32"]])
    assert view.compare_values()["run_ids"] == [runs["int8"], runs["fp32"]]
    view.unpin_action.trigger()
    assert view.pinned_baseline() is None and view.compare_values()["mode"] == "none"


def test_the_pinned_baseline_is_kept_across_sessions_and_dropped_when_deleted(qtbot: Any, tmp_path: Path) -> None:
    from workbench.gui.main_window import MainWindow

    store = RunStore(tmp_path / "runs.sqlite")
    first = store.create_run("plain", "[model]\n", "small_cnn", [])
    store.finish_run(first, "completed", {"final": FP32})
    other = store.create_run("int8", "[model]\n", "small_cnn", ["int8-static"])
    store.finish_run(other, "completed", {"final": INT8})
    window = MainWindow(store=store)
    qtbot.addWidget(window)
    window.runs_view.select_runs([first])
    window.runs_view.pin_selected()
    window.close()
    again = MainWindow(store=store)
    qtbot.addWidget(again)
    assert again.runs_view.pinned_baseline() == first
    again.runs_view.select_runs([first])
    again.runs_view.confirm = lambda *_a: True  # type: ignore[method-assign]
    assert again.runs_view.delete_selected() == [first]
    assert again.runs_view.pinned_baseline() is None
    assert str(again.settings.value("runs/pinnedBaseline", "")) == ""
    again.close()
    store.close()


def test_sort_arrows_point_the_way_the_rows_go(view: RunsView) -> None:
    """▲ when the smallest value is on top, ▼ when the largest is (Fusion alone draws them the other way)."""
    from workbench.gui.app import create_app

    create_app()  # the app's style
    header = view.table.horizontalHeader()

    def arrow_widest_row_at_bottom() -> bool:
        view.table.repaint()
        image = header.grab().toImage()
        x0 = header.sectionViewportPosition(0)
        rows = []
        for y in range(image.height()):
            dark = [x for x in range(x0, x0 + header.sectionSize(0)) if QColor(image.pixel(x, y)).lightness() < 110]
            rows.append(len(dark))
        filled = [i for i, n in enumerate(rows) if n]
        assert filled, "no sort arrow drawn"
        widest = max(rows)
        return rows.index(widest) > (filled[0] + filled[-1]) / 2

    view.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    assert arrow_widest_row_at_bottom()  # ▲
    view.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    assert not arrow_widest_row_at_bottom()  # ▼


def test_techniques_show_what_ran(view: RunsView, store: RunStore) -> None:
    asked = ["bf16", "prune-structured-0.3", "int8"]
    failed = store.create_run("stopped early", "[model]\n", "small_cnn", asked)
    store.finish_run(failed, "failed", {"techniques": asked, "techniques_ran": ["bf16"]}, error="model file gone",
                     techniques=["bf16"])
    nothing = store.create_run("failed at load", "[model]\n", "small_cnn", asked)
    store.finish_run(nothing, "failed", {"techniques": asked, "techniques_ran": []}, error="no such file",
                     techniques=[])
    done = store.create_run("quantized", "[model]\n", "small_cnn", ["int8"])
    store.finish_run(done, "completed", {"techniques": ["int8"], "techniques_ran": ["int8-static"]},
                     techniques=["int8-static"])
    view.refresh()
    col = 3
    cell = view.proxy.index(row_of(view, failed), col)
    assert cell.data() == "bf16"
    assert cell.data(Qt.ItemDataRole.ToolTipRole) == ("The recipe also asked for prune-structured-0.3, int8, which did "
                                                      "not run (the run failed first).")
    assert view.proxy.index(row_of(view, nothing), col).data() == "none ran"
    quantized = view.proxy.index(row_of(view, done), col)
    assert quantized.data() == "int8-static" and quantized.data(Qt.ItemDataRole.ToolTipRole) is None
