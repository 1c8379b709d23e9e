"""Export panel: ONNX / torch.export / safetensors files, parity checks and the deployment bundle (the [export] section).

An existing bundle is never overwritten silently. The engine refuses a non-empty bundle folder
unless ``export.force`` is set; in the GUI, ``confirm_run`` (asked by the main window just before
a run starts) notices that case and asks first: if the user agrees, ``force`` is set for that one
run only (the recipe in the panels keeps ``force = false``); if not, the run does not start.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QMessageBox, QWidget

from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel, literal_choices
from workbench.recipe import ExportSection, Recipe
from workbench.techniques.export.bundle import resolve_bundle_dir

FORMAT_TIPS = {
    "onnx": "ONNX: runs in onnxruntime, TensorRT, OpenVINO and most serving stacks; the bundle's model.onnx. "
            "Checked for output parity against PyTorch.",
    "pt2": "torch.export program (.pt2): a traced PyTorch graph without Python code, for PyTorch-native "
           "deployment (AOTInductor, ExecuTorch).",
    "safetensors": "safetensors: the weights only, safe to load (no pickled code); needs the model's code to run.",
}


def bundle_is_occupied(text: str) -> Path | None:
    """The resolved bundle folder when it exists and is not empty (an export would overwrite it), else None."""
    if not text.strip():
        return None
    target = resolve_bundle_dir(text.strip())
    try:
        return target if target.is_dir() and any(target.iterdir()) else None
    except OSError:
        return None


class FormatChecks(QWidget):
    """One checkbox per export format; ``value`` keeps the loaded order so a recipe round-trips exactly."""

    edited = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.checks: dict[str, QCheckBox] = {}
        for fmt in literal_choices(ExportSection, "formats"):
            box = QCheckBox({"onnx": "ONNX", "pt2": "pt2", "safetensors": "safetensors"}[fmt])
            box.setObjectName(f"export_format_{fmt}")
            box.setToolTip(FORMAT_TIPS[fmt])
            box.toggled.connect(lambda _on: self.edited.emit())
            self.checks[fmt] = box
            lay.addWidget(box)
        lay.addStretch(1)
        self._order: list[str] = []

    def value(self) -> list[str]:
        chosen = [f for f in self._order if self.checks[f].isChecked()]
        chosen += [f for f, box in self.checks.items() if box.isChecked() and f not in chosen]
        if not chosen:
            raise ValueError("choose at least one format (ONNX is what the bundle deploys)")
        return chosen

    def set_value(self, formats: list[str]) -> None:
        self._order = list(dict.fromkeys(formats))
        for fmt, box in self.checks.items():
            box.blockSignals(True)
            box.setChecked(fmt in self._order)
            box.blockSignals(False)


@register_panel(order=130)
class ExportPanel(RecipePanel):
    section_name = "export"
    title = "Export"
    description = ("Write the final model in deployable formats, check each file's outputs against PyTorch on "
                   "eval batches (parity), and optionally write a deployment bundle: model, recipe, metrics, "
                   "model card and a predict.py that runs with onnxruntime alone.")
    optional = True

    def build(self) -> None:
        self.formats = FormatChecks()
        tip = ("Which files to write. Each is verified against the PyTorch model; more formats cost export time. "
               "A bundle always includes ONNX.")
        self._bind("formats", "Formats", tip, self.formats, self.formats.value, self.formats.set_value,
                   self.formats.edited)
        self.add_spin("opset", "ONNX opset", "ONNX operator set version. Newer opsets express more ops natively; "
                      "older ones load in older runtimes. 17–18 is widely supported.")
        self.add_spin("parity_batches", "Parity batches", "Eval batches run through PyTorch and each exported file "
                      "to compare outputs (max abs error, top-1 agreement). More batches give a stronger check and "
                      "take longer.")
        self.begin_group("Deployment bundle", "A self-contained folder to hand over: model.onnx, recipe, "
                         "metrics.json, model card, predict.py.")
        self.bundle = self.add_path("bundle_dir", "Bundle folder", "Write a deployment bundle here (empty = no "
                                    "bundle). Relative paths are relative to the folder Workbench was started "
                                    "from. An existing non-empty folder is only replaced after you confirm.",
                                    mode="dir", placeholder="optional: folder for the bundle")
        plain_getter = self.fields["bundle_dir"].getter

        def bundle_getter() -> str:
            text = plain_getter()
            if text and resolve_bundle_dir(text).is_file():
                raise ValueError("this is a file; the bundle needs a folder path")
            return text

        self.fields["bundle_dir"].getter = bundle_getter
        self.force = self.add_check("force", "Overwrite", "Replace an existing bundle folder without asking. Off, "
                                    "the GUI asks before a run would overwrite one (and the CLI refuses), so "
                                    "earlier results are never lost by accident.",
                                    text="Replace without asking")
        self.bundle_note = QLabel("")
        self.bundle_note.setObjectName("exportBundleNote")
        self.bundle_note.setWordWrap(True)
        self.bundle_note.setStyleSheet("color: #9a6700;")
        self.bundle_note.setVisible(False)
        self.add_widget(self.bundle_note)
        self.begin_group("onnxruntime", "How the exported ONNX model is run for parity and latency (and in the "
                         "bundle's predict.py).")
        self.add_spin("ort_threads", "Threads", "onnxruntime intra-op threads. More threads lower batch latency "
                      "on big models; on small ones or busy machines they add overhead. 0 = all cores.",
                      special="0 (all cores)")
        self.add_choice("ort_optimization", "Graph optimization", "onnxruntime graph optimizations at load time "
                        "(constant folding, fusions, layout changes). 'all' is fastest to run and slowest to load; "
                        "'disable' helps to debug a parity mismatch.",
                        labels={"disable": "Disabled", "basic": "Basic", "extended": "Extended", "all": "All"})

    def sync_states(self) -> None:
        occupied = bundle_is_occupied(self.bundle.text())
        if occupied is not None and not self.force.isChecked():
            self.bundle_note.setText(f"{occupied} exists and is not empty: you will be asked before a run "
                                     "overwrites it.")
        elif occupied is not None:
            self.bundle_note.setText(f"{occupied} exists and will be overwritten by the next run.")
        self.bundle_note.setVisible(occupied is not None)

    def on_recipe_validated(self, recipe: Recipe) -> None:
        self.sync_states()  # a run may have filled the bundle folder since the last edit

    # -- called by the main window just before a run starts -----------------------------------------------
    def confirm_run(self, recipe: Recipe, benchmark_only: bool = False) -> Recipe | None:
        """Return the recipe to run (``force`` set for this run if the user agreed to overwrite), or None to cancel."""
        sec = recipe.export
        if benchmark_only or sec is None or sec.force:
            return recipe
        occupied = bundle_is_occupied(sec.bundle_dir)
        if occupied is None:
            return recipe
        if not self.ask_overwrite_bundle(occupied):
            if self.host is not None:
                self.host.log(f"run not started: {occupied} already holds a bundle and was not to be replaced",
                              "warning")
            return None
        recipe.export = sec.model_copy(update={"force": True})
        if self.host is not None:
            self.host.log(f"the bundle in {occupied} will be replaced (for this run only)", "warning")
        return recipe

    def ask_overwrite_bundle(self, path: Path) -> bool:
        """Blocking question (tests replace this method)."""
        answer = QMessageBox.question(
            self, "Replace bundle?", f"The bundle folder {path} already exists and is not empty.\n\nReplace its "
            "contents with this run's bundle? (Only for this run: the recipe's 'Overwrite' setting is unchanged.)",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes
