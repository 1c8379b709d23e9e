"""The main window end to end: real short runs, stop, failures, broken files, saving, closing."""

from __future__ import annotations

import math
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPlainTextEdit, QProgressBar, QTableView, QToolButton

from workbench.gui.jobs import live_threads
from workbench.gui.main_window import MainWindow
from workbench.gui.plots import NO_GPU_TEXT
from workbench.recipe import load_recipe


def _click(qtbot, window: MainWindow, name: str) -> None:
    button = window.findChild(QToolButton, name)
    assert button is not None and button.isEnabled(), name
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_constructs_with_no_arguments(qtbot) -> None:
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.name_edit.text() == "quickstart"
    assert w.findChild(QPlainTextEdit, "logView").isReadOnly()
    assert w.findChild(QProgressBar, "jobProgress") is not None
    assert w.device_label.text().startswith("Device:")
    for name in ("panel_model", "panel_data", "panel_precision", "panel_batching", "panel_loader", "panel_train"):
        assert w.findChild(object, name) is not None, name
    w.close()


def test_short_run_fills_plots_and_runs_table(window, qtbot) -> None:
    window.panel("batching").fields["batch_size"].widget.setValue(16)
    qtbot.waitUntil(lambda: window.run_action.isEnabled(), timeout=3_000)
    _click(qtbot, window, "runButton")
    assert window.jobs.busy and window.stop_action.isEnabled() and not window.run_action.isEnabled()
    qtbot.waitUntil(lambda: bool(window.store.list_runs()), timeout=30_000)
    window.tabs.setCurrentWidget(window.runs_view)  # opening the Runs tab mid-run lists the running run
    live = window.runs_view.findChild(QTableView, "runsTable").model()
    assert live.rowCount() == 1 and any(live.index(0, c).data() == "running" for c in range(live.columnCount()))
    window.tabs.setCurrentIndex(0)
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=240_000)
    runs = window.store.list_runs()
    assert len(runs) == 1 and runs[0].status == "completed", runs[0].error
    assert "batch_size = 16" in runs[0].recipe
    assert runs[0].final["throughput"] > 0 and runs[0].final["latency_ms_p50"] > 0
    table = window.runs_view.findChild(QTableView, "runsTable")
    model = table.model()
    assert model.rowCount() == 1
    texts = [model.index(0, c).data() for c in range(model.columnCount())]
    assert "completed" in texts
    assert f"{runs[0].final['throughput']:,.1f}" in texts
    dash = window.dashboard
    assert dash.throughput.series["train"].buffer and dash.throughput.series["inference"].buffer
    assert len(dash.cpu.series["cpu"].buffer) > 0
    x, _y = dash.throughput.series["train"].item.getData()
    assert x is not None and len(x) > 0  # the redraw timer pushed the buffer into the curve
    x, _y = dash.throughput.series["inference"].item.getData()
    assert x is not None and len(x) > 0  # sparse markers are not clipped away
    assert not dash.timer.isActive()
    assert window.progress.format() == "Done"
    assert "completed" in window.log_view.toPlainText()
    assert window.error_messages == []
    if not dash.gpu_present:
        assert dash.gpu.overlay_text() == NO_GPU_TEXT


def test_stop_ends_the_job_within_two_seconds(qtbot, long_recipe) -> None:
    w = MainWindow(recipe=long_recipe)
    w.show()
    _click(qtbot, w, "runButton")
    qtbot.waitUntil(lambda: len(w.dashboard.throughput.series["train"].buffer) > 0, timeout=120_000)
    job = w.jobs.current()
    t0 = time.monotonic()
    _click(qtbot, w, "stopButton")
    assert job.wait(2.0), "job did not end within 2 s of Stop"
    assert time.monotonic() - t0 < 2.0
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=5_000)
    assert w.store.list_runs()[0].status == "cancelled"
    assert w.run_action.isEnabled()
    w.close()


