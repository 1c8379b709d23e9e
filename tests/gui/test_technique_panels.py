"""Technique panels (prune, distill, quantize, export): round-trips, validation, the sensitivity job,
the bundle-overwrite confirmation, and issue #4's acceptance test: a chained recipe runs end to end
from the GUI and the stored run records every stage.
"""

from __future__ import annotations

import gc
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from PySide6.QtCore import QItemSelectionModel, Qt

from workbench.recipe import (
    DistillSection,
    ExportSection,
    PruneSection,
    QuantizeSection,
    Recipe,
    load_recipe,
    loads_recipe,
)
from workbench.techniques.distill.panel import DistillPanel
from workbench.techniques.export.panel import ExportPanel
from workbench.techniques.prune.panel import PrunePanel
from workbench.techniques.quantize.panel import QuantizePanel

CHAIN = Path(__file__).resolve().parents[2] / "resources" / "recipes" / "chain.toml"

TINY = """\
version = 1
name = "tiny"

[model]
source = "zoo"
zoo = "small_cnn"
width = 0.5

[data]
source = "default"
samples_per_class = 30
augment = false

[train]
epochs = 0

[batching]
batch_size = 32
eval_batch_size = 128

[bench]
batch_sizes = [1]
warmup = 1
iters = 3
threads = 1  # 2 busy cores: one torch thread avoids OpenMP spin-waits that make each step 100x slower
telemetry_hz = 2.0
"""

SECTIONS: dict[str, tuple[type, Any]] = {
    "prune": (PrunePanel, PruneSection(method="unstructured", ratio=0.3, importance="taylor", scope="global",
                                       skip_layers=["features.0", "classifier.1"], steps=3, finetune_epochs=4,
                                       finetune_distill=True, finetune_lr=3e-4, finetune_temperature=2.5,
                                       finetune_alpha=0.4, round_to=8)),
    "distill": (DistillPanel, DistillSection(teacher="zoo:mobilenet", teacher_weights="/w/teacher.safetensors",
                                             teacher_width=1.5, teacher_epochs=3, temperature=6.0, alpha=0.55,
                                             control=True, cache_teacher_logits=False)),
    "quantize": (QuantizePanel, QuantizeSection(method="static", per_channel=False, calibration="entropy",
                                                calibration_samples=128, preprocess=False, max_accuracy_drop=1.5,
                                                exclude=["features.0"])),
    "export": (ExportPanel, ExportSection(formats=["safetensors", "onnx"], opset=17, bundle_dir="bundles/x",
                                          force=True, parity_batches=2, ort_threads=2, ort_optimization="basic")),
}


@pytest.fixture(autouse=True, scope="module")
def _collect_at_module_end() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def _collect_on_the_main_thread() -> None:
    """Free earlier tests' windows and jobs here, on the GUI thread.

    Left to chance, Python's cyclic GC may run on a job thread and destroy a JobManager's ``Job``
    QObjects there while the GUI thread deletes a window: a PySide GIL/Qt-mutex deadlock (seen once
    in tests/gui/test_panels.py as a hang).
    """
    gc.collect()


def _show(window: Any, section: str) -> Any:
    """Select a panel in the window's navigation (buttons only take clicks on the visible page)."""
    panel = window.panel(section)
    window.nav.setCurrentRow(window.panels.index(panel))
    return panel


def _round_trip(panel: Any, name: str, section: Any) -> Any:
    panel.load(Recipe(**{name: section}))
    out = Recipe()
    panel.apply(out)
    return getattr(out, name)


@pytest.mark.parametrize("name", list(SECTIONS))
def test_panel_round_trips_its_section_and_enable_toggles_none(qtbot, name: str) -> None:
    cls, section = SECTIONS[name]
    panel = cls()
    qtbot.addWidget(panel)
    assert panel.objectName() == f"panel_{name}"
    assert set(panel.fields) == set(type(section).model_fields)
    for field, binding in panel.fields.items():
        assert binding.widget.toolTip(), f"{name}.{field} has no tooltip"
    assert _round_trip(panel, name, section) == section
    panel.enabled_check.setChecked(False)
    out = Recipe(**{name: section})
    panel.apply(out)
    assert getattr(out, name) is None
    panel.load(Recipe())  # section off: defaults shown, body greyed out
    assert panel.values() is None and not panel.body.isEnabled()
    panel.enabled_check.setChecked(True)
    out = Recipe()
    panel.apply(out)
    assert isinstance(getattr(out, name), type(section))


