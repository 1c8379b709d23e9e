"""The comparison's charts: bars per metric and the accuracy-vs-speed Pareto chart (pyqtgraph)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyqtgraph as pg
import pyqtgraph.exporters
from PySide6.QtCore import (
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFontMetrics, QImage
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from workbench.analysis.pareto import model_points, pareto_front
from workbench.core.store import RunRecord
from workbench.gui.runs.compare import value
from workbench.gui.runs.export import image_png_bytes


@dataclass(frozen=True)
class Chart:
    """One compare chart: which summary metric, in what unit, and which direction is better."""

    key: str
    title: str
    unit: str
    scale: float
    fmt: str
    higher_is_better: bool


CHARTS: tuple[Chart, ...] = (
    Chart("throughput", "Throughput", "samples/s", 1.0, ",.0f", True),
    Chart("latency_ms_p50", "Latency p50", "ms", 1.0, ".3g", False),
    Chart("accuracy", "Accuracy", "%", 100.0, ".1f", True),
    Chart("size_bytes", "Size", "MB", 1e-6, ".3g", False),
)


BAR_BRUSH = QColor("#3d8bd9")


MAX_VALUE_LABELS = 6  # more bars than this and the numbers above them would overlap


BASELINE_BRUSH = QColor("#9aa4ae")


class BarLabelAxis(pg.AxisItem):
    """Bottom axis naming each bar; labels are elided to the width a bar gets, so many runs stay legible."""

    def __init__(self) -> None:
        self._labels: list[str] = []  # before super(): AxisItem's constructor already resizes
        super().__init__("bottom")

    def set_labels(self, labels: Sequence[str]) -> None:
        self._labels = list(labels)
        self._apply()

    def labels(self) -> list[str]:
        return list(self._labels)

    def resizeEvent(self, ev: Any = None) -> None:
        super().resizeEvent(ev)
        self._apply()

    def _apply(self) -> None:
        n = max(1, len(self._labels))
        width = max(24, int(self.width() / n) - 6) if self.width() > 0 else 80
        metrics = QFontMetrics(self.style.get("tickFont") or self.font())
        ticks = []
        for i, text in enumerate(self._labels):
            head = text.split(" ", 1)[0]  # "#12": never elide the run ID away
            shown = metrics.elidedText(text, Qt.TextElideMode.ElideRight, width)
            if metrics.horizontalAdvance(shown) > width or len(shown) <= len(head) + 2:
                shown = head
            ticks.append((float(i), shown))
        self.setTicks([ticks, []])


class BarChart:
    """One PlotWidget with a single BarGraphItem and a pool of value labels, all created once."""

    def __init__(self, chart: Chart, parent: QWidget) -> None:
        self.chart = chart
        self.axis = BarLabelAxis()
        self.widget = pg.PlotWidget(parent=parent, axisItems={"bottom": self.axis}, background=None)
        self.widget.setObjectName(f"chart_{chart.key}")
        better = "higher is better" if chart.higher_is_better else "lower is better"
        self.widget.setToolTip(f"{chart.title} ({chart.unit}) of each compared run, {better}. "
                               "The grey bar is the baseline.")
        self.widget.setMinimumSize(180, 170)
        self.widget.setMenuEnabled(False)
        self.widget.setMouseEnabled(x=False, y=False)
        self.widget.hideButtons()
        self.plot = self.widget.getPlotItem()
        self.plot.setTitle(f"{chart.title} ({chart.unit}), {better}", size="9pt")
        self.plot.showGrid(y=True, alpha=0.25)
        self.plot.getAxis("left").setWidth(46)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.6, brushes=[], pen=pg.mkPen(None))
        self.plot.addItem(self.bars)
        self._texts: list[pg.TextItem] = []

    def set_data(self, labels: Sequence[str], values: Sequence[float | None], baseline_index: int) -> None:
        n = len(values)
        heights = [v if v is not None else 0.0 for v in values]
        brushes = [pg.mkBrush(BASELINE_BRUSH if i == baseline_index else BAR_BRUSH) for i in range(n)]
        self.bars.setOpts(x=list(range(n)), height=heights, width=0.6, brushes=brushes)
        self.axis.set_labels(labels)
        top = max((h for h in heights if h > 0), default=1.0)
        while len(self._texts) < n:
            text = pg.TextItem(anchor=(0.5, 1.0), color=self.widget.palette().text().color())
            self.plot.addItem(text)
            self._texts.append(text)
        show_values = n <= MAX_VALUE_LABELS
        for i, text in enumerate(self._texts):
            if i < n:
                v = values[i]
                text.setText("n/a" if v is None else format(v, self.chart.fmt))
                text.setPos(i, heights[i])
            text.setVisible(i < n and show_values)
        self.plot.setXRange(-0.5, max(n, 1) - 0.5, padding=0.02)
        self.plot.setYRange(0, top * 1.18, padding=0)

    def heights(self) -> list[float]:
        return [float(h) for h in (self.bars.opts.get("height") or [])]

    def png_bytes(self, width: int = 900) -> bytes:
        """The chart as PNG bytes (exported off the scene, so it is sharp at any size)."""
        exporter = pyqtgraph.exporters.ImageExporter(self.plot)
        exporter.parameters()["width"] = width  # height follows the on-screen aspect ratio
        image = exporter.export(toBytes=True)
        assert isinstance(image, QImage)
        return image_png_bytes(image)


#: x-axis choices of the Pareto chart: summary key, axis title, whether lower is better, scale.
PARETO_AXES: dict[str, tuple[str, str, bool]] = {
    "latency": ("latency_ms_p50", "latency p50 (ms), lower is better", True),
    "throughput": ("throughput", "throughput (samples/s), higher is better", False),
}


FRONT_COLOUR = QColor("#d62728")


POINT_COLOUR = QColor("#3d8bd9")


def pareto_points(runs: Sequence[RunRecord], mode: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The models on the Pareto chart and notes on what was left out: the engine's one rule
    (``engine.pareto.model_points``, the same the HTML report uses). "baseline_vs_final" shows the
    run's path (baseline, stages, final); "runs" one final model per run."""
    return model_points(runs, path=mode == "baseline_vs_final")


