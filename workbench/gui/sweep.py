"""Sweep view: how speed changes with batch size, precision and DataLoader settings.

The view is a form for a ``SweepSpec`` plus charts of the result. Pressing "Run sweep" hands the
main window's current (validated) recipe and the spec to ``engine.sweep.run_sweep`` as an ordinary
exclusive job, so the status bar's progress, the Stop button and the shutdown path treat it like a
training run. The engine stores the whole sweep as ONE run (kind ``sweep``); everything drawn here
comes from ``summary["sweep"]`` (or, while the job runs, from the same numbers arriving as metric
events), so re-opening a stored sweep shows exactly what the live view showed.

Charts are pyqtgraph items created once and updated with ``setData``. The latency budget is a view
setting: changing it (or p50/p95) re-marks the best point at once, without measuring again, using
the engine's ``best_within_budget`` so the GUI and ``workbench sweep --latency-budget`` agree.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from workbench.analysis.sweep import LoaderConfig, SweepSpec, best_within_budget
from workbench.core.store import RunStore
from workbench.errors import WorkbenchError
from workbench.gui.jobs import Job, JobManager, MetricEvent
from workbench.gui.plots import LivePlot, RingBuffer, Series
from workbench.gui.widgets import cpu_has_native_bf16, cuda_available
from workbench.recipe import Recipe

#: One colour per precision, the same in every chart of the view.
PRECISION_COLOURS = {"fp32": "#1f77b4", "bf16": "#ff7f0e", "fp16": "#2ca02c"}
PRECISION_ORDER = tuple(PRECISION_COLOURS)
DEFAULT_BATCH_SIZES = "1,8,32,128"
DEFAULT_WORKERS = "0,1,2"
LATENCY_KEYS = {"p95": "p95_ms", "p50": "p50_ms"}
CACHE_CHOICES = {"off": [False], "on": [True], "both": [False, True]}
MARKER_COLOUR = "#d62728"
LOADER_COLOURS = ("#9ecae1", "#3182bd")  # loader alone, training with it


def parse_int_list(text: str, *, minimum: int, what: str) -> list[int]:
    """``"1, 8,32"`` -> ``[1, 8, 32]`` (sorted, deduplicated); ValueError naming the bad entry."""
    values: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = int(part)
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not a whole number (e.g. 1,8,32)") from None
        if v < minimum:
            raise ValueError(f"{what}: {v} is below {minimum}")
        values.append(v)
    if not values:
        raise ValueError(f"{what}: give at least one value, comma-separated")
    return sorted(set(values))


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


class SweepPlot(LivePlot):
    """A ``LivePlot`` holding static sweep points instead of a time series.

    Reusing LivePlot keeps the title bar, the PNG/CSV buttons and the context menu identical to the
    dashboard's plots. Sweeps have a handful of unevenly spaced points, so downsampling and
    clip-to-view are off (both assume dense, evenly spaced x and would hide points).
    """

    def __init__(self, object_name: str, title: str, x_label: str, y_label: str, *, log2_x: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(object_name, title, y_label, parent)
        self.x_label = x_label
        self.y_label = y_label
        self.log2_x = log2_x
        self.plot_item.setLabel("bottom", x_label + (" (log scale)" if log2_x else ""))
        self.plot_item.setDownsampling(ds=1, auto=False)
        self.plot_item.setClipToView(False)
        self.plot_item.getViewBox().setDefaultPadding(0.08)
        self.plot_widget.setMinimumHeight(170)
        legend = self.plot_item.legend
        if legend is not None:
            # Top left: every sweep curve rises to the right, so that corner stays clear of data.
            legend.anchor(itemPos=(0, 0), parentPos=(0, 0), offset=(6, 6))
            legend.setBrush(pg.mkBrush(255, 255, 255, 210))
        self._in_legend: dict[str, bool] = {}

    def add_line(self, key: str, name: str, color: str, *, dashed: bool = False, symbol: str = "o") -> Series:
        """A line through markers (points are few; the line shows the trend between them)."""
        style = Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine
        item = self.plot_item.plot([], [], name=name, pen=pg.mkPen(color=color, width=2, style=style),
                                   symbol=symbol, symbolBrush=color if not dashed else None, symbolPen=color,
                                   symbolSize=7)
        series = Series(key, name, RingBuffer(capacity=1024), item)
        self.series[key] = series
        self._in_legend[key] = True
        return series

    def set_points(self, key: str, xs: Sequence[float], ys: Sequence[float]) -> None:
        """Replace one series' points (the item is kept; ``redraw`` pushes them with setData)."""
        s = self.series[key]
        s.buffer.clear()
        s.buffer.extend(zip(xs, ys, strict=True))
        s.dirty = True

    def redraw(self) -> None:
        """Push changed buffers into their curves; batch sizes go on a log2 axis ticked at the sizes swept.

        pyqtgraph's own log mode ticks in powers of ten (1, 10¹, 2·10¹…), which hides which batch
        sizes were measured; plotting log2(batch) with explicit ticks names each one. The buffers
        (and so the CSV export) keep the real batch sizes.
        """
        if not self.log2_x:
            super().redraw()
            return
        sizes: set[float] = set()
        for s in self.series.values():
            x, y = s.buffer.arrays()
            sizes.update(float(v) for v in x if v > 0)
            if s.dirty:
                keep = x > 0
                s.item.setData(np.log2(x[keep]), y[keep])
                s.dirty = False
        self.plot_item.getAxis("bottom").setTicks([[(math.log2(b), f"{b:g}") for b in sorted(sizes)], []])

    def sync_legend(self) -> None:
        """Only series that hold points are named in the legend (fp16 on a CPU machine is not)."""
        legend = self.plot_item.legend
        if legend is None:
            return
        for key, s in self.series.items():
            want = len(s.buffer) > 0
            if want and not self._in_legend.get(key):
                legend.addItem(s.item, s.name)
            elif not want and self._in_legend.get(key):
                legend.removeItem(s.item)
            self._in_legend[key] = want

    def save_csv(self, path: str | Path) -> Path:
        """Long format with real column names: series, x, y (one row per point)."""
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["series", self.x_label, self.y_label])
            for s in self.series.values():
                x, y = s.buffer.arrays()
                w.writerows((s.name, f"{a:.6g}", f"{b:.6g}") for a, b in zip(x, y, strict=True))
        return path


