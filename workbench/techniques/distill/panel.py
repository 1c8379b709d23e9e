"""Distillation panel: a big teacher trains the recipe's (small) model (the [distill] section).

The teacher is one recipe string (``zoo:NAME``, ``run:ID`` or a model file path); the panel edits
it with a picker that lists the zoo, the completed runs in the store that saved weights, or a
file. The picker validates what it can without loading anything (an empty choice, an ONNX or
weights file given as the model), so the mistake is shown at the control and Run stays disabled,
instead of failing minutes later when the stage loads the teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.core.models import ZOO
from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel
from workbench.recipe import Recipe

#: Model files a teacher may be (as ``workbench.techniques.distill.teacher`` loads them).
TEACHER_SUFFIXES = (".py", ".pt2", ".ts", ".jit", ".torchscript", ".pt", ".pth", ".zip")
DEFAULT_TEACHER = "zoo:resnet"
MAX_LISTED_RUNS = 200

KIND_LABELS = {"zoo": "Zoo model", "run": "Stored run", "file": "Model file"}


def stored_teachers(store: Any) -> list[tuple[str, str]]:
    """``[(run:ID, label)]`` for completed runs that saved weights, newest first (a teacher must be trained)."""
    if store is None:
        return []
    out: list[tuple[str, str]] = []
    for run in store.list_runs()[:MAX_LISTED_RUNS]:
        if run.status != "completed":
            continue
        arts = store.artifacts(run.id, "weights")
        if not arts or not arts[-1].path.exists():
            continue
        acc = run.final.get("accuracy")
        extra = f", accuracy {acc:.1%}" if isinstance(acc, int | float) else ""
        out.append((f"run:{run.id}", f"run {run.id}: {run.name} ({run.model}{extra})"))
    return out


class TeacherPicker(QWidget):
    """Edits ``distill.teacher``: a kind (zoo / stored run / file) and the matching chooser.

    ``value`` raises ValueError with a user-facing message when the choice cannot be a teacher.
    """

    edited = Signal()

    def __init__(self, runs: Callable[[], list[tuple[str, str]]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._runs = runs
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.kind = QComboBox()
        self.kind.setObjectName("distill_teacher_kind")
        for key, label in KIND_LABELS.items():
            self.kind.addItem(label, key)
        self.kind.setItemData(0, "A zoo architecture, trained first for teacher epochs unless you give weights.",
                              Qt.ItemDataRole.ToolTipRole)
        self.kind.setItemData(1, "A completed run in the store: its architecture and trained weights (pruned "
                              "shapes included).", Qt.ItemDataRole.ToolTipRole)
        self.kind.setItemData(2, "A .py, .pt2 or TorchScript model file (ONNX cannot run inside training).",
                              Qt.ItemDataRole.ToolTipRole)
        for combo in (self.kind,):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.stack = QStackedWidget()
        self.zoo = QComboBox()
        self.zoo.setObjectName("distill_teacher_zoo")
        for name, tip in ZOO.items():
            self.zoo.addItem(name, name)
            self.zoo.setItemData(self.zoo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        run_box = QWidget()
        run_lay = QHBoxLayout(run_box)
        run_lay.setContentsMargins(0, 0, 0, 0)
        self.run = QComboBox()
        self.run.setObjectName("distill_teacher_run")
        self.run.setPlaceholderText("no trained run yet")
        for combo in (self.zoo, self.run):  # long run names must not widen the whole panel
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(14)
        self.refresh_button = QToolButton()
        self.refresh_button.setText("⟳")
        self.refresh_button.setObjectName("distill_teacher_refresh")
        self.refresh_button.setToolTip("Reload the list of completed runs from the store.")
        self.refresh_button.clicked.connect(lambda: self.refresh_runs(keep=self.run.currentData()))
        run_lay.addWidget(self.run, 1)
        run_lay.addWidget(self.refresh_button)
        file_box = QWidget()
        file_lay = QHBoxLayout(file_box)
        file_lay.setContentsMargins(0, 0, 0, 0)
        self.path = QLineEdit()
        self.path.setObjectName("distill_teacher_path")
        self.path.setPlaceholderText("teacher model: .py, .pt2 or TorchScript")
        self.browse = QToolButton()
        self.browse.setText("…")
        self.browse.setObjectName("distill_teacher_browse")
        self.browse.setToolTip("Browse")
        self.browse.clicked.connect(self._pick_file)
        file_lay.addWidget(self.path, 1)
        file_lay.addWidget(self.browse)
        for w in (self.zoo, run_box, file_box):
            self.stack.addWidget(w)
        lay.addWidget(self.kind)
        lay.addWidget(self.stack, 1)
        self.kind.currentIndexChanged.connect(self._on_kind)
        self.zoo.currentIndexChanged.connect(self.edited)
        self.run.currentIndexChanged.connect(self.edited)
        self.path.textEdited.connect(self.edited)

    def setToolTip(self, tip: str) -> None:  # noqa: N802 - Qt naming; the tip belongs on every part
        super().setToolTip(tip)
        for w in (self.kind, self.zoo, self.run, self.path):
            w.setToolTip(tip)

    def current_kind(self) -> str:
        return str(self.kind.currentData())

    def _on_kind(self, index: int) -> None:
        self.stack.setCurrentIndex(index)
        if self.current_kind() == "run":
            self.refresh_runs(keep=self.run.currentData())
        self.edited.emit()

    def _pick_file(self) -> None:
        start = self.path.text().strip() or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Teacher model", start,
                                              "Models (*.py *.pt2 *.ts *.pt *.pth);;All files (*)")
        if path:
            self.path.setText(path)
            self.edited.emit()

    def refresh_runs(self, keep: str | None = None) -> None:
        """Re-list stored runs; ``keep`` stays selected (listed as missing if the store no longer has it)."""
        self.run.blockSignals(True)
        try:
            self.run.clear()
            for ref, label in self._runs():
                self.run.addItem(label, ref)
            if keep:
                i = self.run.findData(keep)
                if i < 0:
                    self.run.addItem(f"{keep} (not a completed run with weights in this store)", keep)
                    i = self.run.count() - 1
                self.run.setCurrentIndex(i)
            elif self.run.count():
                self.run.setCurrentIndex(0)  # the newest trained run
        finally:
            self.run.blockSignals(False)

    def value(self) -> str:
        kind = self.current_kind()
        if kind == "zoo":
            return f"zoo:{self.zoo.currentData()}"
        if kind == "run":
            ref = self.run.currentData()
            if not ref:
                raise ValueError("no stored run picked: complete a training run first, or choose a zoo model or a "
                                 "model file")
            return str(ref)
        text = self.path.text().strip()
        if not text:
            raise ValueError("choose the teacher: a zoo model, a stored run or a model file")
        suffix = Path(text).suffix.lower()
        if suffix == ".onnx":
            raise ValueError("an ONNX teacher cannot run inside PyTorch training; give a .py, .pt2 or TorchScript "
                             "model")
        if suffix in (".safetensors", ".bin"):
            raise ValueError("this is a weights file: choose 'Zoo model' and put the file in Teacher weights")
        if suffix not in TEACHER_SUFFIXES:
            raise ValueError(f"expected a .py, .pt2 or TorchScript (.ts/.pt) model file, not {suffix or 'no suffix'}")
        if not Path(text).expanduser().exists():
            raise ValueError(f"file not found: {text}")
        return text

    def set_value(self, value: str) -> None:
        value = str(value).strip()
        blockers = [w.blockSignals(True) for w in (self.kind, self.zoo, self.run, self.path)]
        try:
            if value.startswith("zoo:"):
                name = value.removeprefix("zoo:")
                i = self.zoo.findData(name)
                if i < 0:  # unknown to this build: keep it visible rather than lose it
                    self.zoo.addItem(name, name)
                    i = self.zoo.count() - 1
                self.zoo.setCurrentIndex(i)
                kind = "zoo"
            elif value.startswith("run:"):
                self.refresh_runs(keep=value)
                kind = "run"
            else:
                self.path.setText(value)
                kind = "file"
            self.kind.setCurrentIndex(self.kind.findData(kind))
            self.stack.setCurrentIndex(self.kind.currentIndex())
        finally:
            for w, was in zip((self.kind, self.zoo, self.run, self.path), blockers, strict=True):
                w.blockSignals(was)


@register_panel(order=110)
class DistillPanel(RecipePanel):
    section_name = "distill"
    title = "Distillation"
    description = ("Knowledge distillation: the recipe's model (the student) learns from a bigger teacher's "
                   "softened outputs as well as the labels. The soft targets carry \"dark knowledge\" (which wrong "
                   "classes the teacher finds plausible), so a small model often gets closer to the big one than "
                   "training on labels alone. The run's baseline is the teacher; final is the distilled student.")
    optional = True

    def build(self) -> None:
        self.teacher = TeacherPicker(self._stored_runs)
        tip = ("The big, accurate model to learn from: a zoo model (trained here first unless you give weights), a "
               "completed run from the store, or a model file. It must predict the same classes from the same "
               "inputs. A stronger teacher helps more, but costs one extra forward pass per batch.")
        self._bind("teacher", "Teacher", tip, self.teacher, self.teacher.value, self.teacher.set_value,
                   self.teacher.edited)
        self.teacher.setToolTip(tip)
        self.weights = self.add_path(
            "teacher_weights", "Teacher weights", "Trained weights for a zoo or .py teacher (.safetensors, or a .pt "
            "state dict loaded with weights_only=True). Without them the teacher is trained first for Teacher "
            "epochs.", file_filter="Weights (*.safetensors *.pt *.pth *.bin);;All files (*)",
            placeholder="optional: .safetensors or .pt")
        self.width = self.add_double("teacher_width", "Teacher width", "Width multiplier of a zoo teacher: wider is a "
                                     "stronger teacher and a slower one to train and run.", decimals=3, step=0.25,
                                     minimum=0.125)
        self.epochs = self.add_spin("teacher_epochs", "Teacher epochs", "Train a teacher that has no weights for "
                                    "this many epochs first. An untrained teacher teaches nothing; more epochs make "
                                    "a better teacher and a longer run.", special="0 (teacher has weights)")
        self.begin_group("Loss", "loss = alpha · T² · KL(teacher ‖ student) + (1 − alpha) · CE(student, labels)")
        self.add_double("temperature", "Temperature T", "Divides both models' logits before the softmax. T > 1 "
                        "softens the teacher's distribution so near-miss classes carry signal (the dark knowledge); "
                        "too high washes it out. 2–6 is typical; the loss is scaled by T².", decimals=2, step=0.5)
        self.add_double("alpha", "Alpha", "Balances the teacher's soft targets (alpha) against the true labels "
                        "(1 − alpha). Higher trusts the teacher more; 0 is plain training.", decimals=2, step=0.05)
        self.begin_group("Options")
        self.add_check("control", "Control run", "Also train the student alone (same init, seed, epochs, data) "
                       "and report what distillation added: the share of the teacher–student gap it closed. "
                       "Doubles the student's training time.", text="Also train the student alone")
        self.cache = self.add_check("cache_teacher_logits", "Cache logits", "Compute the teacher's outputs "
                                    "once and reuse them every epoch: saves a teacher forward pass per batch, costs "
                                    "memory. Only used with data.augment = false (augmented inputs differ every "
                                    "epoch).", text="Reuse across epochs")
        self.cross_note = QLabel("")
        self.cross_note.setObjectName("distillNote")
        self.cross_note.setWordWrap(True)
        self.cross_note.setVisible(False)
        self.cross_note.setStyleSheet("background: #fff4e5; color: #663c00; border: 1px solid #f3c98b; "
                                      "border-radius: 3px; padding: 6px;")
        self.body_layout.addWidget(self.cross_note)
        assert self.enabled_check is not None
        self.enabled_check.toggled.connect(self._on_enable)

    def _stored_runs(self) -> list[tuple[str, str]]:
        return stored_teachers(getattr(self.host, "store", None))

    def _on_enable(self, on: bool) -> None:
        """Turning distillation on with no teacher yet: start from a sensible one instead of an error."""
        if on and not self._loading and self.teacher.current_kind() == "file" and not self.teacher.path.text().strip():
            self.teacher.set_value(DEFAULT_TEACHER)
            self._emit_changed()

    def sync_states(self) -> None:
        kind = self.teacher.current_kind()
        needs_training = kind == "zoo" or (kind == "file" and self.teacher.path.text().strip().endswith(".py"))
        self.set_row_visible("teacher_width", kind == "zoo")
        self.set_row_visible("teacher_weights", kind != "run")
        self.weights.setEnabled(needs_training)
        browse = self.findChild(QToolButton, "distill_teacher_weights_browse")
        if browse is not None:
            browse.setEnabled(needs_training)
        self.epochs.setEnabled(needs_training and not self.weights.text().strip())

    def on_recipe_validated(self, recipe: Recipe) -> None:
        notes: list[str] = []
        if recipe.distill is not None and recipe.prune is not None:
            notes.append("[prune] and [distill] cannot run in one recipe: to fine-tune a pruned model from the "
                         "unpruned one, turn on Pruning → 'Use the unpruned model as teacher' instead.")
        if recipe.distill is not None and recipe.distill.cache_teacher_logits and recipe.data.augment:
            notes.append("Teacher logits are not cached while data augmentation is on (inputs change every epoch).")
        self.cross_note.setText("<br>".join(notes))
        self.cross_note.setVisible(bool(notes))

    def load(self, recipe: Recipe) -> None:
        super().load(recipe)
        self.teacher.refresh_runs(keep=self.teacher.run.currentData())
