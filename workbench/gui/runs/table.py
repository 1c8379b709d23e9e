"""The runs table: one row per stored run, sortable by value (not by text), filterable."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QWidget,
)

from workbench.core.store import RunRecord

#: Qt passes either index kind to model methods.
ModelIndex = QModelIndex | QPersistentModelIndex

EMPTY_MESSAGE = "No runs yet: press Run to record one."


# Status colours: readable on light and dark palettes alike.
STATUS_COLOURS = {
    "failed": QColor("#d32f2f"),
    "interrupted": QColor("#c77c02"),
    "cancelled": QColor("#c77c02"),
    "running": QColor("#1e88e5"),
}


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
    Column("Techniques", "Optimizations that ran, in order (while a run is running: the ones it will apply). A dash "
           "means a plain fp32 run.", lambda r: ", ".join(r.techniques), lambda v: v or "—"),
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

#: Statuses of runs that stopped before their end: what they asked for may not have run.
UNFINISHED = ("failed", "cancelled", "interrupted")


def techniques_not_run(run: RunRecord) -> list[str]:
    """What the recipe asked for that the finished run did not do (a failure, or a benchmark-only run)."""
    asked = (run.summary or {}).get("techniques")
    if run.status == "running" or not isinstance(asked, list) or "techniques_ran" not in (run.summary or {}):
        return []
    # A run may name what it did more exactly than the recipe asked ("int8" ran as "int8-static").
    return [str(t) for t in asked if not any(r == t or r.startswith(f"{t}-") for r in run.techniques)]


RUN_ID_ROLE = Qt.ItemDataRole.UserRole + 1
#: Shown before the pinned baseline's name (the row also stays on top and in bold).
PIN_MARK = "⚑ "


class RunsTableModel(QAbstractTableModel):
    """Runs as rows; raw values stay Python numbers so the proxy sorts by value, not by text."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._runs: list[RunRecord] = []
        self.pinned: int | None = None  # the pinned baseline's run ID

    def set_pinned(self, run_id: int | None) -> None:
        self.pinned = run_id
        if self._runs:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._runs) - 1, len(COLUMNS) - 1))

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

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt signature)
        return 0 if parent.isValid() else len(self._runs)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt signature)
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        run, col = self._runs[index.row()], COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            if index.column() == COL_TECHNIQUES and not run.techniques and run.status in UNFINISHED:
                return "none ran"
            if index.column() == COL_NAME and run.id == self.pinned:
                return PIN_MARK + col.fmt(col.value(run))
            return col.fmt(col.value(run))
        if role == Qt.ItemDataRole.FontRole and run.id == self.pinned:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and col.numeric:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == COL_STATUS:
            return STATUS_COLOURS.get(run.status)
        if role == Qt.ItemDataRole.ToolTipRole:
            if index.column() == COL_NAME and run.id == self.pinned:
                return "The pinned baseline: kept on top, and every comparison measures against it (right-click to unpin)."
            if index.column() == COL_TECHNIQUES and (skipped := techniques_not_run(run)):
                return (f"The recipe also asked for {', '.join(skipped)}, which did not run"
                        + (f" (the run {run.status} first)." if run.status in UNFINISHED else "."))
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

    def filterAcceptsRow(self, source_row: int, source_parent: ModelIndex) -> bool:
        if not self._terms:
            return True
        run = self._source().run_at(source_row)
        haystack = " ".join([run.name, run.model, *run.techniques]).lower()
        return all(term in haystack for term in self._terms)

    def lessThan(self, left: ModelIndex, right: ModelIndex) -> bool:
        src = self._source()
        descending = self.sortOrder() == Qt.SortOrder.DescendingOrder
        pinned = src.pinned
        if pinned is not None and pinned in (src.run_at(left.row()).id, src.run_at(right.row()).id):
            # The pinned baseline stays on top whichever way the table is sorted (Qt flips for descending).
            return descending != (src.run_at(left.row()).id == pinned)
        a, b = src.raw(left.row(), left.column()), src.raw(right.row(), right.column())
        if a is None or b is None:
            if a is None and b is None:
                return src.run_at(left.row()).id < src.run_at(right.row()).id
            # Qt reverses the comparison for descending order; flip it so blanks stay at the bottom.
            return descending if a is None else not descending
        if isinstance(a, str) and isinstance(b, str):
            return a.casefold() < b.casefold()
        return a < b
