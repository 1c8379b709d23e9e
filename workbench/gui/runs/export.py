"""Saving what the runs view shows: PNG images of charts, CSV tables, and small table helpers."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import (
    QBuffer,
    QByteArray,
    QIODevice,
    Qt,
)
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
)


def image_png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise OSError("could not encode the chart as PNG")
    buffer.close()
    return bytes(data.data())


def csv_text(rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def small_table(columns: Sequence[tuple[str, str]], object_name: str, tip: str) -> QTableWidget:
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


def fit_rows(table: QTableWidget, max_rows: int = 6) -> None:
    """Size a small table to its rows (up to ``max_rows``, then it scrolls) so the charts keep the space."""
    table.resizeRowsToContents()
    rows = min(table.rowCount(), max_rows)
    height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
    height += sum(table.rowHeight(i) for i in range(rows)) or table.verticalHeader().defaultSectionSize()
    if table.horizontalScrollBar().isVisible():
        height += table.horizontalScrollBar().sizeHint().height()
    table.setFixedHeight(height)


def table_cell(text: str, numeric: bool = True, centred: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if centred:
        item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
    elif numeric:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item
