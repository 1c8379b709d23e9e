"""Small, dependency-free SVG charts (line, scatter, bar) for self-contained HTML reports.

Why hand-written SVG: a report must be one file that opens anywhere without network or extra
packages. matplotlib is not a dependency, and pyqtgraph would pull Qt into the engine (which must
never import Qt). The charts here cover what reports need: lines against a linear or log axis
(with shaded stage bands), scatter with a drawn frontier and a budget line, grouped bars.

Every function returns an ``<svg>`` string (no XML declaration, no ``xmlns`` unless
``standalone=True``: inline SVG in HTML5 needs none, and leaving it out keeps the report free of
any ``http://`` text). All text is escaped; NaN/inf values are dropped, empty input gives a chart
that says "no data" instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

#: Colour-blind-friendly palette (Okabe & Ito), in the order series get them.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 64, 16, 46, 46
_FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


@dataclass
class Series:
    """One line: ``points`` are (x, y); ``color`` defaults to the palette by position."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str | None = None
    dashed: bool = False
    markers: bool = True


@dataclass
class Band:
    """A shaded x-range with a label (e.g. a pipeline stage on a telemetry timeline)."""

    x0: float
    x1: float
    label: str
    color: str = "#888888"


@dataclass
class ScatterPoint:
    x: float
    y: float
    label: str = ""
    color: str | None = None
    highlight: bool = False  # drawn larger with a ring (e.g. the best point within a budget)
    group: str = ""  # legend entry; points of one group share a colour


@dataclass
class Axis:
    """Maps data values to pixels on one axis (linear or log10)."""

    lo: float
    hi: float
    p0: float
    p1: float
    log: bool = False
    ticks: list[float] = field(default_factory=list)

    def __call__(self, v: float) -> float:
        lo, hi, v2 = self.lo, self.hi, v
        if self.log:
            lo, hi, v2 = math.log10(lo), math.log10(hi), math.log10(max(v, 1e-300))
        if hi == lo:
            return (self.p0 + self.p1) / 2
        return self.p0 + (v2 - lo) / (hi - lo) * (self.p1 - self.p0)


def _finite(*vals: float) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in vals)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) from at or below ``lo`` to at or above ``hi``."""
    if not _finite(lo, hi):
        return []
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        span = abs(lo) or 1.0
        lo, hi = lo - span * 0.5, hi + span * 0.5
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = [round(start, 12)]
    while ticks[-1] < hi - step * 1e-9:  # the last tick is at or above hi, so the axis covers the data
        ticks.append(round(start + len(ticks) * step, 12))
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of 10 (and 2x, 5x between them when the range is short) within [lo, hi]."""
    if lo <= 0 or not _finite(lo, hi):
        return []
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1, 2, 5) if k1 - k0 <= 3 else (1,)
    out = [m * 10**k for k in range(k0, k1 + 1) for m in mults]
    inside = [t for t in out if lo * 0.999 <= t <= hi * 1.001]
    return inside or [lo, hi]


