"""Runs view: every stored run in a sortable table, side-by-side comparison charts, exports.

The table reads only run rows (the summary JSON rides along); metric series are never loaded here,
so ``refresh()`` stays cheap enough for the GUI thread. Charts are created once and updated with
new bar data, as DESIGN.md asks of every plot.

A speedup is only meaningful between two measured runs, so the comparison always names its
baseline: a plain fp32 run (no techniques) among the selection by default, else the oldest one.
A single run that recorded its own baseline is compared against it ("baseline vs final").
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyqtgraph as pg
import pyqtgraph.exporters
from PySide6.QtCore import (
    QAbstractTableModel,
    QBuffer,
    QByteArray,
    QIODevice,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QAction, QColor, QFontMetrics, QImage
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.engine.fileio import atomic_write_bytes, atomic_write_text
from workbench.engine.store import RunRecord, RunStore

EMPTY_MESSAGE = "No runs yet: press Run to record one."

_ModelIndex = QModelIndex | QPersistentModelIndex

# Status colours: readable on light and dark palettes alike.
STATUS_COLOURS = {
    "failed": QColor("#d32f2f"),
    "interrupted": QColor("#c77c02"),
    "cancelled": QColor("#c77c02"),
    "running": QColor("#1e88e5"),
}


# -- table columns -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One table column: how to read its raw value from a run, how to show it, what it means."""

    title: str
    tip: str
    value: Callable[[RunRecord], Any]
    fmt: Callable[[Any], str] = str
    numeric: bool = False


def _metric(key: str, scale: float = 1.0) -> Callable[[RunRecord], float | None]:
    def read(run: RunRecord) -> float | None:
        v = run.final.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
            return None
        return float(v) * scale
    return read


def _num(spec: str) -> Callable[[Any], str]:
    return lambda v: "" if v is None else format(v, spec)


