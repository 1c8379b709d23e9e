"""Recipe panels: registry, full coverage of recipe fields, CPU limits, validation, summaries."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from workbench.gui.panels import panel_classes
from workbench.gui.widgets import cuda_available
from workbench.recipe import Recipe, dumps_recipe, load_recipe


def test_registry_has_the_core_panels() -> None:
    names = [f"panel_{c.section_name}" for c in panel_classes()]
    for expected in ("panel_model", "panel_data", "panel_train", "panel_precision", "panel_batching",
                     "panel_loader", "panel_bench"):
        assert expected in names


def test_every_field_of_each_paneled_section_has_a_control(window) -> None:
    for panel in window.panels:
        assert set(panel.fields) == set(panel.section_model().model_fields), panel.section_name
        for name, binding in panel.fields.items():
            assert binding.widget.toolTip(), f"{panel.section_name}.{name} has no tooltip"


def test_load_then_build_round_trips(window, short_recipe) -> None:
    original = load_recipe(short_recipe)
    assert dumps_recipe(window.build_recipe()) == dumps_recipe(original)
    assert window.findChild(object, "panel_batching") is not None


def test_precision_panel_disables_cuda_only_options_on_cpu(window) -> None:
    if cuda_available():
        pytest.skip("this machine has CUDA")
    p = window.panel("precision")
    combo = p.fields["autocast"].widget
    i = combo.findData("fp16")
    item = combo.model().item(i)
    assert not item.isEnabled()
    assert "CUDA" in item.toolTip() and "bf16" in item.toolTip()
    assert "native bf16" in item.toolTip()
    assert combo.model().item(combo.findData("bf16")).isEnabled()
    tf32 = p.fields["tf32"].widget
    assert not tf32.isEnabled() and "CUDA" in tf32.toolTip()
    assert not window.panel("loader").fields["pin_memory"].widget.isEnabled()
    assert "CUDA" in window.panel("loader").fields["pin_memory"].widget.toolTip()


def test_fp16_recipe_on_cpu_shows_error_at_the_control(window, tmp_path) -> None:
    if cuda_available():
        pytest.skip("this machine has CUDA")
    text = (tmp_path / "short.toml").read_text() + '\n[precision]\nautocast = "fp16"\ndevice = "auto"\n'
    path = tmp_path / "fp16.toml"
    path.write_text(text)
    assert window.open_recipe_file(path)
    assert not window.run_action.isEnabled()
    assert "CUDA" in window.panel("precision").errors()["autocast"]


def test_validation_error_disables_run_and_shows_message(window, qtbot) -> None:
    run = window.findChild(object, "runButton")
    assert run.isEnabled()
    model = window.panel("model")
    combo = model.fields["source"].widget
    combo.setCurrentIndex(combo.findData("python"))  # a .py model needs a path
    qtbot.waitUntil(lambda: not run.isEnabled(), timeout=3_000)
    err = model.fields["path"].error_label
    assert err.isVisible() and "model.path is required" in err.text()
    assert window.error_banner.isVisible()
    kwargs = model.fields["kwargs"].widget
    qtbot.keyClicks(kwargs, "{depth: 6")  # not JSON: its own message, and the path message stays
    qtbot.waitUntil(lambda: "kwargs" in model.errors(), timeout=3_000)
    assert "not valid JSON" in model.errors()["kwargs"] and "path" in model.errors()
    assert "⚠" in window.nav.item(0).text()
    kwargs.clear()
    kwargs.textEdited.emit("")
    combo.setCurrentIndex(combo.findData("zoo"))
    qtbot.waitUntil(run.isEnabled, timeout=3_000)
    assert not err.isVisible() and not model.errors()


def test_unparseable_field_and_range_error_map_to_controls(window, qtbot) -> None:
    bench = window.panel("bench")
    edit = bench.fields["batch_sizes"].widget
    qtbot.keyClicks(edit, ", x")
    qtbot.waitUntil(lambda: "batch_sizes" in bench.errors(), timeout=3_000)
    assert "comma-separated" in bench.errors()["batch_sizes"]
    assert not window.run_action.isEnabled()
    edit.setText("1, 8")
    edit.textEdited.emit("1, 8")
    train = window.panel("train")
    lr = train.fields["lr"].widget
    lr.setText("0")
    lr.textEdited.emit("0")
    qtbot.waitUntil(lambda: "lr" in train.errors(), timeout=3_000)
    assert "greater than 0" in train.errors()["lr"]
    assert "batch_sizes" not in bench.errors()
    lr.setText("1e-3")
    lr.textEdited.emit("1e-3")
    qtbot.waitUntil(window.run_action.isEnabled, timeout=3_000)


def test_model_summary_is_computed_in_background_and_follows_choice(window, qtbot) -> None:
    model = window.panel("model")
    qtbot.waitUntil(lambda: model.summary is not None, timeout=30_000)
    first = model.summary.params
    assert model.layer_table.rowCount() > 3
    zoo = model.fields["zoo"].widget
    zoo.setCurrentIndex(zoo.findData("mlp"))
    qtbot.waitUntil(lambda: model.summary is not None and model.summary.params != first, timeout=30_000)
    assert any(model.layer_table.item(r, 1).text() == "Linear" for r in range(model.layer_table.rowCount()))


def test_dropped_files_set_source_or_weights(window) -> None:
    model = window.panel("model")
    assert model.use_file("/tmp/net.onnx")
    assert model.fields["source"].getter() == "onnx" and model.fields["path"].getter() == "/tmp/net.onnx"
    assert model.use_file("/tmp/w.safetensors")
    assert model.fields["weights"].getter() == "/tmp/w.safetensors"
    assert not model.use_file("/tmp/readme.txt")


def test_data_previews_show_thumbnails(window, qtbot) -> None:
    data = window.panel("data")
    qtbot.waitUntil(lambda: data.thumbs.count > 0, timeout=60_000)
    assert "shapes" in data.preview_status.text()


def test_find_max_batch_reports_and_applies_only_on_request(window, qtbot) -> None:
    b = window.panel("batching")
    b.fields["memory_budget_gb"].setter(0.05)  # 50 MB: a quick search
    window.revalidate()
    before = b.fields["batch_size"].getter()
    qtbot.mouseClick(b.find_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: b.apply_button.isEnabled(), timeout=60_000)
    assert "Suggested" in b.result_label.text()
    assert b.fields["batch_size"].getter() == before  # never applied silently
    qtbot.mouseClick(b.apply_button, Qt.MouseButton.LeftButton)
    assert b.fields["batch_size"].getter() == b.suggested
    assert "Applied" in b.result_label.text()


def test_optional_section_panel_support(qtbot) -> None:
    """A panel for an optional section (None when off) needs only optional = True."""
    from workbench.gui.panels.base import RecipePanel

    class PrunePanel(RecipePanel):
        section_name = "prune"
        title = "Pruning"
        optional = True

        def build(self) -> None:
            self.add_choice("method", "Method", "tip")
            self.add_double("ratio", "Ratio", "tip")

    p = PrunePanel()
    qtbot.addWidget(p)
    recipe = Recipe()
    p.load(recipe)
    assert p.values() is None and not p.body.isEnabled()
    p.enabled_check.setChecked(True)
    p.fields["ratio"].setter(0.3)
    p.apply(recipe)
    assert recipe.prune is not None and recipe.prune.ratio == pytest.approx(0.3)


def test_data_panel_has_one_switch_per_augmentation(window, tmp_path) -> None:
    """A recipe from before the switches (augment = true alone) opens as crop + flip; new ones default to no flip."""
    panel = window.panel("data")
    old = tmp_path / "old.toml"
    old.write_text('name = "old"\n[data]\nsource = "default"\naugment = true\n')
    assert window.open_recipe_file(old)
    crop, flip = panel.fields["augment_crop"].widget, panel.fields["augment_flip"].widget
    assert crop.isChecked() and flip.isChecked()
    assert "digits" in flip.toolTip()
    flip.setChecked(False)
    assert window.build_recipe().data.augmentations == ["crop"]
    panel.fields["augment"].widget.setChecked(False)
    assert not crop.isEnabled() and not flip.isEnabled()
    assert window.build_recipe().data.augmentations == []


def test_model_panel_shows_loader_errors_as_text_not_markup(window, qtbot, tmp_path) -> None:
    """A hostile .pt2 is refused through the panel's background summary, and the message is shown literally."""
    from tests.hostile import evil_pt2

    marker = tmp_path / "PWNED"
    evil = evil_pt2(tmp_path / "<b>evil<i>.pt2", marker)
    panel = window.panel("model")
    panel.use_file(str(evil))
    status = panel.summary_status
    qtbot.waitUntil(lambda: "Cannot summarise" in status.text(), timeout=30_000)
    assert "&lt;b&gt;evil&lt;i&gt;.pt2: refused" in status.text()
    assert not marker.exists()