def test_distill_teacher_kinds_round_trip(qtbot, tmp_path: Path) -> None:
    panel = DistillPanel()
    qtbot.addWidget(panel)
    model_py = tmp_path / "teacher.py"
    model_py.write_text("import torch\n")
    for teacher in ("zoo:resnet", "run:42", str(model_py)):
        section = DistillSection(teacher=teacher)
        assert _round_trip(panel, "distill", section) == section
    assert "not a completed run" in panel.teacher.run.currentText()  # run 42 is not in any store here
    # turning distillation on starts from a usable teacher, not from an error
    panel.load(Recipe())
    panel.enabled_check.setChecked(True)
    assert panel.values()["teacher"] == "zoo:resnet"
    assert "dark knowledge" in panel.description


def test_prune_note_is_visible_and_says_unstructured_is_not_faster(qtbot) -> None:
    panel = PrunePanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.load(Recipe(prune=PruneSection(method="unstructured")))
    assert panel.note.isVisible()
    assert "does not make dense kernels faster or files smaller" in panel.note.text()
    assert "structured" in panel.note.text() and "removes" in panel.note.text()
    assert not panel.importance.isEnabled()  # only structured pruning ranks channels


def test_quantize_panel_shows_vnni_and_int8_caveats(qtbot) -> None:
    from workbench.techniques.quantize.methods import cpu_has_vnni

    panel = QuantizePanel()
    qtbot.addWidget(panel)
    text = panel.cpu_note.text()
    assert {True: "has VNNI", False: "no VNNI", None: "Cannot tell"}[cpu_has_vnni()] in text
    assert "not always faster" in panel.description
    combo = panel.method
    assert "GPU" in combo.itemData(combo.findData("fp16"), Qt.ItemDataRole.ToolTipRole)
    assert "calibration" in combo.itemData(combo.findData("static"), Qt.ItemDataRole.ToolTipRole)
    panel.load(Recipe(quantize=QuantizeSection(method="dynamic")))
    assert not panel.fields["calibration_samples"].widget.isEnabled()


def test_invalid_values_show_errors_next_to_controls_and_disable_run(window, qtbot) -> None:
    run = window.findChild(object, "runButton")
    assert run.isEnabled()
    prune, distill, export = window.panel("prune"), window.panel("distill"), window.panel("export")
    prune.enabled_check.setChecked(True)
    qtbot.keyClicks(prune.skip, "features.0, not a name!")
    qtbot.waitUntil(lambda: "skip_layers" in prune.errors(), timeout=3_000)
    assert "not a module name" in prune.errors()["skip_layers"]
    assert prune.fields["skip_layers"].error_label.isVisibleTo(prune)  # (its page is not shown)
    assert not run.isEnabled()
    prune.enabled_check.setChecked(False)  # a disabled section is not checked
    qtbot.waitUntil(run.isEnabled, timeout=3_000)

    distill.enabled_check.setChecked(True)
    distill.teacher.kind.setCurrentIndex(distill.teacher.kind.findData("file"))
    distill.teacher.path.setText("teacher.onnx")
    distill.teacher.path.textEdited.emit("teacher.onnx")
    qtbot.waitUntil(lambda: "teacher" in distill.errors(), timeout=3_000)
    assert "ONNX" in distill.errors()["teacher"] and not run.isEnabled()
    distill.enabled_check.setChecked(False)

    export.enabled_check.setChecked(True)
    export.formats.checks["onnx"].setChecked(False)
    qtbot.waitUntil(lambda: "formats" in export.errors(), timeout=3_000)
    assert "at least one format" in export.errors()["formats"] and not run.isEnabled()
    export.formats.checks["onnx"].setChecked(True)
    qtbot.waitUntil(run.isEnabled, timeout=3_000)
    assert window.current_recipe().export.formats == ["onnx"]