def _date(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


COLUMNS: tuple[Column, ...] = (
    Column("ID", "Run number in the store (newest runs have the highest numbers).",
           lambda r: r.id, str, numeric=True),
    Column("Name", "Run name from the recipe.", lambda r: r.name),
    Column("Model", "Model that was trained or measured.", lambda r: r.model),
    Column("Techniques", "Optimizations applied, in order. A dash means a plain fp32 run.",
           lambda r: ", ".join(r.techniques), lambda v: v or "—"),
    Column("Status", "completed, failed (hover for the error), cancelled, interrupted or running.",
           lambda r: r.status),
    Column("Accuracy (%)", "Eval-split accuracy of the final model.",
           _metric("accuracy", 100.0), _num(".2f"), numeric=True),
    Column("Latency p50 (ms)", "Median latency of one batch at the first benchmarked batch size "
           "(final model). Lower is better.", _metric("latency_ms_p50"), _num(".3f"), numeric=True),
    Column("Latency p95 (ms)", "95th-percentile latency of one batch (final model): the slow tail.",
           _metric("latency_ms_p95"), _num(".3f"), numeric=True),
    Column("Throughput (samples/s)", "Best inference throughput over the benchmarked batch sizes "
           "(final model). Higher is better.", _metric("throughput"), _num(",.1f"), numeric=True),
    Column("Size (MB)", "Size of the final model's weights or ONNX file (1 MB = 10^6 bytes).",
           _metric("size_bytes", 1e-6), _num(".2f"), numeric=True),
    Column("Date", "When the run started (local time).", lambda r: r.created_at, _date),
)
COL_ID, COL_NAME, COL_MODEL, COL_TECHNIQUES, COL_STATUS = range(5)
COL_THROUGHPUT = 8
COL_DATE = len(COLUMNS) - 1
RUN_ID_ROLE = Qt.ItemDataRole.UserRole + 1


class RunsTableModel(QAbstractTableModel):
    """Runs as rows; raw values stay Python numbers so the proxy sorts by value, not by text."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._runs: list[RunRecord] = []

    def set_runs(self, runs: Sequence[RunRecord]) -> None:
        self.beginResetModel()
        self._runs = list(runs)
        self.endResetModel()

    def runs(self) -> list[RunRecord]:
        return list(self._runs)

    def run_at(self, row: int) -> RunRecord:
        return self._runs[row]

    def row_of(self, run_id: int) -> int | None:
        for i, r in enumerate(self._runs):
            if r.id == run_id:
                return i
        return None

    def raw(self, row: int, column: int) -> Any:
        return COLUMNS[column].value(self._runs[row])

    def rowCount(self, parent: _ModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt signature)
        return 0 if parent.isValid() else len(self._runs)

    def columnCount(self, parent: _ModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt signature)
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: _ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        run, col = self._runs[index.row()], COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return col.fmt(col.value(run))
        if role == Qt.ItemDataRole.TextAlignmentRole and col.numeric:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == COL_STATUS:
            return STATUS_COLOURS.get(run.status)
        if role == Qt.ItemDataRole.ToolTipRole:
            if run.error:
                return f"{run.status}: {run.error}"
            if index.column() == COL_TECHNIQUES and not run.techniques:
                return "No techniques: a plain fp32 run, the natural baseline."
            return None
        if role == RUN_ID_ROLE:
            return run.id
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section].title
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section].tip + " Click to sort."
        return None


class RunsFilterProxy(QSortFilterProxyModel):
    """Sorts numbers as numbers (missing values always last) and filters by name/model/technique."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._terms: list[str] = []

    def set_filter_text(self, text: str) -> None:
        """Every whitespace-separated term must appear in the name, model or techniques."""
        self.beginFilterChange()
        self._terms = text.lower().split()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def _source(self) -> RunsTableModel:
        model = self.sourceModel()
        assert isinstance(model, RunsTableModel)
        return model

    def filterAcceptsRow(self, source_row: int, source_parent: _ModelIndex) -> bool:
        if not self._terms:
            return True
        run = self._source().run_at(source_row)
        haystack = " ".join([run.name, run.model, *run.techniques]).lower()
        return all(term in haystack for term in self._terms)

    def lessThan(self, left: _ModelIndex, right: _ModelIndex) -> bool:
        src = self._source()
        a, b = src.raw(left.row(), left.column()), src.raw(right.row(), right.column())
        if a is None or b is None:
            if a is None and b is None:
                return src.run_at(left.row()).id < src.run_at(right.row()).id
            # Qt reverses the comparison for descending order; flip it so blanks stay at the bottom.
            descending = self.sortOrder() == Qt.SortOrder.DescendingOrder
            return descending if a is None else not descending
        if isinstance(a, str) and isinstance(b, str):
            return a.casefold() < b.casefold()
        return a < b


# -- comparison ----------------------------------------------------------------------------------

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


@dataclass
class CompareEntry:
    """One bar group: a run's final figures, or a run's own baseline/final in single-run mode."""

    label: str
    run_id: int
    metrics: dict[str, Any]
    is_baseline: bool = False


def _value(metrics: dict[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        return None
    return float(v)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den not in (None, 0.0) else None


def speedup_row(run: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """Ratios against the baseline: >1 means faster for both speedups; size ratio <1 means smaller."""
    acc, base_acc = _value(run, "accuracy"), _value(base, "accuracy")
    return {
        "latency_speedup": _ratio(_value(base, "latency_ms_p50"), _value(run, "latency_ms_p50")),
        "throughput_speedup": _ratio(_value(run, "throughput"), _value(base, "throughput")),
        "accuracy_delta_pts": None if acc is None or base_acc is None else (acc - base_acc) * 100.0,
        "size_ratio": _ratio(_value(run, "size_bytes"), _value(base, "size_bytes")),
    }


def default_baseline(runs: Sequence[RunRecord]) -> RunRecord:
    """A plain fp32 run (no techniques) when one is selected, else the oldest; oldest first on ties."""
    oldest_first = sorted(runs, key=lambda r: (r.created_at, r.id))
    plain = [r for r in oldest_first if not r.techniques]
    return (plain or oldest_first)[0]


def _short_label(run: RunRecord) -> str:
    return f"#{run.id} {run.name}".strip()


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
        return _image_png_bytes(image)


def _image_png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise OSError("could not encode the chart as PNG")
    buffer.close()
    return bytes(data.data())


def _csv_text(rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def _fmt_ratio(v: float | None, suffix: str = "×") -> str:
    return "n/a" if v is None else f"{v:.2f}{suffix}"


def _fmt_delta(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f} pts"


def _fmt_metric(metrics: dict[str, Any], key: str, scale: float, spec: str) -> str:
    v = _value(metrics, key)
    return "—" if v is None else format(v * scale, spec)


def _small_table(columns: Sequence[tuple[str, str]], object_name: str, tip: str) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setObjectName(object_name)
    table.setToolTip(tip)
    for i, (title, col_tip) in enumerate(columns):
        item = QTableWidgetItem(title)
        item.setToolTip(col_tip)
        table.setHorizontalHeaderItem(i, item)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.setAlternatingRowColors(True)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


def _fit_rows(table: QTableWidget, max_rows: int = 6) -> None:
    """Size a small table to its rows (up to ``max_rows``, then it scrolls) so the charts keep the space."""
    table.resizeRowsToContents()
    rows = min(table.rowCount(), max_rows)
    height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
    height += sum(table.rowHeight(i) for i in range(rows)) or table.verticalHeader().defaultSectionSize()
    if table.horizontalScrollBar().isVisible():
        height += table.horizontalScrollBar().sizeHint().height()
    table.setFixedHeight(height)


def _cell(text: str, numeric: bool = True, centred: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if centred:
        item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
    elif numeric:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


SPEEDUP_COLUMNS = (
    ("Run", "Compared run; the baseline row reads 1.00×."),
    ("Latency speedup", "Baseline p50 latency ÷ this run's p50 latency. Above 1× means faster."),
    ("Throughput speedup", "This run's throughput ÷ baseline throughput. Above 1× means faster."),
    ("Accuracy Δ", "This run's accuracy minus the baseline's, in percentage points."),
    ("Size ratio", "This run's size ÷ baseline size. Below 1× means smaller."),
)

STAGE_COLUMNS = (
    ("Stage", "Optimization stage, in the order it ran."),
    ("Accuracy (%)", "Eval accuracy before → after the stage."),
    ("Latency p50 (ms)", "Median batch latency before → after the stage."),
    ("Throughput (samples/s)", "Inference throughput before → after the stage."),
    ("Size (MB)", "Model size before → after the stage."),
    ("Note", "What the stage reported, e.g. why a speedup is not expected."),
)
STAGE_METRICS = (("accuracy", 100.0, ".2f"), ("latency_ms_p50", 1.0, ".3f"), ("throughput", 1.0, ",.1f"),
                 ("size_bytes", 1e-6, ".2f"))


# -- the view ------------------------------------------------------------------------------------

class RunsView(QWidget):
    """Browse, compare, export and delete stored runs."""

    openRecipeRequested = Signal(str)
    runsDeleted = Signal(list)

    def __init__(self, store: RunStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self._baseline_id: int | None = None  # the user's choice, kept while that run stays selected
        self._entries: list[CompareEntry] = []
        self._mode = "none"
        self._last_dir = Path.home()

        self.model = RunsTableModel(self)
        self.proxy = RunsFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setDynamicSortFilter(True)

        self._build_actions()
        self._build_ui()
        self.refresh()

    # -- construction ----------------------------------------------------------------------------
    def _action(self, text: str, tip: str, slot: Callable[[], object]) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        self.open_recipe_action = self._action(
            "Open recipe", "Load the selected run's recipe into the editor, to rerun or vary it.",
            self.open_recipe)
        self.delete_action = self._action(
            "Delete…", "Delete the selected runs with their metric series, logs and saved files "
            "(asks first).", self.delete_selected)
        self.export_csv_action = self._action(
            "Export table as CSV…", "Save the rows shown in the table (after filtering) as a CSV file.",
            self._export_csv_dialog)
        self.refresh_action = self._action(
            "Refresh", "Reload the runs from the run store.", self.refresh)
        self.save_png_action = self._action(
            "Save chart as PNG…", "Save each comparison chart as a PNG image into a folder you choose.",
            self._save_png_dialog)
        self.save_chart_csv_action = self._action(
            "Save chart data as CSV…", "Save the numbers behind the comparison charts and the speedup "
            "table as a CSV file.", self._save_chart_csv_dialog)

    def _button(self, action: QAction) -> QToolButton:
        button = QToolButton(self)
        button.setDefaultAction(action)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.setAutoRaise(False)
        return button

    def _build_ui(self) -> None:
        self.stack = QStackedWidget(self)
        root = QVBoxLayout(self)
        root.setContentsMargins(0, 0, 0, 0)
        root.addWidget(self.stack)

        self.empty_label = QLabel(EMPTY_MESSAGE, self)
        self.empty_label.setObjectName("runsEmptyLabel")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setToolTip("Runs appear here as soon as they start, and stay after the app closes.")
        self.stack.addWidget(self.empty_label)

        content = QWidget(self)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(6, 6, 6, 6)
        bar = QHBoxLayout()
        self.filter_edit = QLineEdit(content)
        self.filter_edit.setObjectName("runsFilter")
        self.filter_edit.setPlaceholderText("Filter by name, model or technique")
        self.filter_edit.setToolTip("Show only runs whose name, model or techniques contain every word typed.")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.proxy.set_filter_text)
        bar.addWidget(self.filter_edit, 1)
        for action in (self.open_recipe_action, self.delete_action, self.export_csv_action, self.refresh_action):
            bar.addWidget(self._button(action))
        layout.addLayout(bar)

        self.table = QTableView(content)
        self.table.setObjectName("runsTable")
        self.table.setToolTip("Stored runs. Select two or more (Ctrl/Shift-click) to compare them; "
                              "select one to see its baseline against its optimized result.")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL_ID, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._show_context_menu)
        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)

        self.context_menu = QMenu(self)
        self.context_menu.setToolTipsVisible(True)
        for action in (self.open_recipe_action, self.delete_action, None, self.export_csv_action,
                       self.save_png_action, self.save_chart_csv_action, None, self.refresh_action):
            if action is None:
                self.context_menu.addSeparator()
            else:
                self.context_menu.addAction(action)

        splitter = QSplitter(Qt.Orientation.Vertical, content)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.table)
        splitter.addWidget(self._build_compare(content))
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        layout.addWidget(splitter, 1)
        self.stack.addWidget(content)

    def _build_compare(self, parent: QWidget) -> QWidget:
        self.compare_stack = QStackedWidget(parent)
        self.compare_hint = QLabel(self.compare_stack)
        self.compare_hint.setObjectName("compareHint")
        self.compare_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.compare_hint.setWordWrap(True)
        self.compare_hint.setToolTip("Comparison charts appear here for the runs selected above.")
        self.compare_stack.addWidget(self.compare_hint)

        page = QFrame(self.compare_stack)
        page.setObjectName("comparePanel")
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 4, 0, 0)
        top = QHBoxLayout()
        self.compare_title = QLabel(page)
        self.compare_title.setObjectName("compareTitle")
        self.compare_title.setToolTip("What the charts compare.")
        font = self.compare_title.font()
        font.setBold(True)
        self.compare_title.setFont(font)
        top.addWidget(self.compare_title)
        top.addStretch(1)
        self.baseline_label = QLabel("Baseline:", page)
        self.baseline_combo = QComboBox(page)
        self.baseline_combo.setObjectName("baselineCombo")
        self.baseline_combo.setToolTip("Run that speedups are measured against (grey bars). "
                                       "Defaults to a plain fp32 run, else the oldest selected.")
        self.baseline_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.baseline_label.setToolTip(self.baseline_combo.toolTip())
        self.baseline_combo.activated.connect(self._on_baseline_chosen)
        top.addWidget(self.baseline_label)
        top.addWidget(self.baseline_combo)
        top.addWidget(self._button(self.save_png_action))
        top.addWidget(self._button(self.save_chart_csv_action))
        layout.addLayout(top)

        charts_row = QHBoxLayout()
        self.charts: dict[str, BarChart] = {}
        for chart in CHARTS:
            self.charts[chart.key] = BarChart(chart, page)
            charts_row.addWidget(self.charts[chart.key].widget)
        layout.addLayout(charts_row, 3)

        self.speedup_table = _small_table(SPEEDUP_COLUMNS, "speedupTable",
                                          "Each run against the chosen baseline, measured side by side.")
        header = self.speedup_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.speedup_table)
        self.stages_box = QWidget(page)
        stages_layout = QVBoxLayout(self.stages_box)
        stages_layout.setContentsMargins(0, 4, 0, 0)
        stages_title = QLabel("Stages of this run", self.stages_box)
        stages_title.setFont(font)
        stages_title.setToolTip("The optimization stages of this run, each measured before and after.")
        stages_layout.addWidget(stages_title)
        self.stages_table = _small_table(STAGE_COLUMNS, "stagesTable",
                                         "Each optimization stage of this run, measured before and after.")
        stages_layout.addWidget(self.stages_table)
        layout.addWidget(self.stages_box)
        self.compare_stack.addWidget(page)
        return self.compare_stack

    # -- data --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload the run rows from the store, keeping the selection where the runs still exist."""
        keep = self.selected_ids()
        first_load = self.model.rowCount() == 0
        self.model.set_runs(self.store.list_runs())
        if first_load:
            self.table.resizeColumnsToContents()  # once: later refreshes keep the user's column widths
        self.stack.setCurrentIndex(0 if self.model.rowCount() == 0 else 1)
        present = [i for i in keep if self.model.row_of(i) is not None]
        if present:
            self.select_runs(present)
        else:
            self._on_selection_changed()

    def runs(self) -> list[RunRecord]:
        """All runs currently loaded (unfiltered), newest first."""
        return self.model.runs()

    def selected_runs(self) -> list[RunRecord]:
        """Selected runs, oldest first (the order the bars are drawn in)."""
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        return sorted((self.model.run_at(r) for r in rows), key=lambda r: (r.created_at, r.id))

    def selected_ids(self) -> list[int]:
        return [r.id for r in self.selected_runs()]

    def select_runs(self, ids: Sequence[int]) -> None:
        """Select exactly these runs (clearing the filter if it hides any of them)."""
        rows = []
        for run_id in ids:
            row = self.model.row_of(run_id)
            if row is None:
                raise KeyError(f"no run with ID {run_id} in the table")
            rows.append(row)
        if self.filter_edit.text() and any(
                not self.proxy.mapFromSource(self.model.index(r, 0)).isValid() for r in rows):
            self.filter_edit.clear()
        selection = QItemSelection()
        for row in rows:
            index = self.proxy.mapFromSource(self.model.index(row, 0))
            selection.select(index, index)
        flags = (QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.table.selectionModel().select(selection, flags)
        if rows:
            self.table.scrollTo(self.proxy.mapFromSource(self.model.index(rows[0], 0)))
        self._on_selection_changed()

    # -- selection and comparison -----------------------------------------------------------------
    def _on_selection_changed(self, *_: object) -> None:
        runs = self.selected_runs()
        running = any(r.status == "running" for r in runs)
        one = len(runs) == 1
        self.open_recipe_action.setEnabled(one and bool(runs[0].recipe))
        self.delete_action.setEnabled(bool(runs) and not running)
        self.delete_action.setToolTip(
            "A running run cannot be deleted: cancel it first." if running else
            "Delete the selected runs with their metric series, logs and saved files (asks first).")
        self.export_csv_action.setEnabled(self.model.rowCount() > 0)
        self._update_compare(runs)

    def _update_compare(self, runs: list[RunRecord]) -> None:
        entries: list[CompareEntry] = []
        if len(runs) >= 2:
            ids = [r.id for r in runs]
            if self._baseline_id not in ids:
                self._baseline_id = default_baseline(runs).id
            entries = [CompareEntry(_short_label(r), r.id, r.final, r.id == self._baseline_id) for r in runs]
            self._mode = "runs"
            self.compare_title.setText(f"Comparing {len(runs)} runs (final models)")
        elif len(runs) == 1 and runs[0].baseline and runs[0].final:
            run = runs[0]
            entries = [CompareEntry(f"#{run.id} baseline", run.id, run.baseline, True),
                       CompareEntry(f"#{run.id} optimized", run.id, run.final)]
            self._mode = "baseline_vs_final"
            self.compare_title.setText(f"Run #{run.id} {run.name}: its baseline against its optimized model")
        else:
            self._mode = "none"
            if not runs:
                hint = "Select two or more runs to compare them, or one to see its baseline against its result."
            else:
                hint = (f"Run #{runs[0].id} has no separate baseline measurement (no optimization stage ran).\n"
                        "Select two or more runs to compare them.")
            self.compare_hint.setText(hint)
        self._entries = entries
        self.compare_stack.setCurrentIndex(1 if entries else 0)
        self.save_png_action.setEnabled(bool(entries))
        self.save_chart_csv_action.setEnabled(bool(entries))
        if not entries:
            return

        self._fill_baseline_combo(runs)
        base_index = next(i for i, e in enumerate(entries) if e.is_baseline)
        labels = [e.label for e in entries]
        for chart in CHARTS:
            values = [_scaled(e.metrics, chart) for e in entries]
            self.charts[chart.key].set_data(labels, values, base_index)
        self._fill_speedup_table()
        self._fill_stages_table(runs[0] if self._mode == "baseline_vs_final" else None)

    def _fill_baseline_combo(self, runs: list[RunRecord]) -> None:
        show = self._mode == "runs"
        self.baseline_label.setVisible(show)
        self.baseline_combo.setVisible(show)
        self.baseline_combo.blockSignals(True)
        self.baseline_combo.clear()
        if show:
            for r in runs:
                text = _short_label(r) + (f" ({', '.join(r.techniques)})" if r.techniques else " (fp32)")
                self.baseline_combo.addItem(text, r.id)
            self.baseline_combo.setCurrentIndex(self.baseline_combo.findData(self._baseline_id))
        self.baseline_combo.blockSignals(False)

    def _on_baseline_chosen(self, index: int) -> None:
        run_id = self.baseline_combo.itemData(index)
        if run_id is not None:
            self.set_baseline(int(run_id))

    def set_baseline(self, run_id: int) -> None:
        """Measure speedups against this run; it must be one of the selected runs."""
        if run_id not in self.selected_ids():
            raise ValueError(f"run {run_id} is not selected, so it cannot be the baseline")
        self._baseline_id = run_id
        self._update_compare(self.selected_runs())

    def baseline_id(self) -> int | None:
        """The run speedups are measured against (in single-run mode, that run itself)."""
        return next((e.run_id for e in self._entries if e.is_baseline), None)

    def _fill_speedup_table(self) -> None:
        rows = self.speedup_rows()
        self.speedup_table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            label = row["label"] + ("  (baseline)" if row["is_baseline"] and self._mode == "runs" else "")
            texts = [_fmt_ratio(row["latency_speedup"]), _fmt_ratio(row["throughput_speedup"]),
                     _fmt_delta(row["accuracy_delta_pts"]), _fmt_ratio(row["size_ratio"])]
            cells = [_cell(label, numeric=False), *(_cell(t, centred=True) for t in texts)]
            for j, cell in enumerate(cells):
                if row["is_baseline"]:
                    font = cell.font()
                    font.setItalic(True)
                    cell.setFont(font)
                self.speedup_table.setItem(i, j, cell)
        _fit_rows(self.speedup_table)

    def _fill_stages_table(self, run: RunRecord | None) -> None:
        stages = [s for s in (run.summary.get("stages") or []) if isinstance(s, dict)] if run else []
        self.stages_box.setVisible(bool(stages))
        self.stages_table.setRowCount(len(stages))
        for i, stage in enumerate(stages):
            before, after = stage.get("before") or {}, stage.get("after") or {}
            self.stages_table.setItem(i, 0, _cell(str(stage.get("name", "")), numeric=False))
            for j, (key, scale, spec) in enumerate(STAGE_METRICS, start=1):
                text = f"{_fmt_metric(before, key, scale, spec)} → {_fmt_metric(after, key, scale, spec)}"
                self.stages_table.setItem(i, j, _cell(text))
            note = _cell(str(stage.get("note") or ""), numeric=False)
            note.setToolTip(note.text())
            self.stages_table.setItem(i, len(STAGE_COLUMNS) - 1, note)
        _fit_rows(self.stages_table)

    def compare_values(self) -> dict[str, Any]:
        """What the charts show: labels, run IDs, baseline index and, per chart key, values in chart units
        (accuracy in %, size in MB; None where a run did not measure it). ``mode`` is "runs",
        "baseline_vs_final" or "none"."""
        base = next((i for i, e in enumerate(self._entries) if e.is_baseline), None)
        out: dict[str, Any] = {"mode": self._mode, "labels": [e.label for e in self._entries],
                               "run_ids": [e.run_id for e in self._entries], "baseline_index": base,
                               "units": {c.key: c.unit for c in CHARTS}}
        for chart in CHARTS:
            out[chart.key] = [_scaled(e.metrics, chart) for e in self._entries]
        return out

    def speedup_rows(self) -> list[dict[str, Any]]:
        """The speedup table's rows: each compared entry against the baseline (raw ratios, not text)."""
        base = next((e for e in self._entries if e.is_baseline), None)
        if base is None:
            return []
        return [{"label": e.label, "run_id": e.run_id, "is_baseline": e.is_baseline,
                 **speedup_row(e.metrics, base.metrics)} for e in self._entries]

    # -- actions -----------------------------------------------------------------------------------
    def _show_context_menu(self, pos: QPoint) -> None:
        self.context_menu.popup(self.table.viewport().mapToGlobal(pos))

    def open_recipe(self) -> None:
        runs = self.selected_runs()
        if len(runs) == 1 and runs[0].recipe:
            self.openRecipeRequested.emit(runs[0].recipe)

    def confirm(self, title: str, text: str) -> bool:
        """Ask a yes/no question (tests replace this method to answer without a dialog)."""
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def show_error(self, title: str, text: str) -> None:
        """Tell the user an export failed (tests replace this to capture the message)."""
        QMessageBox.warning(self, title, text)

    def delete_selected(self) -> list[int]:
        """Delete the selected runs after confirmation; returns the IDs deleted (empty if declined)."""
        runs = [r for r in self.selected_runs() if r.status != "running"]
        if not runs:
            return []
        names = ", ".join(_short_label(r) for r in runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
        what = "this run" if len(runs) == 1 else f"these {len(runs)} runs"
        if not self.confirm("Delete runs",
                            f"Delete {what}: {names}?\n\nTheir metric series, logs and saved files (weights, "
                            "ONNX exports) are removed too. This cannot be undone."):
            return []
        ids = [r.id for r in runs]
        for run_id in ids:
            self.store.delete_run(run_id)
        self.refresh()
        self.runsDeleted.emit(ids)
        return ids

    def table_rows(self) -> list[list[Any]]:
        """Header plus the rows shown (filtered, in display order), with unrounded numbers."""
        rows: list[list[Any]] = [[c.title for c in COLUMNS] + ["Error"]]
        for prow in range(self.proxy.rowCount()):
            src = self.proxy.mapToSource(self.proxy.index(prow, 0)).row()
            run = self.model.run_at(src)
            values = [self.model.raw(src, c) for c in range(len(COLUMNS))]
            values[COL_DATE] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.created_at))
            rows.append([*values, run.error])
        return rows

    def export_csv(self, path: str | Path) -> Path:
        """Write the table (rows shown, numbers unrounded) as CSV, atomically. Overwrites: callers ask first."""
        path = Path(path)
        atomic_write_text(path, _csv_text(self.table_rows()))
        return path

    def export_chart_csv(self, path: str | Path) -> Path:
        """Write the numbers behind the charts and the speedup table as CSV, atomically."""
        path = Path(path)
        values, speedups = self.compare_values(), self.speedup_rows()
        header = ["Run ID", "Label", "Baseline"] + [f"{c.title} ({c.unit})" for c in CHARTS] + \
            ["Latency speedup (x)", "Throughput speedup (x)", "Accuracy delta (pts)", "Size ratio (x)"]
        rows: list[list[Any]] = [header]
        for i, label in enumerate(values["labels"]):
            s = speedups[i]
            rows.append([values["run_ids"][i], label, "yes" if i == values["baseline_index"] else "",
                         *[values[c.key][i] for c in CHARTS], s["latency_speedup"], s["throughput_speedup"],
                         s["accuracy_delta_pts"], s["size_ratio"]])
        atomic_write_text(path, _csv_text(rows))
        return path

    def chart_png_paths(self, folder: str | Path) -> list[Path]:
        """Where save_charts_png(folder) writes: one file per chart."""
        return [Path(folder) / f"compare-{c.key.replace('_', '-')}.png" for c in CHARTS]

    def save_charts_png(self, folder: str | Path) -> list[Path]:
        """Save each compare chart as a PNG in ``folder`` (atomically); returns the paths written."""
        if not self._entries:
            raise RuntimeError("nothing to save: select runs to compare first")
        paths = self.chart_png_paths(folder)
        for chart, path in zip(CHARTS, paths, strict=True):
            atomic_write_bytes(path, self.charts[chart.key].png_bytes())
        return paths

    # -- dialogs (thin wrappers over the methods above) --------------------------------------------
    def ask_save_path(self, caption: str, default_name: str, name_filter: str, suffix: str) -> Path | None:
        """A save dialog that adds the suffix itself, so its overwrite prompt sees the final name."""
        dialog = QFileDialog(self, caption, str(self._last_dir / default_name), name_filter)
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix(suffix)
        if not dialog.exec() or not dialog.selectedFiles():
            return None
        path = Path(dialog.selectedFiles()[0])
        self._last_dir = path.parent
        return path

    def ask_folder(self, caption: str) -> Path | None:
        folder = QFileDialog.getExistingDirectory(self, caption, str(self._last_dir))
        if not folder:
            return None
        self._last_dir = Path(folder)
        return Path(folder)

    def _guarded(self, title: str, work: Callable[[], object]) -> None:
        try:
            work()
        except OSError as exc:
            self.show_error(title, f"{title} failed: {exc}")

    def _export_csv_dialog(self) -> None:
        path = self.ask_save_path("Export runs table", "runs.csv", "CSV files (*.csv)", "csv")
        if path is not None:
            self._guarded("Export table", lambda: self.export_csv(path))

    def _save_chart_csv_dialog(self) -> None:
        path = self.ask_save_path("Save chart data", "compare.csv", "CSV files (*.csv)", "csv")
        if path is not None:
            self._guarded("Save chart data", lambda: self.export_chart_csv(path))

    def _save_png_dialog(self) -> None:
        folder = self.ask_folder("Save comparison charts into folder")
        if folder is None:
            return
        existing = [p for p in self.chart_png_paths(folder) if p.exists()]
        if existing and not self.confirm(
                "Overwrite charts", "These files exist already:\n" + "\n".join(p.name for p in existing)
                + "\n\nOverwrite them?"):
            return
        self._guarded("Save charts", lambda: self.save_charts_png(folder))


def _scaled(metrics: dict[str, Any], chart: Chart) -> float | None:
    v = _value(metrics, chart.key)
    return None if v is None else v * chart.scale
