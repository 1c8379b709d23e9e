"""Live plots: bounded ring buffers, plot items created once, redrawn by one fixed-rate QTimer.

Why this shape: ``setData`` on long curves at a high rate makes pyqtgraph crawl (pyqtgraph #1737),
so incoming metric batches only append to numpy ring buffers (O(1), no drawing) and a single
15 Hz timer pushes the buffers that changed into their curves. Curves are never removed and
re-added; downsampling ('peak') and clip-to-view keep each redraw cheap.
"""

from __future__ import annotations

import contextlib
import csv
import html
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.gui.jobs import MetricEvent

RING_CAPACITY = 5000
REDRAW_HZ = 10  # within the 10-20 Hz a person perceives as live; each redraw costs GUI-thread CPU

NO_GPU_TEXT = "No NVIDIA GPU detected: CPU mode"


class RingBuffer:
    """Fixed-capacity (x, y) buffer; the oldest points are overwritten once it is full."""

    def __init__(self, capacity: int = RING_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._data = np.empty((capacity, 2), dtype=np.float64)
        self._start = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, x: float, y: float) -> None:
        end = (self._start + self._size) % self.capacity
        self._data[end] = (x, y)
        if self._size < self.capacity:
            self._size += 1
        else:
            self._start = (self._start + 1) % self.capacity

    def extend(self, points: Iterable[tuple[float, float]]) -> None:
        for x, y in points:
            self.append(x, y)

    def clear(self) -> None:
        self._start = 0
        self._size = 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of (x, y) in insertion order (oldest first)."""
        idx = (self._start + np.arange(self._size)) % self.capacity
        pts = self._data[idx]
        return pts[:, 0].copy(), pts[:, 1].copy()


@dataclass
class Series:
    """One curve of a plot: its buffer, its (single, reused) item and whether it needs a redraw."""

    key: str
    name: str
    buffer: RingBuffer
    item: pg.PlotDataItem
    dirty: bool = False


def next_time_limit(t: float) -> float:
    """The next 'nice' axis end above ``t`` seconds (10, 20, 30, 60, 120, …), so the range rarely changes."""
    limit = 10.0
    for step in (10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0):
        limit = step
        if t < step:
            return step
    while limit <= t:
        limit *= 2
    return limit


#: Legend marks for the marker symbols the plots use (lines show as a dash).
LEGEND_MARKS = {"o": "●", "s": "■", "t": "▼", "d": "◆"}


class LivePlot(QWidget):
    """A titled plot with small "PNG" / "CSV" buttons; the PlotWidget carries the objectName.

    ``append`` only buffers; ``redraw`` (called by the dashboard's timer) updates dirty curves.
    """

    def __init__(self, object_name: str, title: str, y_label: str, parent: QWidget | None = None,
                 y_range: tuple[float, float] | None = None, time_axis: bool = False) -> None:
        super().__init__(parent)
        self.title = title
        #: For "time since start" plots: the x range grows in steps (see ``next_time_limit``) instead of
        #: auto-ranging on every redraw, which re-lays out and repaints the axis each time.
        self.time_axis = time_axis
        self._x_limit = 0.0
        self.series: dict[str, Series] = {}
        self._legend: list[tuple[str, str, str]] = []  # (name, colour, mark)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(0)
        head = QHBoxLayout()
        head.setContentsMargins(6, 0, 2, 0)
        label = QLabel(f"<b>{title}</b>")
        self.title_label = label
        head.addWidget(label)
        head.addStretch(1)
        self.png_button = self._tool_button("PNG", "Save this plot as a PNG image", self.ask_save_png)
        self.csv_button = self._tool_button("CSV", "Save this plot's data points as CSV", self.ask_save_csv)
        head.addWidget(self.png_button)
        head.addWidget(self.csv_button)
        layout.addLayout(head)
        # The legend is a row of its own under the title, outside the data: a legend inside the plot hides
        # the points and lines it sits on (the CPU curve near 100 %, accuracy points near the top).
        self.legend_label = QLabel(self)
        self.legend_label.setObjectName(f"{object_name}Legend")
        self.legend_label.setToolTip("What each line and marker is.")
        self.legend_label.setWordWrap(True)  # wraps between entries only (each is non-breaking)
        self.legend_label.setContentsMargins(6, 0, 6, 2)
        layout.addWidget(self.legend_label)
        self.plot_widget = pg.PlotWidget(background="w")
        self.plot_widget.setObjectName(object_name)
        self.plot_widget.setMinimumHeight(150)
        self.plot_item: pg.PlotItem = self.plot_widget.getPlotItem()
        # No grid: pyqtgraph draws grid lines as part of the axes, so every curve update would repaint
        # the axis text too; measured, that was a third of the GUI thread's CPU during a run.
        self.plot_item.setLabel("left", y_label)
        self.plot_item.setLabel("bottom", "time since start (s)")
        self.plot_item.setDownsampling(auto=True, mode="peak")
        self.plot_item.setClipToView(True)
        if y_range is not None:
            self.plot_item.setYRange(*y_range, padding=0.02)
            self.plot_item.enableAutoRange(axis="y", enable=False)
        if time_axis:
            self.plot_item.enableAutoRange(axis="x", enable=False)
            self._grow_x(0.0)
        self.overlay: pg.TextItem | None = None
        menu = self.plot_item.getViewBox().menu
        if menu is not None:
            menu.addSeparator()
            menu.addAction("Save plot as PNG…").triggered.connect(self.ask_save_png)
            menu.addAction("Save data as CSV…").triggered.connect(self.ask_save_csv)
        layout.addWidget(self.plot_widget, 1)
        self.default_dir = ""

    def _tool_button(self, text: str, tip: str, slot: object) -> QToolButton:
        b = QToolButton(self)
        b.setText(text)
        b.setToolTip(tip)
        b.setAutoRaise(True)
        b.clicked.connect(slot)
        return b

    def add_series(self, key: str, name: str, color: str, symbol: str | None = None, width: float = 2.0) -> Series:
        pen = pg.mkPen(color=color, width=width) if symbol is None else None
        item = self.plot_item.plot([], [], name=name, pen=pen, symbol=symbol, symbolBrush=color,
                                   symbolPen=color, symbolSize=7)
        if symbol is not None:
            # Sparse markers (a few per run) are neither clipped nor downsampled: clipping hides a
            # new point beyond the current view (auto-range then never widens to it), and auto
            # downsampling assumes evenly spaced x, so two markers a millisecond apart would be
            # "downsampled" to nothing.
            item.setClipToView(False)
            item.setDownsampling(ds=1, auto=False)
        s = Series(key, name, RingBuffer(), item)
        self.series[key] = s
        self._legend.append((name, color, "━" if symbol is None else LEGEND_MARKS.get(symbol, "●")))
        self.legend_label.setText("<small>" + " &nbsp; ".join(
            f"<span style='color:{c}'>{mark}</span>&nbsp;{html.escape(n).replace(' ', '&nbsp;')}"
            for n, c, mark in self._legend) + "</small>")
        return s

    def legend_entries(self) -> list[str]:
        """The series names in the header legend, in order."""
        return [name for name, _c, _m in self._legend]

    def append(self, key: str, x: float, y: float) -> None:
        s = self.series[key]
        s.buffer.append(x, y)
        s.dirty = True

    def redraw(self) -> None:
        x_max = 0.0
        for s in self.series.values():
            if s.dirty:
                x, y = s.buffer.arrays()
                s.item.setData(x, y)
                s.dirty = False
                if len(x):
                    x_max = max(x_max, float(x[-1]))
        if self.time_axis and x_max > self._x_limit:
            self._grow_x(x_max)

    def _grow_x(self, x_max: float) -> None:
        self._x_limit = next_time_limit(x_max)
        self.plot_item.setXRange(0.0, self._x_limit, padding=0.02)

    def clear(self) -> None:
        for s in self.series.values():
            s.buffer.clear()
            s.dirty = True
        if self.time_axis:
            self._grow_x(0.0)

    def point_count(self) -> int:
        return sum(len(s.buffer) for s in self.series.values())

    def set_overlay(self, text: str | None) -> None:
        """A message drawn inside the plot (e.g. "No NVIDIA GPU detected"), or None to hide it."""
        if text is None:
            if self.overlay is not None:
                self.overlay.setVisible(False)
            return
        if self.overlay is None:
            self.overlay = pg.TextItem(text, color=(90, 90, 90), anchor=(0.5, 0.5))
            self.overlay.setFont(self.font())
            self.plot_item.getViewBox().addItem(self.overlay, ignoreBounds=True)
            self.plot_item.getViewBox().sigResized.connect(self._place_overlay)
            self.plot_item.getViewBox().sigRangeChanged.connect(self._place_overlay)
        self.overlay.setText(text)
        self.overlay.setVisible(True)
        self._place_overlay()

    def overlay_text(self) -> str | None:
        if self.overlay is None or not self.overlay.isVisible():
            return None
        return self.overlay.toPlainText()

    def _place_overlay(self, *_args: object) -> None:
        if self.overlay is None:
            return
        (x0, x1), (y0, y1) = self.plot_item.getViewBox().viewRange()
        self.overlay.setPos((x0 + x1) / 2, (y0 + y1) / 2)

    # -- export --------------------------------------------------------------------------------
    def save_png(self, path: str | Path) -> Path:
        from pyqtgraph.exporters import ImageExporter

        self.redraw()
        path = Path(path)
        exporter = ImageExporter(self.plot_item)
        exporter.parameters()["width"] = max(800, int(self.plot_widget.width()))
        exporter.export(str(path))
        return path

    def save_csv(self, path: str | Path) -> Path:
        """Long format: series, x (s), y; one row per buffered point."""
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["series", "time_s", "value"])
            for s in self.series.values():
                x, y = s.buffer.arrays()
                w.writerows((s.name, f"{a:.6g}", f"{b:.6g}") for a, b in zip(x, y, strict=True))
        return path

    def ask_save_png(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Save {self.title} as PNG",
                                              str(Path(self.default_dir) / f"{self.plot_widget.objectName()}.png"),
                                              "PNG images (*.png)")
        if path:
            self.save_png(path)

    def ask_save_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Save {self.title} data as CSV",
                                              str(Path(self.default_dir) / f"{self.plot_widget.objectName()}.csv"),
                                              "CSV files (*.csv)")
        if path:
            self.save_csv(path)


def has_nvidia_gpu() -> bool:
    """True when NVML sees at least one NVIDIA GPU (cheap; used once at start-up)."""
    from workbench.core.telemetry import load_nvml

    nvml = load_nvml()
    if nvml is None:
        return False
    try:
        nvml.nvmlInit()
    except Exception:
        return False
    try:
        return int(nvml.nvmlDeviceGetCount()) > 0
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


#: Throughput values spanning more than this ratio get a log axis.
LOG_SPAN = 30.0
#: Inference points named on the throughput plot at most (older labels are removed first).
MAX_POINT_LABELS = 24


class Dashboard(QWidget):
    """The five live plots of a job: throughput, loss, accuracy, GPU and CPU/RAM.

    ``add_metrics`` routes a batch of engine metric events into ring buffers; one QTimer redraws.
    The timer runs only while a job is live (``start``/``stop``), so an idle app does no work.
    """

    redrawn = Signal()

    def __init__(self, parent: QWidget | None = None, gpu_present: bool | None = None) -> None:
        super().__init__(parent)
        self.t0: float | None = None
        self.gpu_present = has_nvidia_gpu() if gpu_present is None else gpu_present
        self._gpu_seen = False
        self.throughput = LivePlot("throughputPlot", "Throughput", "samples / s", time_axis=True)
        # Linear with plain ticks; log only when the values span more than LOG_SPAN (training and batched
        # inference can differ 10-100x), see ``_throughput_scale``.
        self._throughput_log = False
        self._inference_labels: list[tuple[float, float, pg.TextItem]] = []
        self.throughput.add_series("train", "training", "#1f77b4")
        self.throughput.add_series("inference", "inference (benchmark)", "#d62728", symbol="o")
        self.loss = LivePlot("lossPlot", "Training loss", "loss", time_axis=True)
        self.loss.add_series("loss", "train loss", "#ff7f0e")
        self.loss.add_series("val_loss", "validation loss", "#9467bd", symbol="s")
        self.accuracy = LivePlot("accuracyPlot", "Validation accuracy", "accuracy %", y_range=(0, 100),
                                 time_axis=True)
        self.accuracy.add_series("val_accuracy", "validation accuracy", "#2ca02c", symbol="o")
        self.gpu = LivePlot("gpuPlot", "GPU", "% ", y_range=(0, 100), time_axis=True)
        self.gpu.add_series("util", "GPU utilisation %", "#2ca02c")
        self.gpu.add_series("mem", "GPU memory used %", "#8c564b")
        self.cpu = LivePlot("cpuPlot", "CPU and RAM", "%", y_range=(0, 100), time_axis=True)
        self.cpu.add_series("cpu", "machine CPU %", "#1f77b4")
        self.cpu.add_series("proc_cpu", "this app's CPU % (of all cores)", "#17becf")
        self.cpu.add_series("ram", "RAM used %", "#e377c2")
        self._cores = max(1, os.cpu_count() or 1)
        self.plots: dict[str, LivePlot] = {"throughput": self.throughput, "loss": self.loss,
                                           "accuracy": self.accuracy, "gpu": self.gpu, "cpu": self.cpu}
        grid = QGridLayout(self)
        grid.setContentsMargins(4, 4, 4, 4)
        grid.setSpacing(6)
        grid.addWidget(self.throughput, 0, 0)
        grid.addWidget(self.loss, 0, 1)
        grid.addWidget(self.accuracy, 0, 2)
        grid.addWidget(self.cpu, 1, 0, 1, 2)
        grid.addWidget(self.gpu, 1, 2)
        if not self.gpu_present:
            self.gpu.set_overlay(NO_GPU_TEXT)
        self.timer = QTimer(self)
        self.timer.setObjectName("dashboardRedrawTimer")
        self.timer.setInterval(int(1000 / REDRAW_HZ))
        self.timer.timeout.connect(self.redraw)

    def set_default_dir(self, folder: str) -> None:
        for p in self.plots.values():
            p.default_dir = folder

    def start(self) -> None:
        """A job began: clear old curves, restart the clock, start redrawing."""
        for p in self.plots.values():
            p.clear()
        for _x, _y, item in self._inference_labels:
            self.throughput.plot_item.removeItem(item)
        self._inference_labels.clear()
        self.t0 = None
        for p in self.plots.values():  # axes start from this run's values, not the last run's range
            p.plot_item.enableAutoRange(axis="y", enable=p is self.throughput or p is self.loss)
        self.redraw()
        self.timer.start()

    def stop(self) -> None:
        """The job ended: draw the last points and stop the timer."""
        self.timer.stop()
        self.redraw()

    def redraw(self) -> None:
        self._throughput_scale()
        for p in self.plots.values():
            p.redraw()
        self.redrawn.emit()

    def _throughput_scale(self) -> None:
        """Log axis only when the throughput values span more than ``LOG_SPAN``; the title says which."""
        ys = np.concatenate([s.buffer.arrays()[1] for s in self.throughput.series.values()])
        ys = ys[ys > 0]
        want_log = bool(ys.size) and float(ys.max() / ys.min()) > LOG_SPAN
        if want_log != self._throughput_log:
            self._throughput_log = want_log
            self.throughput.plot_item.setLogMode(y=want_log)
            for x, y, item in self._inference_labels:
                self._place_label(x, y, item)
            for s in self.throughput.series.values():
                s.dirty = True
            self.throughput.title_label.setText("<b>Throughput</b>" + (" (log scale: the values span more "
                                                                       "than 30x)" if want_log else ""))

    def add_metrics(self, events: Sequence[MetricEvent]) -> None:
        for ev in events:
            if self.t0 is None:
                self.t0 = ev.t
            x = ev.t - self.t0
            v = ev.values
            if ev.stage == "telemetry":
                self._telemetry(x, v)
            elif ev.stage.startswith("measure:") or ev.stage == "bench":
                if v.get("throughput", 0) > 0:  # log axis: only positive values
                    self.throughput.append("inference", x, v["throughput"])
                    runtime = ev.stage.partition("@")[2]
                    batch = int(v.get("batch_size") or ev.step)
                    self._label_inference(x, v["throughput"], f"{runtime} · b{batch}" if runtime else f"b{batch}")
            else:  # training stages (train, finetune, distill, ...)
                if v.get("samples_per_s", 0) > 0:
                    self.throughput.append("train", x, v["samples_per_s"])
                if "loss" in v:
                    self.loss.append("loss", x, v["loss"])
                if "val_loss" in v:
                    self.loss.append("val_loss", x, v["val_loss"])
                if "val_accuracy" in v:
                    self.accuracy.append("val_accuracy", x, 100.0 * v["val_accuracy"])

    def _label_inference(self, x: float, y: float, text: str) -> None:
        """Name an inference point by its runtime and batch size (a few per run; the oldest go past a limit)."""
        # Ends at its point (right-anchored): inference comes after training, at the right of the data, and a
        # label running right would leave the plot.
        item = pg.TextItem(text, color=(150, 30, 30), anchor=(1, 1.1))
        item.setFont(self.font())
        self.throughput.plot_item.addItem(item, ignoreBounds=True)
        self._inference_labels.append((x, y, item))
        self._place_label(x, y, item)
        while len(self._inference_labels) > MAX_POINT_LABELS:
            self.throughput.plot_item.removeItem(self._inference_labels.pop(0)[2])

    def _place_label(self, x: float, y: float, item: pg.TextItem) -> None:
        item.setPos(x, math.log10(y) if self._throughput_log else y)  # a log axis plots log10 of the values

    def inference_labels(self) -> list[str]:
        return [item.toPlainText() for _x, _y, item in self._inference_labels]

    def _telemetry(self, x: float, v: dict[str, float]) -> None:
        if "cpu_percent" in v:
            self.cpu.append("cpu", x, v["cpu_percent"])
        if "proc_cpu_percent" in v:  # psutil counts one core as 100 %: scaled to the machine's total
            self.cpu.append("proc_cpu", x, v["proc_cpu_percent"] / self._cores)
        if v.get("ram_total_bytes") and "ram_used_bytes" in v:
            self.cpu.append("ram", x, 100.0 * v["ram_used_bytes"] / v["ram_total_bytes"])
        if "gpu0_util_percent" in v:
            if not self._gpu_seen:
                self._gpu_seen = True
                self.gpu.set_overlay(None)
            self.gpu.append("util", x, v["gpu0_util_percent"])
        if v.get("gpu0_mem_total_bytes") and "gpu0_mem_used_bytes" in v:
            self.gpu.append("mem", x, 100.0 * v["gpu0_mem_used_bytes"] / v["gpu0_mem_total_bytes"])