class TradeoffPlot(SweepPlot):
    """Throughput against latency, one curve per precision, with the latency budget and its best point.

    Each point is labelled with its batch size; the budget is a vertical line and the best point
    within it a large star. All items are created here once and only moved afterwards.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("sweepTradeoffChart", "Throughput against latency (inference)", "latency (ms)",
                         "samples / s", parent=parent)
        self.plot_widget.setToolTip("Each point is one batch size (labelled b1, b8, …). Up and to the left "
                                    "is better. The dashed line is the latency budget; the star is the "
                                    "highest-throughput point within it.")
        self.budget_line = pg.InfiniteLine(angle=90, movable=False,
                                           pen=pg.mkPen(MARKER_COLOUR, width=1.5, style=Qt.PenStyle.DashLine),
                                           label="budget", labelOpts={"position": 0.06, "color": MARKER_COLOUR})
        self.plot_item.addItem(self.budget_line, ignoreBounds=True)
        self.budget_line.setVisible(False)
        self.marker = pg.ScatterPlotItem(size=22, symbol="star", pen=pg.mkPen(MARKER_COLOUR, width=1.5),
                                         brush=pg.mkBrush(255, 215, 0, 200))
        self.marker.setZValue(10)
        legend = self.plot_item.legend
        if legend is not None:
            # Bottom right (slow and low throughput): the one corner a trade-off curve never visits.
            legend.anchor(itemPos=(1, 1), parentPos=(1, 1), offset=(-6, -6))
        self.plot_item.addItem(self.marker)
        self._labels: list[pg.TextItem] = []

    def set_labels(self, points: Sequence[tuple[float, float, str]]) -> None:
        """Batch-size labels next to the points (a pool of text items, grown once, then reused)."""
        while len(self._labels) < len(points):
            t = pg.TextItem(color=(70, 70, 70), anchor=(-0.15, 1.05))
            font = t.textItem.font()
            font.setPointSizeF(7.5)
            t.setFont(font)
            self.plot_item.addItem(t, ignoreBounds=True)
            self._labels.append(t)
        for i, t in enumerate(self._labels):
            if i < len(points):
                x, y, text = points[i]
                t.setText(text)
                t.setPos(x, y)
            t.setVisible(i < len(points))

    def set_budget(self, budget_ms: float | None, best: tuple[float, float] | None) -> None:
        if budget_ms is None:
            self.budget_line.setVisible(False)
        else:
            self.budget_line.setValue(budget_ms)
            self.budget_line.label.setFormat(f"budget {budget_ms:g} ms")
            self.budget_line.setVisible(True)
        self.marker.setData([best[0]] if best else [], [best[1]] if best else [])

    def marker_position(self) -> tuple[float, float] | None:
        x, y = self.marker.getData()
        return (float(x[0]), float(y[0])) if x is not None and len(x) else None


class LoaderBars(SweepPlot):
    """Samples/s per DataLoader setting: the loader alone (light) and training with it (dark)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("sweepLoaderChart", "DataLoader settings", "setting", "samples / s", parent=parent)
        self.plot_widget.setToolTip("Per loader setting: samples/s of the loader alone (light) and of full "
                                    "training steps with it (dark). Training is what counts; the loader "
                                    "alone shows how much headroom it has.")
        self.plot_item.showGrid(x=False, y=True, alpha=0.25)
        self.alone = pg.BarGraphItem(x=[], height=[], width=0.38, brush=LOADER_COLOURS[0], pen=pg.mkPen(None),
                                     name="loader alone")
        self.training = pg.BarGraphItem(x=[], height=[], width=0.38, brush=LOADER_COLOURS[1], pen=pg.mkPen(None),
                                        name="training with it")
        self.plot_item.addItem(self.alone)
        self.plot_item.addItem(self.training)
        self.rows: list[tuple[str, float, float | None]] = []

    def set_rows(self, rows: Sequence[tuple[str, float, float | None]]) -> None:
        """``rows``: (label, loader-alone samples/s, training samples/s or None)."""
        self.rows = list(rows)
        n = len(rows)
        self.alone.setOpts(x=[i - 0.2 for i in range(n)], height=[r[1] for r in rows], width=0.38)
        self.training.setOpts(x=[i + 0.2 for i in range(n)], height=[r[2] or 0.0 for r in rows], width=0.38)
        self.plot_item.getAxis("bottom").setTicks([[(float(i), r[0]) for i, r in enumerate(rows)], []])
        top = max([v for r in rows for v in (r[1], r[2] or 0.0)] or [1.0])
        self.plot_item.setXRange(-0.6, max(n, 1) - 0.4, padding=0)
        self.plot_item.setYRange(0, top * 1.1, padding=0)

    def point_count(self) -> int:
        return len(self.rows)

    def save_csv(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["setting", "loader_alone_samples_per_s", "train_samples_per_s"])
            w.writerows((label, f"{a:.6g}", "" if t is None else f"{t:.6g}") for label, a, t in self.rows)
        return path


