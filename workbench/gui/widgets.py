"""Small shared pieces for the GUI: capability probes, formatting, a thumbnail strip."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics, QImage, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProxyStyle,
    QScrollArea,
    QStyle,
    QStyleFactory,
    QStyleOption,
    QStyleOptionHeader,
    QVBoxLayout,
    QWidget,
)


class SortArrowStyle(QProxyStyle):
    """Fusion with header sort arrows that point the way the rows go: ▲ smallest first, ▼ largest first.

    Qt hands the style ``SortDown`` for an ascending sort and Fusion draws it as ▼, the opposite of the
    convention of file managers and spreadsheets; users read it as the table sorting against its arrow.
    """

    def __init__(self) -> None:
        super().__init__(QStyleFactory.create("Fusion"))

    def drawPrimitive(self, element: QStyle.PrimitiveElement, option: QStyleOption, painter: Any,  # noqa: N802
                      widget: QWidget | None = None) -> None:
        if element == QStyle.PrimitiveElement.PE_IndicatorHeaderArrow and isinstance(option, QStyleOptionHeader):
            flipped = QStyleOptionHeader(option)
            up, down = QStyleOptionHeader.SortIndicator.SortUp, QStyleOptionHeader.SortIndicator.SortDown
            if option.sortIndicator == down:
                flipped.sortIndicator = up
            elif option.sortIndicator == up:
                flipped.sortIndicator = down
            option = flipped
        super().drawPrimitive(element, option, painter, widget)


@functools.cache
def cuda_available() -> bool:
    """Asked once: options that need CUDA are disabled (with the reason) when this is False."""
    import torch

    return bool(torch.cuda.is_available())


@functools.cache
def cpu_has_native_bf16() -> bool:
    from workbench.core.precision import bf16_supported_on_cpu

    return bf16_supported_on_cpu()


def human_count(n: float | None) -> str:
    """1234567 -> '1.23 M' (params, MACs)."""
    if n is None:
        return "—"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f} B"


def array_to_pixmap(img: np.ndarray, size: int) -> QPixmap:
    """(H, W, 3) uint8 -> a pixmap scaled to ``size`` px (nearest: tiny images stay crisp)."""
    arr = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    h, w = arr.shape[:2]
    qimg = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()  # copy: own the buffer
    return QPixmap.fromImage(qimg).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                          Qt.TransformationMode.FastTransformation)


class ThumbnailStrip(QScrollArea):
    """A horizontal strip of labelled thumbnails (data previews)."""

    THUMB = 64

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFixedHeight(self.THUMB + 48)
        self._inner = QWidget()
        self._row = QHBoxLayout(self._inner)
        self._row.setContentsMargins(4, 4, 4, 4)
        self._row.setSpacing(6)
        self._row.addStretch(1)
        self.setWidget(self._inner)
        self.count = 0

    def clear(self) -> None:
        while self._row.count() > 1:
            item = self._row.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.count = 0

    def set_items(self, items: list[tuple[np.ndarray | None, str]]) -> None:
        self.clear()
        for img, label in items:
            cell = QWidget()
            col = QVBoxLayout(cell)
            col.setContentsMargins(0, 0, 0, 0)
            col.setSpacing(2)
            pic = QLabel()
            pic.setFixedSize(self.THUMB, self.THUMB)
            pic.setAlignment(Qt.AlignmentFlag.AlignCenter)
            if img is not None:
                pic.setPixmap(array_to_pixmap(img, self.THUMB))
            else:
                pic.setText("(table\nrow)")
                pic.setStyleSheet("color: #777; border: 1px dashed #bbb;")
            text = QLabel()
            font = text.font()
            font.setPointSizeF(8.0)
            text.setFont(font)
            text.setAlignment(Qt.AlignmentFlag.AlignCenter)
            text.setFixedWidth(self.THUMB + 12)
            text.setText(QFontMetrics(text.font()).elidedText(label, Qt.TextElideMode.ElideRight, self.THUMB + 10))
            text.setToolTip(label)
            col.addWidget(pic, 0, Qt.AlignmentFlag.AlignHCenter)
            col.addWidget(text)
            self._row.insertWidget(self._row.count() - 1, cell)
            self.count += 1
