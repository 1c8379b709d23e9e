"""Model panel: zoo model or model file, then its summary (the [model] section).

The summary (parameters, MACs, size, per-layer table) is computed by a background job a moment
after the model choice settles (debounced), never on the GUI thread: building a model and
counting its FLOPs can take seconds.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QTableWidget, QTableWidgetItem

from workbench.core.events import CancelToken, Reporter
from workbench.core.models import ZOO
from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel
from workbench.gui.widgets import human_bytes, human_count
from workbench.recipe import DataSection, Recipe

#: Dropped/chosen file suffix -> (field to set, model source or None when it only sets weights).
SUFFIX_ROLES: dict[str, tuple[str, str | None]] = {
    ".py": ("path", "python"),
    ".ts": ("path", "torchscript"),
    ".pt2": ("path", "export"),
    ".onnx": ("path", "onnx"),
    ".safetensors": ("weights", None),
    ".pt": ("weights", None),
    ".pth": ("weights", None),
}

SUMMARY_DEBOUNCE_MS = 400


def data_input_of(data: DataSection) -> tuple[tuple[int, ...], int] | None:
    """Input shape and class count known without reading the data (default/synthetic sources)."""
    if data.source == "default":
        from workbench.core.data import DEFAULT_CLASS_NAMES

        return (3, data.image_size, data.image_size), len(DEFAULT_CLASS_NAMES)
    if data.source == "synthetic":
        return tuple(data.synthetic_shape), data.synthetic_classes
    return None


def build_model_for(recipe: Recipe, cancel: CancelToken | None = None) -> tuple[Any, tuple[int, ...], int]:
    """Load the recipe's model for its data's input shape (reads the data only when it must)."""
    from workbench.core.models import check_model_data_compat, load_model

    known = data_input_of(recipe.data)
    if known is None:
        from workbench.core.data import load_dataset

        bundle = load_dataset(recipe.data)
        known = (tuple(bundle.input_shape), bundle.num_classes)
    if cancel is not None:
        cancel.raise_if_cancelled()
    shape, classes = known
    loaded = load_model(recipe.model, classes, shape)
    check_model_data_compat(loaded, classes, shape)
    return loaded, shape, classes


def summary_job(recipe: Recipe) -> Any:
    """A job function returning (ModelSummary, description, input shape)."""

    def run(reporter: Reporter, cancel: CancelToken) -> tuple[Any, str, tuple[int, ...]]:
        from workbench.core.models import summarize, summarize_onnx

        reporter.progress(0, None, "building model")
        loaded, shape, _classes = build_model_for(recipe, cancel)
        cancel.raise_if_cancelled()
        if loaded.kind == "onnx":
            return summarize_onnx(loaded.onnx_path), loaded.label, shape
        return summarize(loaded.module, shape), loaded.label, shape

    return run


def _summary_key(recipe: Recipe) -> str:
    d = recipe.data
    data_key = [d.source, d.path, d.image_size, d.synthetic_shape, d.synthetic_classes, d.label_column]
    return json.dumps([recipe.model.model_dump(mode="json"), data_key], sort_keys=True, default=str)


@register_panel(order=10)
class ModelPanel(RecipePanel):
    section_name = "model"
    title = "Model"
    description = ("Pick a built-in model or load your own file (drop a .py, .ts, .pt2, .onnx, or a "
                   ".safetensors/.pt weights file onto this panel). The summary updates when the choice settles.")

    def build(self) -> None:
        self.setAcceptDrops(True)
        self.source = self.add_choice(
            "source", "Source", "Built-in zoo models train out of the box; a file brings your own architecture. "
            "ONNX models can be evaluated and benchmarked but not trained.",
            labels={"zoo": "Built-in zoo", "python": "Python file (.py)", "torchscript": "TorchScript (.ts)",
                    "export": "torch.export (.pt2)", "onnx": "ONNX (.onnx)"})
        self.source.activated.connect(self._on_source_chosen)  # the user's choice only, not a loaded recipe
        self.zoo = self.add_choice("zoo", "Zoo model", "Each zoo model shows one design idea; hover the list "
                                   "items for details. Compare them on accuracy, latency and size.",
                                   item_tips=dict(ZOO))
        self.add_double("width", "Width", "Multiplies every layer's channel count. Wider is more accurate and "
                        "slower (MACs grow about with the square of the width).", decimals=3, step=0.25,
                        minimum=0.125)
        self.add_path("path", "Model file", "The model file for a non-zoo source. Only load files you trust: "
                      "a .py file runs code when imported.", file_filter=self._file_filter,
                      placeholder="path to .py / .ts / .pt2 / .onnx")
        self.add_text("class_name", "Class name", "The nn.Module class in the .py file, or a factory function "
                      "that returns one (e.g. ResNet18 in classic CIFAR code). Factories are recognised without "
                      "running them (annotated -> nn.Module, or returning a module they build); other functions "
                      "are never called. A typo gets close-match suggestions.",
                      placeholder="e.g. MyNet or ResNet18 (empty: the only nn.Module class in the file)")
        self.add_json("kwargs", "Constructor kwargs", "Keyword arguments for the model's constructor, as a JSON "
                      "object (zoo or .py). Lets you try a deeper or wider variant without editing code.")
        self.add_path("weights", "Weights", "Start from these weights: .safetensors (safe), a .pt state dict "
                      "(loaded with weights_only=True, no code runs) or run:ID for a stored run's weights.",
                      file_filter="Weights (*.safetensors *.pt *.pth *.bin);;All files (*)",
                      placeholder="optional: .safetensors, .pt or run:ID")
        self.begin_group("Summary", "Size and compute for one sample (batch 1), computed in the background.")
        self.summary_status = QLabel("")
        self.summary_status.setObjectName("modelSummaryStatus")
        self.summary_status.setWordWrap(True)
        self.add_widget(self.summary_status)
        self.summary_label = QLabel("")
        self.summary_label.setObjectName("modelSummary")
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.add_widget(self.summary_label)
        self.layer_table = QTableWidget(0, 5)
        self.layer_table.setObjectName("modelLayerTable")
        self.layer_table.setHorizontalHeaderLabels(["Layer", "Type", "Params", "Output", "MACs"])
        self.layer_table.verticalHeader().setVisible(False)
        self.layer_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.layer_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.layer_table.setAlternatingRowColors(True)
        self.layer_table.setMinimumHeight(220)
        header = self.layer_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.layer_table.setToolTip("Leaf layers in execution order. MACs count matrix work (conv, linear, "
                                    "attention); element-wise ops are ignored, as in papers.")
        self.add_widget(self.layer_table)
        self.summary = None
        self._summary_key = ""
        self._pending: Recipe | None = None
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(SUMMARY_DEBOUNCE_MS)
        self.debounce.timeout.connect(self._start_summary)

    def _file_filter(self) -> str:
        return {"python": "Python files (*.py)", "torchscript": "TorchScript (*.ts *.pt)",
                "export": "torch.export (*.pt2)", "onnx": "ONNX models (*.onnx)"}.get(
            self.source.currentData(), "Model files (*.py *.ts *.pt2 *.onnx)") + ";;All files (*)"

    def _on_source_chosen(self, _index: int) -> None:
        """A new source: a file of another kind no longer applies, and an ONNX model is not trained."""
        src = self.source.currentData()
        path = str(self.fields["path"].getter() or "")
        role = SUFFIX_ROLES.get(Path(path).suffix.lower()) if path else None
        if path and (role is None or role[1] != src):
            self.fields["path"].setter("")
        if src == "onnx" and self.host is not None:
            train = self.host.panel("train")
            if train.fields["epochs"].getter():
                train.fields["epochs"].setter(0)
                self.host.log("train.epochs set to 0: an ONNX model is evaluated and benchmarked, not trained",
                              "warning")
        self._emit_changed()

    def sync_states(self) -> None:
        src = self.source.currentData()
        zoo = src == "zoo"
        self.set_row_visible("zoo", zoo)
        self.set_row_visible("width", zoo)
        self.set_row_visible("path", not zoo)
        self.set_row_visible("class_name", src == "python")
        self.set_row_visible("kwargs", src in ("zoo", "python"))
        self.set_row_visible("weights", src != "onnx")

    # -- drag and drop ---------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        urls = event.mimeData().urls()
        if urls and all(Path(u.toLocalFile()).suffix.lower() in SUFFIX_ROLES for u in urls):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        for url in event.mimeData().urls():
            self.use_file(url.toLocalFile())
        event.acceptProposedAction()

    def use_file(self, path: str) -> bool:
        """Put a model or weights file into the right fields (as a drop does)."""
        role = SUFFIX_ROLES.get(Path(path).suffix.lower())
        if role is None:
            return False
        field, source = role
        if source is not None:
            self.fields["source"].setter(source)
        self.fields[field].setter(path)
        self._emit_changed()
        return True

    # -- summary ------------------------------------------------------------------------------------------
    def on_recipe_validated(self, recipe: Recipe) -> None:
        key = _summary_key(recipe)
        if key == self._summary_key:
            return
        self._summary_key = key
        self._pending = recipe
        self.summary_status.setText("Summary: waiting for the choice to settle…")
        self.debounce.start()

    def on_recipe_invalid(self) -> None:
        self.debounce.stop()
        self._pending = None
        self._summary_key = ""
        if self.summary is not None:
            self.summary_status.setText("<span style='color:#777'>Showing the last valid model; fix the "
                                        "recipe errors to update the summary.</span>")

    def _start_summary(self) -> None:
        if self.host is None or self._pending is None:
            return
        recipe, self._pending = self._pending, None
        self.summary_status.setText("Summary: computing in the background…")
        job = self.host.jobs.start("Model summary", summary_job(recipe), key="model_summary")
        job.finished.connect(lambda result, jid=job.id: self._on_summary(jid, result))
        job.errored.connect(lambda msg, _tb, jid=job.id: self._on_summary_error(jid, msg))

    def _on_summary_error(self, job: int, message: str) -> None:
        if self.host is not None and self.host.jobs.is_current(job):
            self.summary = None
            self.summary_status.setText(f"<span style='color:#b3261e'>Cannot summarise this model: "
                                        f"{html.escape(message)}</span>")  # user text: never markup
            self.summary_label.clear()
            self.layer_table.setRowCount(0)

    def _on_summary(self, job: int, result: object) -> None:
        if result is None or self.host is None or not self.host.jobs.is_current(job):
            return
        summary, label, shape = result  # type: ignore[misc]
        self.summary = summary
        self.summary_status.setText(f"{label}, input {list(shape)}")
        flops = f" ({human_count(summary.flops)}FLOPs)" if summary.flops else ""
        self.summary_label.setText(
            f"<table cellspacing=6><tr><td><b>Parameters</b></td><td>{human_count(summary.params)} "
            f"({summary.trainable_params:,} trainable)</td></tr>"
            f"<tr><td><b>MACs / sample</b></td><td>{human_count(summary.macs)}{flops}</td></tr>"
            f"<tr><td><b>Size</b></td><td>{human_bytes(summary.size_bytes)}</td></tr></table>")
        rows = summary.layers
        self.layer_table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            shape_text = str(list(row.output_shape)) if isinstance(row.output_shape, tuple | list) \
                else str(row.output_shape)
            cells = [row.name, row.type, f"{row.params:,}", shape_text,
                     human_count(row.macs) if row.macs is not None else "—"]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c in (2, 4):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.layer_table.setItem(r, c, item)

    def shutdown(self) -> None:
        self.debounce.stop()
