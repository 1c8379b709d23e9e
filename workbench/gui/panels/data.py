"""Data panel: source, path, split, image size, augmentation, cache and sample previews ([data]).

Previews are read by a background job (loading a dataset may decode files or generate the
built-in set the first time), debounced so typing a path does not start a job per keystroke.
"""

from __future__ import annotations

import html
import json
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel

from workbench.core.events import CancelToken, Reporter
from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel, parse_int_list
from workbench.gui.widgets import ThumbnailStrip
from workbench.recipe import DataSection, Recipe

PREVIEW_COUNT = 12
PREVIEW_DEBOUNCE_MS = 500

_PATH_MODE = {"image_folder": "dir", "mnist": "dir", "csv": "file", "npz": "file"}
_PATH_FILTER = {"csv": "CSV files (*.csv);;All files (*)", "npz": "NumPy archives (*.npz);;All files (*)"}


def previews_job(section: DataSection) -> Any:
    """A job function returning (previews, description) for the data section."""

    def run(reporter: Reporter, cancel: CancelToken) -> tuple[list[tuple[Any, str]], str]:
        from workbench.core.data import load_dataset, sample_previews

        reporter.progress(0, None, "reading data")
        bundle = load_dataset(section)
        cancel.raise_if_cancelled()
        return sample_previews(bundle, PREVIEW_COUNT), bundle.source_desc

    return run