class ParetoChart(QWidget):
    """Accuracy against latency p50 (or throughput) of the compared models, the frontier drawn.

    Items (scatter, frontier line, highlight ring, label pool) are created once; ``set_points``
    only updates them. Clicking a point emits ``pointClicked(run_id, double)``.
    """

    pointClicked = Signal(int, bool)  # run id, double click

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._points: list[dict[str, Any]] = []
        self._notes: list[str] = []
        self._front: list[dict[str, Any]] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 0)
        top = QHBoxLayout()
        self.axis_combo = QComboBox(self)
        self.axis_combo.setObjectName("paretoAxisCombo")
        self.axis_combo.addItem("Accuracy vs latency p50", "latency")
        self.axis_combo.addItem("Accuracy vs throughput", "throughput")
        self.axis_combo.setToolTip("What the horizontal axis shows: median latency (lower is better) or "
                                   "inference throughput (higher is better).")
        self.axis_combo.currentIndexChanged.connect(self._redraw)
        top.addWidget(self.axis_combo)
        self.note_label = QLabel(self)
        self.note_label.setObjectName("paretoNote")
        self.note_label.setWordWrap(True)
        self.note_label.setStyleSheet("color: #666;")
        self.note_label.setToolTip("Runs not drawn and why; where the latencies were measured.")
        top.addWidget(self.note_label, 1)
        layout.addLayout(top)
        self.widget = pg.PlotWidget(parent=self, background=None)
        self.widget.setObjectName("paretoChart")
        self.widget.setToolTip("Each compared model by accuracy and speed. Red points joined by the dashed line "
                               "are the Pareto frontier: no other model is both faster and at least as accurate. "
                               "Click a point to find its run in the table; double-click to open its recipe.")
        self.widget.setMinimumSize(240, 170)
        self.widget.setMenuEnabled(False)
        self.widget.hideButtons()
        self.plot = self.widget.getPlotItem()
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("left", "accuracy (%), higher is better")
        self.front_line = pg.PlotDataItem([], [], pen=pg.mkPen(FRONT_COLOUR, width=1.5, style=Qt.PenStyle.DashLine))
        self.plot.addItem(self.front_line)
        self.scatter = pg.ScatterPlotItem(size=11, hoverable=True, hoverSize=14)
        self.scatter.setZValue(5)
        self.scatter.sigClicked.connect(self._on_clicked)
        self.plot.addItem(self.scatter)
        self.highlight = pg.ScatterPlotItem(size=20, symbol="o", pen=pg.mkPen("#222", width=2), brush=None)
        self.highlight.setZValue(4)
        self.plot.addItem(self.highlight)
        self._texts: list[pg.TextItem] = []
        layout.addWidget(self.widget, 1)

    def x_mode(self) -> str:
        return str(self.axis_combo.currentData())

    def set_x_mode(self, mode: str) -> None:
        self.axis_combo.setCurrentIndex(self.axis_combo.findData(mode))

    def set_points(self, points: Sequence[dict[str, Any]], notes: Sequence[str] = ()) -> None:
        self._points = list(points)
        self._notes = list(notes)
        self._redraw()

    def _redraw(self, *_: object) -> None:
        x_key, x_title, lower_better = PARETO_AXES[self.x_mode()]
        shown = [p for p in self._points if p.get(x_key) is not None and p.get("accuracy") is not None]
        front = pareto_front(shown, x_key, "accuracy", minimize_x=lower_better, maximize_y=True)
        self._front = front
        on_front = {id(p) for p in front}
        spots = [{"pos": (p[x_key], p["accuracy"] * 100.0), "data": p["run_id"],
                  "brush": pg.mkBrush(FRONT_COLOUR if id(p) in on_front else POINT_COLOUR),
                  "pen": pg.mkPen("w", width=1), "symbol": "o" if p.get("which") == "final" else "s"}
                 for p in shown]
        self.scatter.setData(spots)
        self.front_line.setData([p[x_key] for p in front], [p["accuracy"] * 100.0 for p in front])
        self.highlight.setData([], [])
        self.plot.setLabel("bottom", x_title)
        while len(self._texts) < len(shown):
            text = pg.TextItem(anchor=(0.0, 1.0), color=self.palette().text().color())
            font = text.textItem.font()
            font.setPointSizeF(8.0)
            text.setFont(font)
            self.plot.addItem(text, ignoreBounds=True)
            self._texts.append(text)
        xs = [p[x_key] for p in shown]
        mid = (min(xs) + max(xs)) / 2 if xs else 0.0
        for i, text in enumerate(self._texts):
            if i < len(shown):
                p = shown[i]
                text.setText(p["label"])
                # Labels point inwards, so the ones at the right edge are not cut off by the frame.
                text.setAnchor((1.0, 1.0) if len(xs) > 1 and p[x_key] > mid else (0.0, 1.0))
                text.setPos(p[x_key], p["accuracy"] * 100.0)
            text.setVisible(i < len(shown))
        missing = len(self._points) - len(shown)
        notes = list(self._notes)
        if missing:
            notes.append(f"{missing} model(s) without {x_key.replace('_', ' ')}")
        text = "<span style='color:#d62728'>●</span> Pareto frontier: no other model is both faster and at " \
               "least as accurate. <span style='color:#3d8bd9'>●</span> dominated."
        if notes:
            text += "<br>Not drawn: " + html.escape("; ".join(notes))
        self.note_label.setText(text)
        self.plot.getViewBox().setDefaultPadding(0.08)
        self.plot.enableAutoRange()

    def values(self) -> dict[str, Any]:
        """What the chart shows: x key, points as (run id, label, x, accuracy %) and the frontier's labels."""
        x_key = PARETO_AXES[self.x_mode()][0]
        shown = [p for p in self._points if p.get(x_key) is not None and p.get("accuracy") is not None]
        return {"x_key": x_key,
                "points": [(p["run_id"], p["label"], p[x_key], p["accuracy"] * 100.0) for p in shown],
                "front": [p["label"] for p in self._front]}

    def _on_clicked(self, _item: object, spots: Sequence[Any], ev: Any = None) -> None:
        if not len(spots):
            return
        spot = spots[0]
        run_id = spot.data()
        pos = spot.pos()
        self.highlight.setData([pos.x()], [pos.y()])
        double = bool(ev is not None and callable(getattr(ev, "double", None)) and ev.double())
        self.pointClicked.emit(int(run_id), double)

    def png_bytes(self, width: int = 900) -> bytes:
        exporter = pyqtgraph.exporters.ImageExporter(self.plot)
        exporter.parameters()["width"] = width
        image = exporter.export(toBytes=True)
        assert isinstance(image, QImage)
        return image_png_bytes(image)


def scaled(metrics: dict[str, Any], chart: Chart) -> float | None:
    v = value(metrics, chart.key)
    return None if v is None else v * chart.scale