def test_sensitivity_runs_as_a_job_then_exclude_selected(window, qtbot, tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    assert window.open_recipe_file(path)
    prune = _show(window, "prune")
    assert prune.values() is None  # pruning off: the analysis still uses this panel's ratio
    qtbot.mouseClick(prune.analyse_button, Qt.MouseButton.LeftButton)
    assert window.jobs.busy and prune.stop_button.isEnabled(), prune.sens_status.text()  # a job, not the GUI thread
    qtbot.mouseClick(prune.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=30_000)
    assert "stopped" in prune.sens_status.text() and prune.sensitivity is None

    qtbot.mouseClick(prune.analyse_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: prune.sensitivity is not None, timeout=60_000)
    rows = prune.sensitivity.rows
    assert len(rows) >= 2
    assert window.findChild(object, "sensitivityChart") is prune.chart
    assert len(prune.bars.opts["y"]) == len(rows) == prune.table.rowCount()  # one bar per group
    assert [prune.table.item(i, 0).text() for i in range(len(rows))] == [r.group for r in rows]
    sel = prune.table.selectionModel()
    flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
    for r in (0, 1):
        sel.select(prune.table.model().index(r, 0), flags)
    assert prune.exclude_button.isEnabled()
    qtbot.mouseClick(prune.exclude_button, Qt.MouseButton.LeftButton)
    names = [rows[0].group, rows[1].group]
    assert prune.fields["skip_layers"].getter() == names and prune.is_section_enabled()
    qtbot.waitUntil(lambda: window.current_recipe() is not None and window.current_recipe().prune is not None
                    and window.current_recipe().prune.skip_layers == names, timeout=3_000)


def test_export_overwrite_declined_means_no_run(window, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "keep.txt").write_text("earlier results")
    export = window.panel("export")
    export.enabled_check.setChecked(True)
    export.fields["bundle_dir"].setter(str(bundle))
    export.sync_states()
    assert export.bundle_note.isVisibleTo(export) and "asked" in export.bundle_note.text()
    asked: list[Path] = []
    export.ask_overwrite_bundle = lambda p: asked.append(p) or False  # type: ignore[method-assign]
    assert window.start_run() is None
    assert asked == [bundle] and not window.jobs.busy
    assert (bundle / "keep.txt").exists() and not export.force.isChecked()


def _chain_recipe(folder: Path, bundle: Path) -> Path:
    """resources/recipes/chain.toml (prune + KD fine-tune) shrunk to seconds, continued by quantize + export."""
    data = tomllib.loads(CHAIN.read_text(encoding="utf-8"))
    data["model"].update(zoo="small_cnn", width=0.5)
    data["data"].update(samples_per_class=30, augment=False)
    data["train"].update(epochs=1)
    data["batching"].update(batch_size=32, eval_batch_size=128)
    data["bench"] = {"batch_sizes": [1], "warmup": 1, "iters": 3, "telemetry_hz": 2.0,
                    "threads": 1}  # one torch thread: fast and steady on a shared 2-core machine
    data["prune"].update(finetune_epochs=1)
    data["quantize"] = {"method": "dynamic"}
    data["export"] = {"formats": ["onnx"], "parity_batches": 1, "bundle_dir": str(bundle)}
    path = folder / "chain_small.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def test_chained_recipe_runs_end_to_end_from_the_gui(window, qtbot, tmp_path: Path) -> None:
    """Issue #4 acceptance: prune (KD fine-tune) → quantize → export from the Run button; every stage recorded."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "old.txt").write_text("previous bundle")
    path = _chain_recipe(tmp_path, bundle)
    assert window.open_recipe_file(path)
    assert dumps(window.build_recipe()) == dumps(load_recipe(path))
    export = window.panel("export")
    export.ask_overwrite_bundle = lambda p: True  # type: ignore[method-assign]
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    assert window.jobs.busy
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=240_000)
    runs = window.store.list_runs()
    assert runs and runs[0].status == "completed", runs[0].error if runs else "no run"
    run = runs[0]
    assert [s["name"] for s in run.summary["stages"]] == ["prune", "quantize", "export"]
    assert loads_recipe(run.recipe).export.force  # forced for this run only, after the confirmation
    assert not export.force.isChecked() and not window.current_recipe().export.force
    assert (bundle / "model.onnx").exists() and not (bundle / "old.txt").exists()
    prune_stage = run.summary["stages"][0]
    assert prune_stage["before"]["latency_ms_p50"] and prune_stage["after"]["latency_ms_p50"]
    assert "latency p50" in window.panel("prune").last_run.text()  # the measured proof, shown in the panel
    teacher = window.panel("distill").teacher
    teacher.refresh_runs()
    assert teacher.run.findData(f"run:{run.id}") >= 0  # completed runs with weights can be teachers


def dumps(recipe: Recipe) -> str:
    from workbench.recipe import dumps_recipe

    return dumps_recipe(recipe)


def test_sensitivity_threshold_selects_only_groups_over_it(qtbot) -> None:
    """A group whose drop is exactly the threshold (up to float rounding) is neither red nor selected."""
    from workbench.techniques.prune.sensitivity import SensitivityResult, SensitivityRow

    def row(group: str, drop: float) -> SensitivityRow:
        return SensitivityRow(group, "Conv2d", 1, 8, 4, 100, 0.9 - drop / 100, drop)

    panel = PrunePanel()
    qtbot.addWidget(panel)
    exact_one_point = (0.9 - 0.89) * 100  # 1.0000000000000009
    panel.show_sensitivity(SensitivityResult(0.5, "l2", 0.9, 1000,
                                             rows=[row("hot", 3.0), row("edge", exact_one_point), row("cool", 0.1)]))
    panel.threshold.setValue(1.0)
    panel.select_above_threshold()
    assert panel.selected_groups() == ["hot"]
    assert "validation accuracy" in panel.sens_status.text()