class SweepView(QWidget):
    """Set up, run and read a sweep; re-open a stored one with ``open_run``.

    ``recipe_provider`` returns the main window's current valid recipe (None while the panels hold
    an error); ``jobs`` is the window's JobManager, so a sweep is an exclusive job like a run.
    """

    jobStarted = Signal(object)  # Job: the window attaches the same handlers as for a run
    sweepShown = Signal(int)  # run id of the sweep now on screen (-1 while a sweep is live)

    def __init__(self, store: RunStore, jobs: JobManager, recipe_provider: Callable[[], Recipe | None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sweepView")
        self.store = store
        self.jobs = jobs
        self._recipe_provider = recipe_provider
        self._recipe_valid = True
        self._job_id: int | None = None
        self._data: dict[str, Any] = {}
        self._live: dict[str, Any] = {}
        self.run_id: int | None = None
        self._spec_ok = False
        self._best: dict[str, Any] | None = None
        self._build_ui()
        self.jobs.busyChanged.connect(self._on_busy_changed)
        self._validate()

    # ------------------------------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        root = QHBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        root.setSpacing(6)
        root.addWidget(self._build_controls())
        right = QVBoxLayout()
        right.setSpacing(4)
        self.title_label = QLabel("No sweep yet: set the grid on the left and press Run sweep.")
        self.title_label.setObjectName("sweepTitle")
        self.title_label.setToolTip("Which sweep the charts show.")
        font = self.title_label.font()
        font.setBold(True)
        self.title_label.setFont(font)
        right.addWidget(self.title_label)
        self.budget_label = QLabel("")
        self.budget_label.setObjectName("sweepBudgetResult")
        self.budget_label.setWordWrap(True)
        self.budget_label.setToolTip("The highest inference throughput whose latency fits the budget "
                                     "(star in the trade-off chart). Change the budget to re-mark it.")
        right.addWidget(self.budget_label)
        grid = QGridLayout()
        grid.setSpacing(4)
        self.latency_plot = SweepPlot("sweepLatencyChart", "Latency per batch (inference)", "batch size",
                                      "ms", log2_x=True)
        self.latency_plot.plot_widget.setToolTip("Time for one batch: median (solid) and 95th percentile "
                                                 "(dashed), per precision.")
        self.inference_plot = SweepPlot("sweepInferenceChart", "Inference throughput", "batch size",
                                        "samples / s", log2_x=True)
        self.inference_plot.plot_widget.setToolTip("Samples per second at the median latency, per precision.")
        self.train_plot = SweepPlot("sweepTrainChart", "Training throughput", "batch size",
                                    "samples / s", log2_x=True)
        self.train_plot.plot_widget.setToolTip("One optimizer step on an in-memory batch, after warm-up: what "
                                               "the model can train at when the loader keeps up.")
        self.tradeoff_plot = TradeoffPlot()
        for prec in PRECISION_ORDER:
            c = PRECISION_COLOURS[prec]
            self.latency_plot.add_line(f"{prec}:p50", f"{prec} p50", c)
            self.latency_plot.add_line(f"{prec}:p95", f"{prec} p95", c, dashed=True)
            self.inference_plot.add_line(prec, prec, c)
            self.train_plot.add_line(prec, prec, c)
            self.tradeoff_plot.add_line(prec, prec, c)
        grid.addWidget(self.tradeoff_plot, 0, 0)
        grid.addWidget(self.latency_plot, 0, 1)
        grid.addWidget(self.inference_plot, 1, 0)
        grid.addWidget(self.train_plot, 1, 1)
        right.addLayout(grid, 3)
        self.loader_box = QFrame()
        self.loader_box.setObjectName("sweepLoaderBox")
        self.loader_box.setToolTip("Loader sweep results: measured with real training steps, since on a small "
                                   "CPU the workers compete with training for the same cores.")
        lb = QHBoxLayout(self.loader_box)
        lb.setContentsMargins(4, 4, 4, 4)
        self.loader_plot = LoaderBars()
        lb.addWidget(self.loader_plot, 3)
        self.verdict_label = QLabel("")
        self.verdict_label.setObjectName("sweepVerdict")
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.verdict_label.setToolTip("Whether training waits on its data loader or on compute, per the "
                                      "measured share of time spent waiting for the next batch.")
        self.verdict_label.setTextFormat(Qt.TextFormat.RichText)
        lb.addWidget(self.verdict_label, 2)
        self.loader_box.setVisible(False)
        right.addWidget(self.loader_box, 2)
        self.loader_box.setMaximumHeight(300)
        self.notes_label = QLabel("")
        self.notes_label.setObjectName("sweepNotes")
        self.notes_label.setWordWrap(True)
        self.notes_label.setStyleSheet("color: #7a5b00;")
        self.notes_label.setToolTip("What was not measured and why, and caveats the engine reported.")
        right.addWidget(self.notes_label)
        root.addLayout(right, 1)
        self.plots: dict[str, SweepPlot] = {"tradeoff": self.tradeoff_plot, "latency": self.latency_plot,
                                            "inference": self.inference_plot, "train": self.train_plot,
                                            "loader": self.loader_plot}

    def _build_controls(self) -> QWidget:
        box = QWidget()
        form = QFormLayout(box)
        form.setContentsMargins(4, 4, 4, 4)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        def tip(w: QWidget, text: str) -> QWidget:
            w.setToolTip(text)
            return w

        self.batch_edit = QLineEdit(DEFAULT_BATCH_SIZES)
        self.batch_edit.setObjectName("sweepBatchSizes")
        form.addRow("Batch sizes", tip(self.batch_edit, "Comma-separated batch sizes to measure, e.g. 1,8,32,128."))
        prec_row = QHBoxLayout()
        self.precision_checks: dict[str, QCheckBox] = {}
        for prec in PRECISION_ORDER:
            cb = QCheckBox(prec)
            cb.setObjectName(f"sweepPrecision_{prec}")
            self.precision_checks[prec] = cb
            prec_row.addWidget(cb)
        self.precision_checks["fp32"].setChecked(True)
        self.precision_checks["fp32"].setToolTip("Full precision: the reference every other precision is "
                                                 "compared with.")
        bf16_tip = "bf16 autocast: half the memory traffic, same range as fp32."
        if not cuda_available() and not cpu_has_native_bf16():
            bf16_tip += " This CPU has no native bf16 (AVX-512 BF16/AMX): it is emulated, expect it slower."
        self.precision_checks["bf16"].setToolTip(bf16_tip)
        fp16 = self.precision_checks["fp16"]
        if cuda_available():
            fp16.setToolTip("fp16 autocast with loss scaling (CUDA).")
        else:
            fp16.setEnabled(False)
            fp16.setToolTip("fp16 autocast needs a CUDA GPU and this machine has none; use bf16 on CPU.")
        prec_row.addStretch(1)
        form.addRow("Precisions", prec_row)
        self.train_check = QCheckBox("also time training steps")
        self.train_check.setObjectName("sweepTrain")
        self.train_check.setChecked(True)
        form.addRow("", tip(self.train_check, "Time one optimizer step per batch size and precision (training "
                                              "throughput). Off: inference only, faster."))
        self.iters_spin = QSpinBox()
        self.iters_spin.setObjectName("sweepIters")
        self.iters_spin.setRange(0, 100000)
        self.iters_spin.setSpecialValueText("recipe")
        form.addRow("Timed calls", tip(self.iters_spin, "Timed inference calls per point; 'recipe' uses the "
                                                        "recipe's bench.iters. At least 3."))
        self.steps_spin = QSpinBox()
        self.steps_spin.setObjectName("sweepTrainSteps")
        self.steps_spin.setRange(3, 10000)
        self.steps_spin.setValue(10)
        form.addRow("Training steps", tip(self.steps_spin, "Timed optimizer steps per training point (after 3 "
                                                           "warm-up steps)."))
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setObjectName("sweepBudget")
        self.budget_spin.setRange(0.001, 1e6)
        self.budget_spin.setDecimals(3)
        self.budget_spin.setValue(10.0)
        self.budget_spin.setSuffix(" ms")
        self.budget_spin.setKeyboardTracking(False)
        self.budget_key = QComboBox()
        self.budget_key.setObjectName("sweepBudgetKey")
        self.budget_key.addItems(list(LATENCY_KEYS))
        budget_row = QHBoxLayout()
        budget_row.addWidget(tip(self.budget_spin, "Latency budget for one batch; the best throughput within "
                                                   "it is starred. Changing it re-marks without re-measuring."), 1)
        budget_row.addWidget(tip(self.budget_key, "Which latency the budget applies to: p95 (the slow tail, "
                                                  "what a service promises) or p50 (the median)."))
        form.addRow("Latency budget", budget_row)

        self.loader_group = QGroupBox("Loader sweep")
        self.loader_group.setObjectName("sweepLoaderGroup")
        self.loader_group.setCheckable(True)
        self.loader_group.setChecked(False)
        self.loader_group.setToolTip("Also measure DataLoader settings (workers, pinned memory, cache) with "
                                     "real training steps, each with a loader-bound/compute-bound verdict.")
        lf = QFormLayout(self.loader_group)
        self.workers_edit = QLineEdit(DEFAULT_WORKERS)
        self.workers_edit.setObjectName("sweepWorkers")
        lf.addRow("Workers", tip(self.workers_edit, "Comma-separated worker counts to try, e.g. 0,1,2."))
        self.pin_check = QCheckBox("try pinned memory")
        self.pin_check.setObjectName("sweepPinMemory")
        if cuda_available():
            self.pin_check.setToolTip("Also try pin_memory = true (faster copies to the GPU).")
        else:
            self.pin_check.setEnabled(False)
            self.pin_check.setToolTip("Pinned memory only speeds up copies to a CUDA GPU; this machine has none.")
        lf.addRow("", self.pin_check)
        self.cache_combo = QComboBox()
        self.cache_combo.setObjectName("sweepCache")
        self.cache_combo.addItems(list(CACHE_CHOICES))
        self.cache_combo.setCurrentText("both")
        lf.addRow("Cache", tip(self.cache_combo, "Decoded-image cache settings to try (only matters for image "
                                                 "files; in-memory data skips it with a reason)."))
        form.addRow(self.loader_group)

        self.error_label = QLabel("")
        self.error_label.setObjectName("sweepErrors")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b3261e;")
        self.error_label.setToolTip("Why Run sweep is disabled.")
        form.addRow(self.error_label)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run sweep")
        self.run_button.setObjectName("runSweepButton")
        self.run_button.setToolTip("Measure the grid on the current recipe's model, as one stored run. "
                                   "Stop (toolbar) ends it at the next checkpoint; what was measured is kept.")
        self.run_button.clicked.connect(self.start_sweep)
        buttons.addWidget(self.run_button, 1)
        form.addRow(buttons)
        self.status_label = QLabel("")
        self.status_label.setObjectName("sweepStatus")
        self.status_label.setWordWrap(True)
        self.status_label.setToolTip("State of the last sweep.")
        form.addRow(self.status_label)

        for w in (self.batch_edit, self.workers_edit):
            w.textChanged.connect(self._validate)
        for cb in self.precision_checks.values():
            cb.toggled.connect(self._validate)
        self.loader_group.toggled.connect(self._validate)
        self.train_check.toggled.connect(self._validate)
        self.iters_spin.valueChanged.connect(self._validate)
        self.budget_spin.valueChanged.connect(self.remark)
        self.budget_key.currentIndexChanged.connect(self._on_key_changed)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(box)
        scroll.setFixedWidth(300)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        return scroll

    # ------------------------------------------------------------------------------------- the spec
    def latency_key(self) -> str:
        return LATENCY_KEYS[self.budget_key.currentText()]

    def build_spec(self) -> SweepSpec:
        """The spec the controls describe; ValueError/WorkbenchError naming the first problem."""
        sizes = parse_int_list(self.batch_edit.text(), minimum=1, what="batch sizes")
        precisions = [p for p, cb in self.precision_checks.items() if cb.isChecked() and cb.isEnabled()]
        if not precisions:
            raise ValueError("tick at least one precision")
        iters = self.iters_spin.value() or None
        if iters is not None and iters < 3:
            raise ValueError("timed calls: at least 3 (or 'recipe')")
        workers = None
        if self.loader_group.isChecked():
            workers = parse_int_list(self.workers_edit.text(), minimum=0, what="workers")
        return SweepSpec(batch_sizes=sizes, precisions=precisions, inference=True, train=self.train_check.isChecked(),
                         latency_budget_ms=self.budget_spin.value(), latency_key=self.latency_key(), iters=iters,
                         train_steps=self.steps_spin.value(), workers=workers,
                         pin_memory=[False, True] if self.pin_check.isChecked() and self.pin_check.isEnabled()
                         else [False], cache=CACHE_CHOICES[self.cache_combo.currentText()])

    def _validate(self, *_: object) -> bool:
        try:
            self.build_spec()
        except (ValueError, WorkbenchError) as exc:
            self.error_label.setText(str(exc))
            self.error_label.setVisible(True)
            ok = False
        else:
            self.error_label.setText("" if self._recipe_valid else "The recipe has errors (see the editor): "
                                     "fix them to run a sweep.")
            self.error_label.setVisible(not self._recipe_valid)
            ok = True
        self._spec_ok = ok
        self._update_run_button()
        return ok

    def set_recipe_valid(self, valid: bool) -> None:
        """The window's panels form a valid recipe (or not): a sweep needs one."""
        self._recipe_valid = valid
        self._validate()

    def _on_busy_changed(self, _busy: bool) -> None:
        self._update_run_button()

    def _update_run_button(self) -> None:
        ok = self._spec_ok and self._recipe_valid and not self.jobs.busy
        self.run_button.setEnabled(ok)

    # ------------------------------------------------------------------------------------------ jobs
    def start_sweep(self) -> Job | None:
        """Run the sweep on the current recipe as an exclusive job (None when it cannot start now)."""
        if self.jobs.busy:
            self._set_status("Another job is running; stop it first.", error=True)
            return None
        recipe = self._recipe_provider()
        if recipe is None:
            self._set_status("The recipe has errors; fix them first.", error=True)
            return None
        try:
            spec = self.build_spec()
        except (ValueError, WorkbenchError) as exc:
            self._set_status(str(exc), error=True)
            return None
        store = self.store

        def work(reporter: Any, cancel: Any) -> Any:
            from workbench.analysis.sweep import run_sweep

            return run_sweep(recipe, spec, store=store, reporter=reporter, cancel=cancel)

        self._live = {"inference": [], "train": [], "loader": {"points": []}, "spec": spec.to_dict()}
        self.run_id = None
        self.show_sweep(self._live, title=f"Sweep of '{recipe.name}': measuring…")
        job = self.jobs.start("Sweep", work)
        self._job_id = job.id
        job.metrics.connect(self._on_metrics)
        job.runStarted.connect(self._on_run_started)
        job.finished.connect(self._on_finished)
        job.cancelledJob.connect(lambda: self._set_status("Sweep stopped.", error=True))
        self._set_status("Sweep running… (Stop in the toolbar ends it; measured points are kept)")
        self.sweepShown.emit(-1)
        self.jobStarted.emit(job)
        return job

    def _on_run_started(self, run_id: int, _name: str) -> None:
        self.run_id = run_id

    def _on_metrics(self, events: Sequence[MetricEvent]) -> None:
        """Live points as the engine measures them (the stored summary replaces them at the end)."""
        changed = False
        for ev in events:
            parts = ev.stage.split(":")
            if len(parts) == 3 and parts[0] == "sweep" and parts[1] in ("inference", "train"):
                v = ev.values
                if parts[1] == "inference":
                    point = {"p50_ms": v.get("p50_ms"), "p95_ms": v.get("p95_ms"), "throughput": v.get("throughput")}
                else:
                    point = {"p50_ms": v.get("step_ms_p50"), "p95_ms": v.get("step_ms_p95"),
                             "throughput": v.get("train_samples_per_s")}
                point.update(kind=parts[1], precision=parts[2], batch_size=ev.step)
                self._live[parts[1]].append(point)
                changed = True
            elif ev.stage == "sweep:loader":
                v = ev.values
                cfg = LoaderConfig(int(v.get("num_workers", 0)), bool(v.get("pin_memory")), bool(v.get("cache")))
                self._live["loader"]["points"].append({
                    "label": cfg.label, "loader_samples_per_s": v.get("loader_samples_per_s", 0.0),
                    "train_samples_per_s": v.get("train_samples_per_s"), "is_default": ev.step == 0})
                changed = True
        if changed:
            self._render()

    def _on_finished(self, outcome: object) -> None:
        self._job_id = None
        summary = getattr(outcome, "summary", None)
        if not isinstance(summary, dict):
            return  # errored or cancelled before run_sweep returned: the live points stay on screen
        run_id = int(getattr(outcome, "run_id", -1))
        status = str(getattr(outcome, "status", ""))
        self.run_id = run_id
        self.show_sweep(summary.get("sweep") or {}, title=f"Sweep run #{run_id} {summary.get('name', '')} "
                        f"({status})")
        error = getattr(outcome, "error", "")
        if status == "completed":
            self._set_status(f"Sweep run #{run_id} completed and stored; re-open it from the Runs tab.")
        else:
            self._set_status(f"Sweep run #{run_id} {status}" + (f": {error}" if error else "")
                             + "; what was measured is kept.", error=True)
        self.sweepShown.emit(run_id)

    # --------------------------------------------------------------------------------- stored sweeps
    def open_run(self, run_id: int) -> bool:
        """Show a stored sweep run from its ``summary["sweep"]`` (False, with the reason shown, if it is not one)."""
        run = self.store.get_run(int(run_id))
        if run is None:
            self._set_status(f"No run #{run_id} in the store.", error=True)
            return False
        sw = run.summary.get("sweep")
        if run.kind != "sweep" or not isinstance(sw, dict):
            self._set_status(f"Run #{run_id} is not a sweep.", error=True)
            return False
        self._restore_controls(sw)
        self.run_id = run.id
        self.show_sweep(sw, title=f"Sweep run #{run.id} {run.name} ({run.status})")
        self._set_status(f"Showing stored sweep run #{run.id}." + (f" {run.error}" if run.error else ""),
                         error=run.status != "completed")
        self.sweepShown.emit(run.id)
        return True

    def _restore_controls(self, sw: dict[str, Any]) -> None:
        """Put the stored sweep's grid and budget back into the form, so "Run sweep" repeats it."""
        spec = sw.get("spec") or {}
        widgets: list[QWidget] = [self.batch_edit, self.budget_spin, self.budget_key, self.loader_group,
                                  self.workers_edit,
                                  *self.precision_checks.values()]
        for w in widgets:
            w.blockSignals(True)
        try:
            if spec.get("batch_sizes"):
                self.batch_edit.setText(",".join(str(b) for b in spec["batch_sizes"]))
            precs = spec.get("precisions") or []
            for p, cb in self.precision_checks.items():
                if precs and cb.isEnabled():
                    cb.setChecked(p in precs)
            workers = spec.get("workers")
            self.loader_group.setChecked(bool(workers))
            if workers:
                self.workers_edit.setText(",".join(str(w) for w in workers))
            budget = sw.get("budget") or {}
            ms = budget.get("budget_ms") or spec.get("latency_budget_ms")
            if _num(ms):
                self.budget_spin.setValue(float(ms))
            key = budget.get("latency_key") or spec.get("latency_key")
            if key in LATENCY_KEYS.values():
                self.budget_key.setCurrentText(next(k for k, v in LATENCY_KEYS.items() if v == key))
        finally:
            for w in widgets:
                w.blockSignals(False)
        self._validate()

    # --------------------------------------------------------------------------------------- drawing
    def show_sweep(self, sw: dict[str, Any], title: str = "") -> None:
        """Draw a sweep's points (the same dict the engine stores) into the existing chart items."""
        self._data = sw
        if title:
            self.title_label.setText(title)
        self._render()

    def sweep_data(self) -> dict[str, Any]:
        return self._data

    def points(self, kind: str) -> list[dict[str, Any]]:
        """The shown inference or train points (dicts as stored), in precision then batch order."""
        pts = [p for p in self._data.get(kind) or [] if isinstance(p, dict)]
        return sorted(pts, key=lambda p: (_prec_rank(p.get("precision")), p.get("batch_size") or 0))

    def _render(self) -> None:
        inference, train = self.points("inference"), self.points("train")
        for prec in PRECISION_ORDER:
            inf = [p for p in inference if p.get("precision") == prec and _num(p.get("p50_ms")) is not None]
            tr = [p for p in train if p.get("precision") == prec and _num(p.get("throughput")) is not None]
            bs = [float(p["batch_size"]) for p in inf]
            self.latency_plot.set_points(f"{prec}:p50", bs, [float(p["p50_ms"]) for p in inf])
            p95 = [p for p in inf if _num(p.get("p95_ms")) is not None]
            self.latency_plot.set_points(f"{prec}:p95", [float(p["batch_size"]) for p in p95],
                                         [float(p["p95_ms"]) for p in p95])
            thr = [p for p in inf if _num(p.get("throughput")) is not None]
            self.inference_plot.set_points(prec, [float(p["batch_size"]) for p in thr],
                                           [float(p["throughput"]) for p in thr])
            self.train_plot.set_points(prec, [float(p["batch_size"]) for p in tr], [float(p["throughput"]) for p in tr])
        self._render_tradeoff()
        self._render_loader()
        self._render_notes()
        for plot in self.plots.values():
            plot.redraw()
            if plot is not self.loader_plot:
                plot.sync_legend()
        self.remark()

    def _tradeoff_points(self) -> list[dict[str, Any]]:
        key = self.latency_key()
        return [p for p in self.points("inference") if _num(p.get(key)) is not None
                and _num(p.get("throughput")) is not None]

    def _render_tradeoff(self) -> None:
        key = self.latency_key()
        pts = self._tradeoff_points()
        self.tradeoff_plot.plot_item.setLabel("bottom", f"latency {key.removesuffix('_ms')} (ms)")
        self.tradeoff_plot.x_label = f"latency_{key}"
        for prec in PRECISION_ORDER:
            mine = [p for p in pts if p.get("precision") == prec]
            self.tradeoff_plot.set_points(prec, [float(p[key]) for p in mine], [float(p["throughput"]) for p in mine])
        self.tradeoff_plot.set_labels([(float(p[key]), float(p["throughput"]), f"b{p['batch_size']}") for p in pts])

    def _render_loader(self) -> None:
        ld = self._data.get("loader") or {}
        pts = [p for p in ld.get("points") or [] if isinstance(p, dict)]
        self.loader_box.setVisible(bool(pts))
        rows = [(_short_loader_label(p), float(p.get("loader_samples_per_s") or 0.0), _num(p.get("train_samples_per_s")))
                for p in pts]
        self.loader_plot.set_rows(rows)
        self.verdict_label.setText(_verdict_html(ld, pts))

    def _render_notes(self) -> None:
        sw = self._data
        lines = [f"Not measured: {s.get('what')}: {s.get('reason')}"
                 for s in (sw.get("skipped") or []) + ((sw.get("loader") or {}).get("skipped") or [])
                 if isinstance(s, dict)]
        lines += [str(n) for n in sw.get("notes") or []]
        self.notes_label.setText("\n".join(lines))
        self.notes_label.setVisible(bool(lines))

    def _on_key_changed(self, *_: object) -> None:
        self._render_tradeoff()
        self.tradeoff_plot.redraw()
        self.remark()

    def remark(self, *_: object) -> None:
        """Re-mark the best point within the budget (no re-measuring: the points are already here)."""
        budget = self.budget_spin.value()
        key = self.latency_key()
        pts = self._tradeoff_points()
        best = best_within_budget(pts, budget, latency_key=key)
        self._best = best
        self.tradeoff_plot.set_budget(budget if pts else None,
                                      (float(best[key]), float(best["throughput"])) if best else None)
        label = key.removesuffix("_ms")
        if not pts:
            self.budget_label.setText("")
        elif best is None:
            fastest = min(float(p[key]) for p in pts)
            self.budget_label.setText(f"No point meets {budget:g} ms at {label}: the fastest is {fastest:.3f} ms "
                                      "(batch 1 usually). Raise the budget or speed the model up.")
        else:
            self.budget_label.setText(f"Best within {budget:g} ms ({label}): {best['precision']}, batch "
                                      f"{best['batch_size']}, {float(best['throughput']):,.0f} samples/s at "
                                      f"{float(best[key]):.3f} ms.")

    def marked_point(self) -> dict[str, Any] | None:
        """The point starred as the best within the budget (a stored point dict), or None."""
        return self._best

    def tradeoff_series(self) -> dict[str, tuple[list[float], list[float]]]:
        """What the trade-off chart's curves hold now (read back from the plot items)."""
        out = {}
        for key, s in self.tradeoff_plot.series.items():
            x, y = s.item.getData()
            out[key] = ([] if x is None else [float(v) for v in x], [] if y is None else [float(v) for v in y])
        return out

    def save_all(self, folder: str | Path) -> list[Path]:
        """Every chart as PNG and CSV into ``folder`` (for reports and scripted exports)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name, plot in self.plots.items():
            written.append(plot.save_png(folder / f"sweep-{name}.png"))
            written.append(plot.save_csv(folder / f"sweep-{name}.csv"))
        return written

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #b3261e;" if error else "")


def _prec_rank(p: Any) -> int:
    return PRECISION_ORDER.index(p) if p in PRECISION_ORDER else len(PRECISION_ORDER)


def _short_loader_label(p: dict[str, Any]) -> str:
    """'2 workers, cache, pinned' -> '2w cache pin' so several bars' ticks fit under them."""
    label = str(p.get("label") or "")
    parts = [s.strip() for s in label.split(",")]
    out = []
    for s in parts:
        if s.endswith(("worker", "workers")):
            out.append(s.split()[0] + "w")
        elif s == "cache":
            out.append("cache")
        elif s == "pinned":
            out.append("pin")
    text = " ".join(out) or label
    return text + (" *" if p.get("is_default") else "")


def _verdict_html(ld: dict[str, Any], pts: list[dict[str, Any]]) -> str:
    """The default setting's verdict, its suggestions and the best setting's speedup, as rich text."""
    if not pts:
        return ""
    lines = ["<b>* = the recipe's current setting</b>"]
    dflt = ld.get("default") or next((p for p in pts if p.get("is_default")), None) or {}
    v = dflt.get("verdict") or {}
    if v:
        colour = {"loader-bound": "#b3261e", "compute-bound": "#1b5e20"}.get(str(v.get("kind")), "#444")
        kind, message = str(v.get("kind", "")), str(v.get("message", ""))
        message = message.removeprefix(f"{kind}:").strip()  # the engine's message may start with the kind
        lines.append(f"<span style='color:{colour}'><b>{html.escape(kind)}</b></span>: {html.escape(message)}")
        lines += [f"• {html.escape(str(s))}" for s in v.get("suggestions") or []]
    best = ld.get("best") or {}
    if _num(ld.get("speedup")) and best:
        lines.append(f"Best: <b>{html.escape(str(best.get('label', '')))}</b>, {float(ld['speedup']):.2f}× the "
                     "current setting's training samples/s.")
    return "<br>".join(lines)

