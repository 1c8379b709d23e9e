"""Pruning panel: structured/unstructured pruning, fine-tuning and the sensitivity analysis (the [prune] section).

Two things this panel must make obvious, because they are the most common pruning disappointment:
unstructured pruning only zeroes weights (same tensor shapes, so dense kernels do the same work
and files keep their size), while structured pruning removes whole channels and gives a smaller,
faster dense model. A visible note says so, and after a run the prune stage's measured latency
is shown here as the proof.

"Analyse sensitivity" runs ``workbench.techniques.prune.sensitivity.sensitivity_for_recipe`` as a job on the
current recipe (never on the GUI thread; the Stop buttons cancel it at the next batch). The result
is a bar chart of the accuracy drop when each layer group is pruned alone, plus a table; the user
selects the groups that hurt most and "Exclude selected" adds them to ``skip_layers``. Nothing is
changed without that click.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from pydantic import ValidationError
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from workbench.core.budget import over_budget
from workbench.core.events import CancelToken, Reporter
from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel, format_module_names, parse_module_names
from workbench.recipe import PruneSection, Recipe

SENSITIVITY_JOB = "Sensitivity analysis"
#: Bars above the threshold are drawn in this colour (candidates for skip_layers), the rest in BAR_COLOUR.
HOT_COLOUR = "#d9534f"
BAR_COLOUR = "#5b8def"
SELECTED_COLOUR = "#f0a030"


def sensitivity_job(recipe: Recipe, store: Any = None) -> Callable[[Reporter, CancelToken], Any]:
    """A job function: load (and if needed train) the recipe's model, prune each group alone, evaluate.

    The recipe is a copy built before the job starts; the function never reads a widget.
    """

    def run(reporter: Reporter, cancel: CancelToken) -> Any:
        from workbench.techniques.prune.sensitivity import sensitivity_for_recipe

        return sensitivity_for_recipe(recipe, store=store, reporter=reporter, cancel=cancel)

    return run


@register_panel(order=100)
class PrunePanel(RecipePanel):
    section_name = "prune"
    title = "Pruning"
    description = ("Remove the least important weights, then fine-tune to recover accuracy. The result is "
                   "measured against the unpruned model in the same run.")
    optional = True

    def build(self) -> None:
        self.note = QLabel()
        self.note.setObjectName("pruneNote")
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.RichText)
        self.body_layout.insertWidget(0, self.note)
        self.method = self.add_choice(
            "method", "Method", "Structured removes whole channels: a smaller dense model that is measurably "
            "faster. Unstructured zeroes single weights: higher sparsity at the same accuracy, but no speed-up or "
            "smaller file with dense kernels.",
            labels={"structured": "Structured (remove channels)", "unstructured": "Unstructured (zero weights)"},
            item_tips={"structured": "Removes whole channels with every coupled layer (DepGraph): fewer MACs, "
                                     "smaller file, lower latency.",
                       "unstructured": "Zeroes individual weights; tensors keep their shape, so dense kernels "
                                       "and files do not get faster or smaller."})
        self.add_double("ratio", "Ratio", "Fraction of channels (structured) or weights (unstructured) to remove. "
                        "Higher means a smaller model and a larger accuracy loss to recover by fine-tuning.",
                        decimals=3, step=0.05)
        self.importance = self.add_choice(
            "importance", "Importance", "How channels are ranked before the weakest are removed. L1/L2 norms are "
            "cheap and robust; BN scale uses BatchNorm gammas; Taylor uses gradients (a few training batches) "
            "and is often more accurate at high ratios.",
            labels={"l1": "L1 norm", "l2": "L2 norm", "bn_scale": "BatchNorm scale", "taylor": "Taylor (gradients)"})
        self.add_choice("scope", "Scope", "Uniform removes the same fraction from every layer (predictable shapes). "
                        "Global ranks all layers together: robust layers lose more, sensitive ones less, but some "
                        "layers can shrink a lot.", labels={"uniform": "Uniform per layer", "global": "Global"})
        self.round_to = self.add_spin("round_to", "Round channels to", "Structured only: keep channel counts a "
                                      "multiple of this (8 or 16 suits SIMD/tensor cores); 1 = exact ratio. Rounding "
                                      "trades a slightly different ratio for faster kernels.", special="1 (off)")
        self.skip = self.add_parsed_text(
            "skip_layers", "Skip layers", "Module names never pruned (their output channels stay). Skipping the "
            "most sensitive groups (see the analysis below) keeps accuracy at the cost of a smaller reduction. "
            "The classifier is always kept.", parse_module_names, format_module_names,
            placeholder="e.g. features.0, features.3 (comma-separated)")
        self.add_spin("steps", "Iterative steps", "Prune in N smaller steps with fine-tuning in between: gentler "
                      "on accuracy at high ratios, at the cost of N× the pruning work.")
        self.begin_group("Fine-tuning", "Training after pruning recovers most of the lost accuracy.")
        self.add_spin("finetune_epochs", "Epochs", "Epochs of fine-tuning after pruning (split across iterative "
                      "steps). More recovers more accuracy and costs training time; 0 shows the raw damage.",
                      special="0 (none)")
        self.add_float_text("finetune_lr", "Learning rate", "Fine-tuning learning rate, usually lower than the "
                            "original training's: the pruned weights are close to good already.")
        self.distill = self.add_check(
            "finetune_distill", "Teacher", "Fine-tune with the unpruned model as a distillation teacher: its soft "
            "outputs guide the pruned model back and usually recover more accuracy than labels alone, at the "
            "cost of one extra forward pass per batch.", text="Unpruned model as teacher")
        self.temperature = self.add_double("finetune_temperature", "KD temperature", "Softens the teacher's "
                                           "outputs so near-miss classes carry signal; 2–6 is typical.",
                                           decimals=2, step=0.5)
        self.alpha = self.add_double("finetune_alpha", "KD alpha", "Weight of the teacher's soft targets versus "
                                     "the true labels (1 = teacher only, 0 = labels only).", decimals=2, step=0.05)
        for combo in self.findChildren(QComboBox):  # long item labels must not widen the narrow editor column
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        self._build_sensitivity()
        last = self.begin_group("Last run", "What the prune stage of the latest run measured.")
        self.last_run = QLabel("No run with pruning yet in this session.")
        self.last_run.setObjectName("pruneLastRun")
        self.last_run.setWordWrap(True)
        self.last_run.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.last_run.setToolTip("The prune stage measures latency before and after pruning, side by side: "
                                 "the proof of what each method buys.")
        self.add_widget(self.last_run)
        self._move_out_of_body(last)
        if self.host is not None:
            self.host.jobs.jobStarted.connect(self._watch_job)

    # -- sensitivity UI --------------------------------------------------------------------------------
    def _build_sensitivity(self) -> None:
        box = self.begin_group("Sensitivity analysis", "Which layer groups can be pruned cheaply, and which to skip.")
        explain = QLabel("Prunes each layer group <i>alone</i> at the ratio above (no fine-tuning) and measures the "
                         "validation accuracy drop (choices are made on validation; runs report on eval). Groups "
                         "with a large drop are candidates for <b>Skip layers</b>.")
        explain.setWordWrap(True)
        explain.setStyleSheet("color: #555;")
        self.add_widget(explain)
        row = QWidget()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        self.analyse_button = QPushButton("Analyse sensitivity")
        self.analyse_button.setObjectName("sensitivityButton")
        self.analyse_button.setToolTip("Run the analysis now in the background on the current recipe's model "
                                       "(trained per [train] first when it has no weights). Nothing changes "
                                       "until you exclude groups.")
        self.analyse_button.clicked.connect(self.analyse_sensitivity)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("sensitivityStopButton")
        self.stop_button.setToolTip("Stop the analysis at its next batch.")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop_sensitivity)
        thr_label = QLabel("Highlight drops above")
        self.threshold = QDoubleSpinBox()
        self.threshold.setObjectName("sensitivityThreshold")
        self.threshold.setRange(0.0, 100.0)
        self.threshold.setDecimals(1)
        self.threshold.setSingleStep(0.5)
        self.threshold.setValue(1.0)
        self.threshold.setSuffix(" pts")
        tip = ("Groups losing more accuracy points than this are drawn red and picked by 'Select above "
               "threshold'. Lower keeps more accuracy; higher prunes more of the model.")
        self.threshold.setToolTip(tip)
        thr_label.setToolTip(tip)
        self.threshold.valueChanged.connect(self._restyle_bars)
        for w in (self.analyse_button, self.stop_button):
            lay.addWidget(w)
        lay.addStretch(1)
        self.add_widget(row)
        thr_row = QWidget()
        thr_lay = QHBoxLayout(thr_row)
        thr_lay.setContentsMargins(0, 0, 0, 0)
        thr_lay.addWidget(thr_label)
        thr_lay.addWidget(self.threshold)
        thr_lay.addStretch(1)
        self.add_widget(thr_row)
        self.sens_status = QLabel("")
        self.sens_status.setObjectName("sensitivityStatus")
        self.sens_status.setWordWrap(True)
        self.add_widget(self.sens_status)

        self.chart = pg.PlotWidget(background=None)
        self.chart.setObjectName("sensitivityChart")
        self.chart.setToolTip("Accuracy drop (points) when each group alone is pruned at the chosen ratio, most "
                              "sensitive on top. Red bars exceed the threshold; orange ones are selected.")
        self.chart.setMenuEnabled(False)
        self.chart.setMouseEnabled(x=False, y=False)
        self.chart.hideButtons()
        self.chart.setFixedHeight(170)
        plot = self.chart.getPlotItem()
        plot.invertY(True)
        plot.showGrid(x=True, alpha=0.25)
        plot.setLabel("bottom", "accuracy drop (points)")
        plot.getAxis("left").setWidth(110)
        self.bars = pg.BarGraphItem(x0=0.0, y=np.zeros(0), height=0.6, width=np.zeros(0), brushes=[],
                                    pen=pg.mkPen(None))
        plot.addItem(self.bars)
        self.threshold_line = pg.InfiniteLine(pos=self.threshold.value(), angle=90,
                                              pen=pg.mkPen(HOT_COLOUR, width=1, style=Qt.PenStyle.DashLine))
        plot.addItem(self.threshold_line)
        self.add_widget(self.chart)

        self.table = QTableWidget(0, 8)
        self.table.setObjectName("sensitivityTable")
        self.table.setHorizontalHeaderLabels(["Group (root layer)", "Drop (pts)", "Val accuracy", "Type", "Coupled",
                                              "Channels", "Removed", "Params removed"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setMinimumHeight(160)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.setToolTip("One row per prunable group, named by the layer whose output channels are removed "
                              "(coupled layers shrink with it). Select rows, then 'Exclude selected'.")
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.add_widget(self.table)

        row2 = QWidget()
        lay2 = QHBoxLayout(row2)
        lay2.setContentsMargins(0, 0, 0, 0)
        self.select_hot_button = QPushButton("Select above threshold")
        self.select_hot_button.setObjectName("selectSensitiveButton")
        self.select_hot_button.setToolTip("Select the groups whose drop exceeds the threshold.")
        self.select_hot_button.clicked.connect(self.select_above_threshold)
        self.exclude_button = QPushButton("Exclude selected")
        self.exclude_button.setObjectName("excludeSelectedButton")
        self.exclude_button.setToolTip("Add the selected groups to Skip layers (and turn pruning on): they keep "
                                       "all their channels, protecting accuracy at the cost of less reduction.")
        self.exclude_button.clicked.connect(self.exclude_selected)
        for w in (self.select_hot_button, self.exclude_button):
            w.setEnabled(False)
            lay2.addWidget(w)
        lay2.addStretch(1)
        self.add_widget(row2)
        self.sensitivity: Any = None
        self._job_id: int | None = None
        self._move_out_of_body(box)

    def _move_out_of_body(self, box: QWidget) -> None:
        """Keep a group usable while pruning is off: analyse first, then decide (the body greys out when off)."""
        self.body_layout.removeWidget(box)
        layout = self.layout()
        assert layout is not None
        layout.addWidget(box)

    # -- states -----------------------------------------------------------------------------------------
    def sync_states(self) -> None:
        structured = self.method.currentData() == "structured"
        self.importance.setEnabled(structured)
        self.round_to.setEnabled(structured)
        kd = self.distill.isChecked()
        self.temperature.setEnabled(kd)
        self.alpha.setEnabled(kd)
        common = ("Only <b>structured</b> pruning removes channels and so makes the dense model smaller and "
                  "faster. <b>Unstructured</b> pruning zeroes weights but does not make dense kernels faster or "
                  "files smaller. Each run measures latency before and after, side by side.")
        if structured:
            self.note.setText(common)
            self.note.setStyleSheet("background: #eef4fb; border: 1px solid #c6d9f0; border-radius: 3px; "
                                    "padding: 6px;")
        else:
            self.note.setText("<b>Unstructured pruning zeroes weights but does not make dense kernels faster or "
                              "files smaller</b>: every tensor keeps its shape, so the dense model does the same "
                              "work (the run's measured latency will show it). Only structured pruning removes "
                              "channels. Choose unstructured to study sparsity, or for sparse runtimes.")
            self.note.setStyleSheet("background: #fff4e5; color: #663c00; border: 1px solid #f3c98b; "
                                    "border-radius: 3px; padding: 6px;")

    def set_busy(self, busy: bool) -> None:
        self.analyse_button.setEnabled(not busy)

    # -- sensitivity job ---------------------------------------------------------------------------------
    def _recipe_for_analysis(self) -> Recipe | None:
        """The current recipe; with pruning off, this panel's settings (ratio, importance) still apply."""
        assert self.host is not None
        recipe = self.host.current_recipe()
        if recipe is None or recipe.prune is not None:
            return recipe
        try:
            recipe.prune = PruneSection(**{n: b.getter() for n, b in self.fields.items()})
        except (ValueError, ValidationError):
            recipe.prune = PruneSection()
        return recipe

    def analyse_sensitivity(self) -> None:
        if self.host is None:
            return
        recipe = self._recipe_for_analysis()
        if recipe is None:
            self.sens_status.setText("Fix the recipe errors first: the analysis uses the current model and data.")
            return
        if self.host.jobs.busy:
            self.sens_status.setText("Another job is running; try again when it has finished.")
            return
        if recipe.model.source == "onnx":
            self.sens_status.setText("An ONNX model cannot be pruned; pick a PyTorch model.")
            return
        assert recipe.prune is not None
        self.sens_status.setText(f"Analysing: pruning each group alone at {recipe.prune.ratio:.0%} "
                                 f"({recipe.prune.importance})…")
        job = self.host.jobs.start(SENSITIVITY_JOB, sensitivity_job(recipe, getattr(self.host, "store", None)))
        self._job_id = job.id
        self.stop_button.setEnabled(True)
        job.progressed.connect(self._on_progress)
        job.finished.connect(lambda result, jid=job.id: self._on_result(jid, result))
        job.errored.connect(lambda msg, _tb: self.sens_status.setText(f"Analysis failed: {msg}"))
        job.cancelledJob.connect(lambda: self.sens_status.setText("Analysis stopped."))

    def stop_sensitivity(self) -> None:
        if self.host is None:
            return
        job = self.host.jobs.current()
        if job is not None and job.id == self._job_id:
            job.cancel()
            self.sens_status.setText("Stopping…")
        self.stop_button.setEnabled(False)

    def _on_progress(self, done: int, total: int, message: str) -> None:
        if total > 0 and message.startswith("sensitivity"):
            self.sens_status.setText(f"Analysing: {done}/{total} groups ({message.removeprefix('sensitivity: ')})")
        elif message:
            self.sens_status.setText(f"Analysing: {message}")

    def _on_result(self, job_id: int, result: object) -> None:
        if job_id == self._job_id:
            self._job_id = None
            self.stop_button.setEnabled(False)
        if result is None or not hasattr(result, "rows"):
            return
        self.show_sensitivity(result)

    def show_sensitivity(self, result: Any) -> None:
        """Fill the chart and the table from a ``SensitivityResult`` (rows sorted most sensitive first)."""
        self.sensitivity = result
        rows = list(result.rows)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            cells = [row.group, f"{row.drop:+.2f}", f"{row.accuracy:.2%}", row.type, str(row.coupled_layers),
                     str(row.channels), str(row.channels_removed), f"{row.params_removed:,}"]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c != 0 and c != 3:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        self.chart.getPlotItem().getAxis("left").setTicks([[(float(i), r.group) for i, r in enumerate(rows)], []])
        self.chart.setFixedHeight(min(420, max(170, 24 * len(rows) + 60)))
        self._restyle_bars()
        self.chart.getPlotItem().setYRange(-0.6, max(0, len(rows) - 1) + 0.6, padding=0)
        self.select_hot_button.setEnabled(bool(rows))
        where = f" of {result.model}" if getattr(result, "model", "") else ""
        self.sens_status.setText(
            f"{len(rows)} groups{where} pruned alone at {result.ratio:.0%} ({result.importance}); unpruned "
            f"{getattr(result, 'split', 'validation')} accuracy {result.base_accuracy:.2%}. Select the most sensitive "
            "and click 'Exclude selected'.")

    def _selected_rows(self) -> list[int]:
        return sorted({i.row() for i in self.table.selectionModel().selectedRows()})

    def _restyle_bars(self, *_args: object) -> None:
        self.threshold_line.setValue(self.threshold.value())
        if self.sensitivity is None:
            return
        drops = np.array([r.drop for r in self.sensitivity.rows], dtype=float)
        selected = set(self._selected_rows())
        limit = self.threshold.value()
        brushes = [pg.mkBrush(SELECTED_COLOUR if i in selected else HOT_COLOUR if over_budget(float(d), limit)
                              else BAR_COLOUR) for i, d in enumerate(drops)]
        self.bars.setOpts(x0=0.0, y=np.arange(len(drops), dtype=float), height=0.6, width=drops, brushes=brushes)

    def _on_selection(self) -> None:
        self.exclude_button.setEnabled(bool(self._selected_rows()))
        self._restyle_bars()

    def select_above_threshold(self) -> None:
        if self.sensitivity is None:
            return
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for i, r in enumerate(self.sensitivity.rows):
            if over_budget(r.drop, self.threshold.value()):
                self.table.selectRow(i)
        self.table.setSelectionMode(mode)

    def selected_groups(self) -> list[str]:
        if self.sensitivity is None:
            return []
        return [self.sensitivity.rows[i].group for i in self._selected_rows()]

    def exclude_selected(self) -> list[str]:
        """Add the selected groups to ``skip_layers`` (turning pruning on); returns the names added."""
        names = self.selected_groups()
        if not names:
            return []
        try:
            current = parse_module_names(self.skip.text())
        except ValueError:
            current = [p.strip() for p in self.skip.text().split(",") if p.strip()]
        added = [n for n in names if n not in current]
        self.fields["skip_layers"].setter(current + added)
        if self.enabled_check is not None and not self.enabled_check.isChecked():
            self.enabled_check.setChecked(True)  # emits changed
        self._emit_changed()
        self.sens_status.setText(f"Added to Skip layers: {', '.join(added)}" if added else
                                 "The selected groups are already in Skip layers.")
        return added

    # -- last run ------------------------------------------------------------------------------------------
    def _watch_job(self, job: Any) -> None:
        if job.name in ("Run", "Benchmark"):
            job.stageFinished.connect(self._on_stage_finished)

    def _on_stage_finished(self, stage: str, record: object) -> None:
        if stage != "prune" or not isinstance(record, dict):
            return
        before, after = record.get("before") or {}, record.get("after") or {}
        b_lat, a_lat = before.get("latency_ms_p50"), after.get("latency_ms_p50")
        lines = [f"<b>{record.get('method', '')} {float(record.get('ratio') or 0):.0%}</b>"]
        if b_lat and a_lat:
            lines.append(f"latency p50 {b_lat:.3f} → {a_lat:.3f} ms (<b>{b_lat / a_lat:.2f}×</b>)")
        if before.get("params") and after.get("params"):
            lines.append(f"parameters {before['params']:,} → {after['params']:,}")
        if before.get("size_bytes") and after.get("size_bytes"):
            lines.append(f"size {before['size_bytes'] / 1e6:.2f} → {after['size_bytes'] / 1e6:.2f} MB")
        if before.get("accuracy") is not None and after.get("accuracy") is not None:
            lines.append(f"accuracy {before['accuracy']:.2%} → {after['accuracy']:.2%}")
        note = str(record.get("note") or "")
        self.last_run.setText(", ".join(lines) + (f"<br><span style='color:#555'>{html.escape(note)}</span>" if note else ""))