@register_panel(order=20)
class DataPanel(RecipePanel):
    section_name = "data"
    title = "Data"
    description = ("What the model trains and is evaluated on. The built-in shapes set works offline; "
                   "your own data can be an image folder (one sub-folder per class), CSV, NPZ or MNIST files.")

    def build(self) -> None:
        self.source = self.add_choice(
            "source", "Source", "default: 10 generated shape classes (PNG files, so loader settings matter); "
            "synthetic: random tensors (no I/O, isolates compute); or your own files.",
            labels={"default": "Built-in shapes", "synthetic": "Synthetic tensors",
                    "image_folder": "Image folder", "csv": "CSV table", "npz": "NumPy .npz", "mnist": "MNIST files"})
        self.add_path("path", "Path", "Your data: a folder for image folders and MNIST, a file for CSV/NPZ.",
                      mode=lambda: _PATH_MODE.get(self.source.currentData(), "file"),
                      file_filter=lambda: _PATH_FILTER.get(self.source.currentData(), "All files (*)"))
        self.add_text("label_column", "Label column", "The CSV column holding the class label; every other "
                      "numeric column is a feature.")
        self.add_spin("samples_per_class", "Samples per class", "Size of the generated shapes set. More samples "
                      "train a better model; fewer make quick experiments (generated once, then cached).")
        self.add_double("eval_fraction", "Eval split", "Share of samples held out for evaluation (stratified). "
                        "A bigger split measures accuracy more reliably but leaves less to train on.",
                        decimals=2, step=0.05)
        self.add_double("val_fraction", "Validation split", "Share of the remaining samples held out for "
                        "validation (stratified): accuracy budgets, sensitivity analysis and the per-epoch curve "
                        "choose on it, so the eval split stays unseen until the result is reported.",
                        decimals=2, step=0.05)
        self.add_spin("image_size", "Image size", "Images are resized to this square size. Larger keeps detail "
                      "but costs compute roughly with the square of the side.", suffix=" px")
        self.add_check("augment", "Augment", "Random changes to training images each epoch (pick which below): "
                       "better generalisation, a little more CPU per sample.")
        self.add_check("augment_crop", "Random crop", "Pad by 4 pixels and crop back at a random place, so objects "
                       "shift a little every epoch.")
        self.add_check("augment_flip", "Horizontal flip", "Mirror half the training images. Off by default: a mirror "
                       "image changes the class of digits, letters and other handed things; turn it on for photos "
                       "of objects.")
        self.add_check("normalize", "Normalize", "Scale pixels to zero mean and unit variance per channel: "
                       "helps optimisation; the same preprocessing is recorded with exports.")
        self.add_check("cache", "Cache in memory", "Keep decoded samples in RAM after the first epoch: later "
                       "epochs skip file decoding (faster) at the cost of memory.")
        self.add_spin("limit", "Sample limit", "Use at most this many samples (stratified), for quick "
                      "experiments on big datasets. 0 uses everything.", special="0 (all)")
        self.add_spin("seed", "Split seed", "Seed of the train/validation/eval split and subsampling: keep it "
                      "fixed to compare runs on the same samples.")
        self.add_parsed_text("synthetic_shape", "Sample shape", "Shape of one synthetic sample without the batch, "
                             "e.g. 3, 32, 32 for images or 64 for feature vectors.",
                             lambda t: parse_int_list(t, "sizes"), lambda v: ", ".join(str(d) for d in v),
                             placeholder="3, 32, 32")
        self.add_spin("synthetic_classes", "Classes", "Number of synthetic classes.")
        self.add_spin("synthetic_samples", "Samples", "Number of synthetic samples (train + eval).")
        self.begin_group("Samples", "A few training samples, one per class in turn, as the model sees them "
                                    "before augmentation.")
        self.preview_status = QLabel("")
        self.preview_status.setObjectName("dataPreviewStatus")
        self.preview_status.setWordWrap(True)
        self.add_widget(self.preview_status)
        self.thumbs = ThumbnailStrip()
        self.thumbs.setObjectName("dataPreviews")
        self.add_widget(self.thumbs)
        self._preview_key = ""
        self._pending: DataSection | None = None
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(PREVIEW_DEBOUNCE_MS)
        self.debounce.timeout.connect(self._start_previews)

    def sync_states(self) -> None:
        src = self.source.currentData()
        own = src not in ("default", "synthetic")
        self.set_row_visible("path", own)
        self.set_row_visible("label_column", src == "csv")
        self.set_row_visible("samples_per_class", src == "default")
        for name in ("synthetic_shape", "synthetic_classes", "synthetic_samples"):
            self.set_row_visible(name, src == "synthetic")
        image = src in ("default", "image_folder")
        for name in ("image_size", "augment", "augment_crop", "augment_flip"):
            self.widget(name).setEnabled(image or src in ("npz", "mnist"))
        for name in ("augment_crop", "augment_flip"):
            self.widget(name).setEnabled(self.widget(name).isEnabled() and self.widget("augment").isChecked())
        self.widget("cache").setEnabled(src in ("default", "image_folder"))

    def on_recipe_validated(self, recipe: Recipe) -> None:
        d = recipe.data
        key = json.dumps(d.model_dump(mode="json", exclude={"augment", "augment_crop", "augment_flip", "normalize", "cache"}), sort_keys=True)
        if key == self._preview_key:
            return
        self._preview_key = key
        self._pending = d.model_copy()
        self.preview_status.setText("Samples: waiting for the settings to settle…")
        self.debounce.start()

    def _start_previews(self) -> None:
        if self.host is None or self._pending is None:
            return
        section, self._pending = self._pending, None
        self.preview_status.setText("Samples: reading in the background…")
        job = self.host.jobs.start("Data previews", previews_job(section), key="data_previews")
        job.finished.connect(lambda result, jid=job.id: self._on_previews(jid, result))
        job.errored.connect(lambda msg, _tb, jid=job.id: self._on_error(jid, msg))

    def _on_error(self, job: int, message: str) -> None:
        if self.host is not None and self.host.jobs.is_current(job):
            self.thumbs.clear()
            self.preview_status.setText(f"<span style='color:#b3261e'>Cannot read the data: "
                                        f"{html.escape(message)}</span>")  # user text: never markup

    def _on_previews(self, job: int, result: object) -> None:
        if result is None or self.host is None or not self.host.jobs.is_current(job):
            return
        items, desc = result  # type: ignore[misc]
        self.thumbs.set_items(items)
        self.preview_status.setText(desc)

    def shutdown(self) -> None:
        self.debounce.stop()