def fmt_num(v: float) -> str:
    """Compact tick label: 0.5, 12, 1.2k, 3.4M."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _axis(values: list[float], p0: float, p1: float, log: bool, include_zero: bool) -> Axis:
    vals = [v for v in values if _finite(v) and (not log or v > 0)]
    if not vals:
        vals = [1.0, 10.0] if log else [0.0, 1.0]
    lo, hi = min(vals), max(vals)
    if log:
        if lo == hi:
            lo, hi = lo / 2, hi * 2
        ticks = log_ticks(lo, hi)
        lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
        return Axis(lo, hi, p0, p1, True, ticks)
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    ticks = nice_ticks(lo, hi)
    return Axis(min(lo, ticks[0]), max(hi, ticks[-1]), p0, p1, False, ticks)


def _open(width: int, height: int, title: str, kind: str, standalone: bool) -> list[str]:
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    return [
        f'<svg{ns} class="chart" data-chart="{escape(kind)}" role="img" aria-label="{escape(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="{_FONT};font-size:11px">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" font-size="13" font-weight="600">{escape(title)}</text>',
    ]


def _frame(out: list[str], xa: Axis, ya: Axis, x_label: str, y_label: str, width: int, height: int,
           x_tick_labels: dict[float, str] | None = None) -> None:
    left, right, top, bottom = _MARGIN_L, width - _MARGIN_R, _MARGIN_T, height - _MARGIN_B
    for t in ya.ticks:
        y = ya(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{escape(fmt_num(t))}</text>')
    for t in xa.ticks:
        x = xa(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#f0f0f0"/>')
        label = (x_tick_labels or {}).get(t, fmt_num(t))
        out.append(f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle" fill="#444">{escape(label)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#999"/>')
    out.append(f'<text x="{(left + right) / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="#222">'
               f"{escape(x_label)}</text>")
    cy = (top + bottom) / 2
    out.append(f'<text x="14" y="{cy:.1f}" text-anchor="middle" fill="#222" transform="rotate(-90 14 {cy:.1f})">'
               f"{escape(y_label)}</text>")


def _legend(out: list[str], entries: list[tuple[str, str, bool]], width: int) -> None:
    """One legend row between the title and the plot, right-aligned, so it never hides data."""
    x = width - _MARGIN_R
    y = _MARGIN_T - 10
    for name, color, dashed in reversed(entries):
        text_w = 6.0 * len(name)
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        out.append(f'<text class="legend" x="{x:.1f}" y="{y}" text-anchor="end" fill="#222">{escape(name)}</text>')
        out.append(f'<line x1="{x - text_w - 22:.1f}" y1="{y - 4}" x2="{x - text_w - 4:.1f}" y2="{y - 4}" '
                   f'stroke="{color}" stroke-width="2.5"{dash}/>')
        x -= text_w + 34
        if x < _MARGIN_L + 60:  # wrap is not worth it in a report chart: stop rather than overflow
            break


def _no_data(out: list[str], width: int, height: int, message: str = "no data") -> str:
    out.append(f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" fill="#888">{escape(message)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _padded(values: list[float], log: bool, frac: float = 0.06) -> list[float]:
    """Values plus a margin on both ends, so points and their labels do not sit on the frame."""
    vals = [v for v in values if _finite(v) and (not log or v > 0)]
    if not vals:
        return values
    lo, hi = min(vals), max(vals)
    if log:
        k = (hi / lo) ** frac if hi > lo else 1.5
        return [*vals, lo / k, hi * k]
    pad = (hi - lo) * frac or (abs(hi) * frac or 1.0)
    return [*vals, lo - pad, hi + pad]


def _two_lines(text: str, width: int) -> list[str]:
    """Split a category label at the space nearest its middle when it is wider than ``width`` chars."""
    if len(text) <= width or " " not in text:
        return [text]
    mid = len(text) // 2
    cut = min((i for i, ch in enumerate(text) if ch == " "), key=lambda i: abs(i - mid))
    return [text[:cut].rstrip(), text[cut + 1:]]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    log_y: bool = False,
    include_zero: bool = True,
    bands: Sequence[Band] = (),
    hline: tuple[float, str] | None = None,
    x_tick_labels: dict[float, str] | None = None,
    width: int = 640,
    height: int = 300,
    standalone: bool = False,
) -> str:
    """Lines through (x, y) points, one per series, with optional shaded ``bands`` and a ``hline``."""
    out = _open(width, height, title, "line", standalone)
    clean = [(s, [(x, y) for x, y in s.points if _finite(x, y) and (not log_x or x > 0) and (not log_y or y > 0)])
             for s in series]
    clean = [(s, sorted(p)) for s, p in clean if p]
    if not clean:
        return _no_data(out, width, height)
    xs = [x for _, pts in clean for x, _ in pts] + [v for b in bands for v in (b.x0, b.x1)]
    ys = [y for _, pts in clean for _, y in pts] + ([hline[0]] if hline else [])
    xa = _axis(xs, _MARGIN_L, width - _MARGIN_R, log_x, include_zero=False)
    if x_tick_labels:
        xa.ticks = [t for t in x_tick_labels if xa.lo <= t <= xa.hi]
    ya = _axis(ys, height - _MARGIN_B, _MARGIN_T, log_y, include_zero=include_zero and not log_y)
    top, bottom = _MARGIN_T, height - _MARGIN_B
    for i, b in enumerate(bands):
        x0, x1 = xa(max(b.x0, xa.lo)), xa(min(b.x1, xa.hi))
        if x1 <= x0:
            continue
        fill = "#f2f2f2" if i % 2 == 0 else "#e8eef7"
        out.append(f'<rect class="band" x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{bottom - top}" '
                   f'fill="{fill}"><title>{escape(b.label)}</title></rect>')
        room = max(0, int((x1 - x0 - 4) / 5.5))
        if room >= 3:
            label = b.label if len(b.label) <= room else b.label[: room - 1] + "\u2026"
            out.append(f'<text x="{x0 + 3:.1f}" y="{top + 11 + 11 * (i % 2)}" fill="#666" font-size="10">'
                       f"{escape(label)}</text>")
    _frame(out, xa, ya, x_label, y_label, width, height, x_tick_labels)
    if hline is not None and _finite(hline[0]):
        y = ya(hline[0])
        out.append(f'<line x1="{_MARGIN_L}" y1="{y:.1f}" x2="{width - _MARGIN_R}" y2="{y:.1f}" stroke="#D55E00" '
                   f'stroke-dasharray="6 4"/>')
        out.append(f'<text x="{_MARGIN_L + 4}" y="{y - 4:.1f}" fill="#D55E00">{escape(hline[1])}</text>')
    legend = []
    for i, (s, pts) in enumerate(clean):
        color = s.color or PALETTE[i % len(PALETTE)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{xa(x):.1f},{ya(y):.1f}" for j, (x, y) in enumerate(pts))
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<path class="series" d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}>'
                   f"<title>{escape(s.name)}</title></path>")
        if s.markers and len(pts) <= 60:
            for x, y in pts:
                out.append(f'<circle cx="{xa(x):.1f}" cy="{ya(y):.1f}" r="3" fill="{color}">'
                           f"<title>{escape(s.name)}: {fmt_num(x)}, {fmt_num(y)}</title></circle>")
        legend.append((s.name, color, s.dashed))
    if len(legend) > 1 or (legend and legend[0][0]):
        _legend(out, legend, width)
    out.append("</svg>")
    return "\n".join(out)


def scatter_chart(
    points: Sequence[ScatterPoint],
    *,
    title: str,
    x_label: str,
    y_label: str,
    frontier: Sequence[tuple[float, float]] = (),
    vline: tuple[float, str] | None = None,
    log_x: bool = False,
    include_zero: bool = False,
    width: int = 640,
    height: int = 340,
    standalone: bool = False,
) -> str:
    """Labelled points; ``frontier`` is drawn as a step-free polyline, ``vline`` marks e.g. a budget."""
    out = _open(width, height, title, "scatter", standalone)
    pts = [p for p in points if _finite(p.x, p.y) and (not log_x or p.x > 0)]
    if not pts:
        return _no_data(out, width, height)
    xs = [p.x for p in pts] + ([vline[0]] if vline and _finite(vline[0]) else [])
    ys = [p.y for p in pts]
    xa = _axis(_padded(xs, log_x), _MARGIN_L, width - _MARGIN_R, log_x, include_zero=False)
    ya = _axis(_padded(ys, False), height - _MARGIN_B, _MARGIN_T, False, include_zero=include_zero)
    _frame(out, xa, ya, x_label, y_label, width, height)
    if vline is not None and _finite(vline[0]) and (not log_x or vline[0] > 0):
        x = xa(vline[0])
        out.append(f'<line class="budget" x1="{x:.1f}" y1="{_MARGIN_T}" x2="{x:.1f}" y2="{height - _MARGIN_B}" '
                   f'stroke="#D55E00" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{x + 4:.1f}" y="{_MARGIN_T + 12}" fill="#D55E00">{escape(vline[1])}</text>')
    front = sorted((x, y) for x, y in frontier if _finite(x, y) and (not log_x or x > 0))
    if len(front) >= 2:
        path = " ".join(f"{'M' if j == 0 else 'L'}{xa(x):.1f},{ya(y):.1f}" for j, (x, y) in enumerate(front))
        out.append(f'<path class="frontier" d="{path}" fill="none" stroke="#555" stroke-width="1.5" '
                   f'stroke-dasharray="4 3"><title>Pareto frontier</title></path>')
    groups: dict[str, str] = {}
    for p in pts:
        if p.group and p.group not in groups:
            groups[p.group] = PALETTE[len(groups) % len(PALETTE)]
    for i, p in enumerate(pts):
        color = p.color or groups.get(p.group) or PALETTE[0]
        x, y = xa(p.x), ya(p.y)
        r = 6 if p.highlight else 4
        ring = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r + 4}" fill="none" stroke="#D55E00" stroke-width="2"/>'
                if p.highlight else "")
        out.append(f'{ring}<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{color}" '
                   f'fill-opacity="0.85"><title>{escape(p.label)}: {fmt_num(p.x)}, {fmt_num(p.y)}</title></circle>')
        if p.label and len(pts) <= 24:
            dy = -8 if i % 2 == 0 else 14
            anchor = "end" if x > width * 0.7 else "start"
            dx = -8 if anchor == "end" else 8
            out.append(f'<text x="{x + dx:.1f}" y="{y + dy:.1f}" text-anchor="{anchor}" fill="#222" font-size="10">'
                       f"{escape(p.label[:40])}</text>")
    if len(groups) > 1:
        _legend(out, [(g, c, False) for g, c in groups.items()], width)
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    title: str,
    y_label: str,
    highlight: int | None = None,
    value_fmt: str = "{:,.0f}",
    width: int = 640,
    height: int = 320,
    standalone: bool = False,
) -> str:
    """Grouped vertical bars: one group per category, one bar per series; ``None`` leaves a gap.

    ``highlight`` outlines one category (e.g. the best configuration).
    """
    out = _open(width, height, title, "bar", standalone)
    values = [v for _, vs in series for v in vs if v is not None and _finite(v)]
    if not categories or not values:
        return _no_data(out, width, height)
    bottom_margin = _MARGIN_B + (14 if max(len(c) for c in categories) > 10 else 0)
    plot_bottom = height - bottom_margin
    ya = _axis(values, plot_bottom, _MARGIN_T + 18, False, include_zero=True)
    left, right = _MARGIN_L, width - _MARGIN_R
    for t in ya.ticks:
        y = ya(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{escape(fmt_num(t))}</text>')
    group_w = (right - left) / len(categories)
    bar_w = group_w * 0.8 / max(1, len(series))
    zero = ya(0.0)
    for ci, cat in enumerate(categories):
        gx = left + ci * group_w
        if highlight == ci:
            out.append(f'<rect class="highlight" x="{gx + 2:.1f}" y="{_MARGIN_T + 16}" width="{group_w - 4:.1f}" '
                       f'height="{plot_bottom - _MARGIN_T - 16:.1f}" fill="#fff4e5" stroke="#E69F00"/>')
        for si, (name, vs) in enumerate(series):
            v = vs[ci] if ci < len(vs) else None
            if v is None or not _finite(v):
                continue
            x = gx + group_w * 0.1 + si * bar_w
            y = ya(v)
            h = abs(zero - y)
            out.append(f'<rect class="bar" x="{x:.1f}" y="{min(y, zero):.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                       f'fill="{PALETTE[si % len(PALETTE)]}"><title>{escape(cat)} — {escape(name)}: '
                       f"{escape(value_fmt.format(v))}</title></rect>")
            if len(categories) * len(series) <= 24:
                out.append(f'<text x="{x + bar_w / 2 - 1:.1f}" y="{min(y, zero) - 3:.1f}" text-anchor="middle" '
                           f'font-size="9" fill="#333">{escape(fmt_num(v))}</text>')
        lines = _two_lines(cat, max(6, int(group_w / 6)))
        for li, line in enumerate(lines):
            out.append(f'<text x="{gx + group_w / 2:.1f}" y="{plot_bottom + 14 + 12 * li}" text-anchor="middle" '
                       f'fill="#444" font-size="10">{escape(line)}</text>')
    out.append(f'<line x1="{left}" y1="{zero:.1f}" x2="{right}" y2="{zero:.1f}" stroke="#999"/>')
    cy = (_MARGIN_T + plot_bottom) / 2
    out.append(f'<text x="14" y="{cy:.1f}" text-anchor="middle" fill="#222" transform="rotate(-90 14 {cy:.1f})">'
               f"{escape(y_label)}</text>")
    if len(series) > 1:
        _legend(out, [(name, PALETTE[i % len(PALETTE)], False) for i, (name, _) in enumerate(series)], width)
    out.append("</svg>")
    return "\n".join(out)
