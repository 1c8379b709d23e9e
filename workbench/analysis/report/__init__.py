"""One self-contained HTML report of stored runs, for people who will not read a JSON summary.

``build_report(store, run_ids)`` collects every number first into a plain dict (``Report.data``:
the same numbers go to ``--json`` and ``--csv``), then renders HTML from that dict only, so the
page can never show a figure the exports lack. The page has no external assets: charts are inline
SVG (``charts.py``), sample images are base64 PNG, CSS is inline; it opens offline, by e-mail,
from a USB stick.

How the headline is chosen ("3.1x faster, −0.4 points accuracy, 4.2x smaller"): with one run that
has both a baseline and a final measurement (it ran optimization stages) those two are compared;
with two or more runs, the first run's final figures are the baseline and the last run's final
figures are the result, so "report A B" reads "B versus A".

Sample predictions rebuild each run's model from its stored recipe and ``weights`` artifact.
When that is impossible (no weights, model file gone, architecture changed by structured
pruning, non-image data) the report says why instead of showing anything made up.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.analysis.report.collect import METRICS, collect_report_data, headline
from workbench.analysis.report.render import render_html
from workbench.analysis.sweep import best_within_budget
from workbench.core.events import CancelToken, Reporter
from workbench.errors import WorkbenchError, short

__all__ = ["METRICS", "Report", "best_within_budget", "build_report", "collect_report_data", "headline",
           "render_html", "write_report"]


@dataclass
class Report:
    """The rendered page and every number in it (``data``), ready to save or export."""

    html: str
    data: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(_jsonable(self.data), indent=2)

    def rows(self) -> list[tuple[str, str]]:
        """Every number in the report as (dotted key, value) pairs; images and recipe text are left out."""
        return [(k, v) for k, v in _flatten(_numbers_only(self.data)) if v != ""]

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["key", "value"])
        w.writerows(self.rows())
        return buf.getvalue()


def build_report(
    store: Any,
    run_ids: Sequence[int],
    *,
    predictions: bool = True,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> Report:
    """Collect and render the report of ``run_ids`` (in that order: the first is the baseline)."""
    data = collect_report_data(store, run_ids, predictions=predictions, reporter=reporter, cancel=cancel)
    return Report(render_html(data), data)


def write_report(
    store: Any,
    run_ids: Sequence[int],
    out: str | Path,
    *,
    csv_path: str | Path | None = None,
    json_path: str | Path | None = None,
    predictions: bool = True,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
    overwrite: bool = False,
) -> Report:
    """Build the report and write the HTML (and optional CSV/JSON exports) atomically.

    Every output path is checked before any work (a folder, a parent that is a file, an unwritable
    place, or an existing file without ``overwrite`` is a one-line ``WorkbenchError``), and each file
    is written to a temp file and moved into place, so a failure never leaves a partial file.
    """
    from workbench.core.fileio import atomic_write_text, check_output_file

    outputs = {"--out": out, "--csv": csv_path, "--json": json_path}
    targets = {flag: check_output_file(path, flag, overwrite) for flag, path in outputs.items() if path}
    resolved = [t.resolve() for t in targets.values()]
    if len(set(resolved)) != len(resolved):
        raise WorkbenchError(f"{', '.join(targets)}: two outputs name the same file ({short(resolved[0])}); "
                             "give each its own path")
    report = build_report(store, run_ids, predictions=predictions, reporter=reporter, cancel=cancel)
    texts = {"--out": report.html, "--csv": report.to_csv() if csv_path else "",
             "--json": report.to_json() if json_path else ""}
    for flag, target in targets.items():
        atomic_write_text(target, texts[flag])
    return report


# ------------------------------------------------------------------------------------------ exports


def _jsonable(o: Any) -> Any:
    if isinstance(o, Mapping):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _numbers_only(o: Any) -> Any:
    """Drop what is not a number's context: images and recipe texts (kept in JSON, not in CSV)."""
    if isinstance(o, Mapping):
        return {k: _numbers_only(v) for k, v in o.items() if k not in ("image", "recipes")}
    if isinstance(o, list):
        return [_numbers_only(v) for v in o]
    return o


def _flatten(o: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted.key, value) for numeric and short text leaves; list items keyed by label/run when they have one."""
    if isinstance(o, Mapping):
        for k, v in o.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(o, list):
        if o and all(isinstance(v, int | float) and not isinstance(v, bool) for v in o) and len(o) <= 4:
            yield prefix, " ".join(f"{v:g}" for v in o)
            return
        for i, v in enumerate(o):
            key = str(i)
            if isinstance(v, Mapping):
                tag = v.get("label") or (f"{v['kind']}-{v.get('precision')}-b{v['batch_size']}"
                                         if "batch_size" in v and "kind" in v else None)
                key = f"{i}[{tag}]" if tag else key
            yield from _flatten(v, f"{prefix}[{key}]")
    elif isinstance(o, bool):
        yield prefix, str(o).lower()
    elif isinstance(o, int | float):
        if math.isfinite(o):
            yield prefix, (str(o) if isinstance(o, int) else f"{o:.3f}" if abs(o) >= 1e6 else f"{o:.6g}")
    elif isinstance(o, str) and len(o) <= 200:
        yield prefix, o