def test_broken_recipe_file_shows_error_and_keeps_app_usable(window, tmp_path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\n[batching]\nbatch_size = "big"\n[model\n')
    assert not window.open_recipe_file(broken)
    assert len(window.error_messages) == 1 and "broken.toml" in window.error_messages[0]
    assert "\n" not in window.error_messages[0]
    assert "broken.toml" in window.log_view.toPlainText()
    bad_value = tmp_path / "bad_value.toml"
    bad_value.write_text('[batching]\nbatch_size = 0\n')
    assert not window.open_recipe_file(bad_value)
    assert "batching.batch_size" in window.error_messages[-1]
    assert window.name_edit.text() == "short"  # previous recipe still loaded
    assert window.run_action.isEnabled()
    assert window.build_recipe().batching.batch_size == 32


def test_job_that_raises_shows_dialog_and_records_failed_run(window, qtbot, monkeypatch) -> None:
    import workbench.core.data as data

    def boom(section):
        raise RuntimeError("synthetic failure for the test")

    monkeypatch.setattr(data, "load_dataset", boom)
    _click(qtbot, window, "runButton")
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=60_000)
    qtbot.waitUntil(lambda: len(window.error_messages) > 0, timeout=5_000)
    assert "synthetic failure" in window.error_messages[-1]
    run = window.store.list_runs()[0]
    assert run.status == "failed" and "synthetic failure" in run.error
    assert "synthetic failure" in window.log_view.toPlainText()
    assert window.run_action.isEnabled()  # the app keeps working
    # a generic (non-run) job that raises also gets the dialog
    job = window.jobs.start("Exploding job", lambda r, c: 1 / 0)
    qtbot.waitSignal(job.finished, timeout=10_000).wait() if job.is_running() else None
    qtbot.waitUntil(lambda: any("ZeroDivisionError" in m for m in window.error_messages), timeout=10_000)


def test_closing_during_a_job_asks_stops_and_leaves_no_thread(qtbot, long_recipe) -> None:
    w = MainWindow(recipe=long_recipe)
    w.show()
    _click(qtbot, w, "runButton")
    qtbot.waitUntil(lambda: w.jobs.current() is not None and w._run_id is not None, timeout=60_000)
    asked = []
    w.ask_stop_running_job = lambda: asked.append("no") or False
    assert not w.close()  # user said no: still open, job still running
    assert w.isVisible() and w.jobs.busy
    w.ask_stop_running_job = lambda: asked.append("yes") or True
    assert w.close()
    assert asked == ["no", "yes"]
    assert not live_threads()
    assert not w.dashboard.timer.isActive()


def test_save_never_overwrites_another_file_without_asking(window, tmp_path) -> None:
    target = tmp_path / "saved.toml"
    assert window.save_recipe_file(target)
    assert load_recipe(target).name == "short"
    other = tmp_path / "other.toml"
    other.write_text("# precious\n")
    window.ask_overwrite = lambda path: False
    assert not window.save_recipe_file(other)
    assert other.read_text() == "# precious\n"
    window.ask_overwrite = lambda path: True
    assert window.save_recipe_file(other)
    assert load_recipe(other).name == "short"
    asked = []
    window.ask_overwrite = lambda path: asked.append(path) or False
    assert window.save_recipe_file(other)  # saving over its own file does not ask
    assert asked == []


def test_settings_remember_last_recipe_and_geometry(qtbot, short_recipe, workbench_home: Path) -> None:
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_recipe_file(short_recipe)
    w.close()
    assert (workbench_home / "settings.ini").exists()
    w2 = MainWindow()
    qtbot.addWidget(w2)
    assert w2.recipe_path == short_recipe.resolve() or w2.recipe_path == short_recipe
    assert w2.name_edit.text() == "short"
    w2.close()


def test_recipe_from_runs_view_loads_into_panels(window) -> None:
    text = Path(window.recipe_path).read_text().replace('name = "short"', 'name = "from-run"')
    window.runs_view.openRecipeRequested.emit(text)
    assert window.name_edit.text() == "from-run"
    assert window.recipe_path is None


def test_plots_save_png_and_csv(window, tmp_path) -> None:
    plot = window.dashboard.throughput
    plot.append("train", 0.0, 10.0)
    plot.append("train", 1.0, 20.0)
    png = plot.save_png(tmp_path / "throughput.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    rows = (plot.save_csv(tmp_path / "throughput.csv")).read_text().splitlines()
    assert rows[0] == "series,time_s,value" and rows[1:] == ["training,0,10", "training,1,20"]


def test_closing_with_unsaved_edits_asks_and_cancel_keeps_the_window(window, qtbot, monkeypatch) -> None:
    window.name_edit.clear()
    qtbot.keyClicks(window.name_edit, "edited")  # an edit the user has not saved
    assert window._dirty
    answers = iter(["cancel", "save"])
    monkeypatch.setattr(window, "ask_save_before_close", lambda: next(answers))
    saved: list[bool] = []
    monkeypatch.setattr(window, "action_save", lambda: saved.append(True) or True)
    window.close()
    assert window.isVisible() and not window._shut_down  # Cancel: nothing closed, nothing lost
    window.close()
    assert saved == [True] and window._shut_down  # Save: saved first, then closed


def test_choosing_onnx_clears_a_python_path_and_stops_training(window) -> None:
    model = window.panel("model")
    model.fields["source"].setter("python")
    model.fields["path"].setter("/models/net.py")
    assert window.panel("train").fields["epochs"].getter() == 1
    i = model.source.findData("onnx")
    model.source.setCurrentIndex(i)
    model.source.activated.emit(i)  # what a user's pick in the list sends
    assert model.fields["path"].getter() == ""  # a .py file is not an ONNX model
    assert window.panel("train").fields["epochs"].getter() == 0  # ONNX is benchmarked, not trained
    model.fields["path"].setter("/models/net.onnx")
    j = model.source.findData("export")
    model.source.setCurrentIndex(j)
    model.source.activated.emit(j)
    assert model.fields["path"].getter() == ""


def test_throughput_axis_is_linear_until_the_values_span_more_than_30x(qtbot) -> None:
    from workbench.gui.plots import Dashboard

    dash = Dashboard(gpu_present=False)
    qtbot.addWidget(dash)
    dash.start()
    dash.throughput.append("train", 1.0, 400.0)
    dash.throughput.append("inference", 2.0, 900.0)
    dash.redraw()
    assert not dash.throughput.plot_item.ctrl.logYCheck.isChecked() and "log" not in dash.throughput.title_label.text()
    dash.throughput.append("inference", 3.0, 40_000.0)  # batched inference, 100x training
    dash.redraw()
    assert dash.throughput.plot_item.ctrl.logYCheck.isChecked() and "log scale" in dash.throughput.title_label.text()
    dash.start()  # a new run starts linear again
    assert not dash.throughput.plot_item.ctrl.logYCheck.isChecked()
    dash._telemetry(1.0, {"cpu_percent": 60.0, "proc_cpu_percent": 100.0 * dash._cores})
    assert list(dash.cpu.series["proc_cpu"].buffer.arrays()[1]) == [100.0]  # all cores busy = 100 %
    dash.stop()


def test_inference_points_are_named_by_runtime_and_batch(qtbot) -> None:
    from workbench.gui.jobs import MetricEvent
    from workbench.gui.plots import Dashboard

    dash = Dashboard(gpu_present=False)
    qtbot.addWidget(dash)
    dash.start()
    dash.add_metrics([MetricEvent("train", 1, {"samples_per_s": 400.0}, 100.0),
                      MetricEvent("measure:baseline@torch fp32", 1, {"throughput": 300.0, "batch_size": 1.0}, 101.0),
                      MetricEvent("measure:final@onnxruntime", 64, {"throughput": 900.0, "batch_size": 64.0}, 102.0)])
    dash.redraw()
    assert dash.inference_labels() == ["torch fp32 · b1", "onnxruntime · b64"]
    # Legends sit in a row under each title, never over the data.
    assert all(p.plot_item.legend is None for p in dash.plots.values())
    assert dash.throughput.legend_entries() == ["training", "inference (benchmark)"]
    assert dash.cpu.legend_entries() == ["machine CPU %", "this app's CPU % (of all cores)", "RAM used %"]
    item = dash._inference_labels[1][2]
    assert item.pos().y() == 900.0
    dash.add_metrics([MetricEvent("measure:final@onnxruntime", 256, {"throughput": 40_000.0, "batch_size": 256.0},
                                  103.0)])
    dash.redraw()  # the values now span > 30x: log axis, and the labels move to log10 of their values
    assert dash.throughput.plot_item.ctrl.logYCheck.isChecked()
    assert abs(item.pos().y() - math.log10(900.0)) < 1e-9
    dash.start()
    assert dash.inference_labels() == []
    dash.stop()
