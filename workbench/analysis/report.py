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

import base64
import csv
import functools
import io
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from workbench import __version__
from workbench.analysis.charts import Band, ScatterPoint, Series, bar_chart, line_chart, scatter_chart
from workbench.analysis.pareto import model_points, pareto_front
from workbench.analysis.sweep import best_within_budget
from workbench.core.diagnose import Verdict, loader_verdict
from workbench.core.events import CancelToken, Reporter
from workbench.core.measure.comparison import (
    SEQUENTIAL_CAVEAT,
    UNPAIRED_CAVEAT,
    compare_measurements,
    measured_cases,
    split_sentence,
)
from workbench.errors import WorkbenchError, short

__all__ = ["Report", "best_within_budget", "build_report", "collect_report_data", "headline",
           "render_html", "write_report"]

#: Metrics of the before/after table: key, label, unit kind, which direction is better.
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("accuracy", "Accuracy (eval split)", "pct", "higher"),
    ("latency_ms_p50", "Latency, median (ms)", "ms", "lower"),
    ("latency_ms_p95", "Latency, slowest 5% (ms)", "ms", "lower"),
    ("throughput", "Inference throughput (samples/s)", "rate", "higher"),
    ("train_samples_per_s", "Training throughput (samples/s)", "rate", "higher"),
    ("params", "Parameters", "count", "lower"),
    ("size_bytes", "Model size", "bytes", "lower"),
)
TELEMETRY_KEYS = ("cpu_percent", "proc_cpu_percent", "ram_used_bytes", "proc_rss_bytes")
PREDICTION_SAMPLES = 8


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


# ----------------------------------------------------------------------------------------- collect


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _run_info(run: Any) -> dict[str, Any]:
    s = run.summary or {}
    ended = run.ended_at or None
    return {"run_id": run.id, "name": run.name, "kind": run.kind, "status": run.status, "model": run.model,
            "techniques": list(run.techniques), "created_at": run.created_at, "ended_at": ended,
            "duration_s": (ended - run.created_at) if ended else None, "error": run.error,
            "precision": s.get("precision"), "data": s.get("data"),
            "model_summary": {k: v for k, v in (s.get("model") or {}).items() if k != "layers"}}


def _has_result(run: Any) -> bool:
    return run.kind != "sweep" and bool((run.summary or {}).get("final"))


def _metrics_of(d: Mapping[str, Any] | None) -> dict[str, Any]:
    d = d or {}
    out = {k: d.get(k) for k, *_ in METRICS}
    out["latency_batch"] = d.get("latency_batch")
    out["latency_batch_p95"] = d.get("latency_batch")  # p95 exists only at the measurement's latency batch
    out["throughput_batch"] = d.get("throughput_batch")
    return out


def headline(baseline: Mapping[str, Any], final: Mapping[str, Any],
             speedup: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Ratios between two measurements and the one-line sentence built from them.

    ``speedup`` is baseline/final median latency at the same batch size (so 3.1 means 3.1x faster):
    the paired ratio when the run stored one (``speedup`` argument, see ``engine.paired``), else the
    ratio of two separate measurements, which then carries the unpaired caveat. ``size_ratio`` is
    baseline/final size, ``accuracy_delta_points`` is final minus baseline in percentage points.
    A figure missing on either side, or measured at different batch sizes, is left out of the
    sentence, never guessed.
    """
    out: dict[str, Any] = {}
    parts: list[str] = []
    cmp = compare_measurements(baseline, final)
    if isinstance(speedup, Mapping) and speedup.get("paired"):
        lat_table = speedup.get("latency") or {}
        b = min(lat_table, key=int) if lat_table else None
        if b is not None:
            e = lat_table[b]
            cmp["latency"] = {"batch": int(b), "ratio": e["ratio"], "ci95": list(e["ci95"]), "comparable": True}
        out.update(paired=True, reliable=bool(speedup.get("reliable")), reason=speedup.get("reason") or "",
                   split=split_sentence(speedup), steps=list(speedup.get("steps") or []))
        out["caveat"] = "" if out["reliable"] else f"Unreliable measurement: {out['reason']}"
    else:
        out.update(paired=False, reliable=None, reason="", split="", steps=[])
    lat = cmp["latency"]
    if lat.get("comparable"):
        r = lat["ratio"]
        out["speedup"] = r
        out["latency_batch"] = lat["batch"]
        text = f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"
        if lat.get("ci95"):
            lo, hi = lat["ci95"]
            text += f" (95 % CI {lo:.1f}\u2013{hi:.1f}x, batch {lat['batch']})"
            out["speedup_ci95"] = [lo, hi]
        else:
            text += f" (batch {lat['batch']})"
        parts.append(text)
    else:
        out["note"] = lat.get("reason", "")
    d = cmp["accuracy_delta_pts"]
    if d is not None:
        out["accuracy_delta_points"] = d
        sign = "+" if d > 0 else ("\u2212" if d < 0 else "\u00b1")
        parts.append(f"{sign}{abs(d):.1f} points accuracy")
    bs, fs = _num(baseline.get("size_bytes")), _num(final.get("size_bytes"))
    if bs and fs:
        r = bs / fs
        out["size_ratio"] = r
        if abs(r - 1) < 0.005:
            parts.append("same size")
        else:
            parts.append(f"{r:.1f}x smaller" if r > 1 else f"{1 / r:.1f}x larger")
    tput = cmp["throughput"]
    if tput.get("comparable"):
        out["throughput_ratio"] = tput["ratio"]
        out["throughput_batch"] = tput["batch"]
    btr, ftr = _num(baseline.get("train_samples_per_s")), _num(final.get("train_samples_per_s"))
    if btr and ftr:
        out["train_speedup"] = ftr / btr
    out["text"] = ", ".join(parts) if parts else "no comparable measurements"
    if not out["paired"] and "speedup" in out:
        out["caveat"] = f"Not paired: {SEQUENTIAL_CAVEAT}."
    return out


def _headline_for(runs: Sequence[Any]) -> dict[str, Any] | None:
    results = [r for r in runs if _has_result(r)]
    if len(results) >= 2:
        a, b = results[0], results[-1]
        h = headline(a.final, b.final)
        h["caveat"] = f"Unpaired: {UNPAIRED_CAVEAT}."
        h.update(mode="runs", baseline_run=a.id, final_run=b.id,
                 baseline_label=f"run {a.id} ({a.name})", final_label=f"run {b.id} ({b.name})",
                 baseline=_metrics_of(a.final), final=_metrics_of(b.final))
        return h
    if len(results) == 1:
        r = results[0]
        base = r.summary.get("baseline")
        if base and (r.summary.get("stages") or base != r.final):
            h = headline(base, r.final, r.summary.get("speedup"))
            h.update(mode="stages", baseline_run=r.id, final_run=r.id, baseline_label=f"run {r.id} before optimization",
                     final_label=f"run {r.id} after {', '.join(s.get('name', '?') for s in r.summary['stages'])}"
                     if r.summary.get("stages") else f"run {r.id} final", baseline=_metrics_of(base),
                     final=_metrics_of(r.final))
            return h
        return {"mode": "single", "text": f"one run measured (run {r.id}); add a second run to compare",
                "final_run": r.id, "final": _metrics_of(r.final)}
    sweeps = [r for r in runs if r.kind == "sweep"]
    for s in sweeps:
        ld = (s.summary.get("sweep") or {}).get("loader") or {}
        if ld.get("speedup"):
            return {"mode": "sweep", "sweep_run": s.id, "loader_speedup": ld["speedup"],
                    "text": f"{ld['speedup']:.1f}x faster training from the loader settings alone "
                            f"({ld['best']['label']} instead of {ld['default']['label']})"}
    if sweeps:
        return {"mode": "sweep", "sweep_run": sweeps[0].id, "text": f"sweep of run {sweeps[0].id}"}
    return None


def _comparison(runs: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of the before/after table: each run's baseline (when it differs) and final."""
    rows: list[dict[str, Any]] = []
    for r in runs:
        if not _has_result(r):
            continue
        base = r.summary.get("baseline")
        if base and base != r.final:
            rows.append({"run_id": r.id, "which": "baseline", "label": f"#{r.id} {r.name}: before",
                         **_metrics_of(base)})
        techs = ", ".join(r.techniques) or "plain"
        rows.append({"run_id": r.id, "which": "final", "label": f"#{r.id} {r.name}: {techs}", **_metrics_of(r.final)})
    _align_batches(rows, [_measurement_of(runs, row) for row in rows])
    return rows


def _measurement_of(runs: Sequence[Any], row: Mapping[str, Any]) -> Mapping[str, Any]:
    run = next(r for r in runs if r.id == row["run_id"])
    return (run.summary.get("baseline") if row["which"] == "baseline" else run.final) or {}


def _align_batches(rows: list[dict[str, Any]], measurements: Sequence[Mapping[str, Any]]) -> None:
    """Put every column's latency and throughput at batch sizes all columns measured (like with like).

    Latency at the smallest shared batch, throughput at the largest; with no shared batch the
    cells stay empty and the row says why, instead of setting 116 samples/s at batch 64 beside
    4034 at batch 1.
    """
    cases = [measured_cases(m) for m in measurements]
    shared = sorted(set.intersection(*(set(c) for c in cases))) if cases else []
    for row, c in zip(rows, cases, strict=True):
        if shared:
            lb, tb = shared[0], shared[-1]
            row.update(latency_ms_p50=c[lb]["p50_ms"], latency_batch=lb, throughput=c[tb]["throughput"],
                       throughput_batch=tb)
            if row.get("latency_batch_p95") not in (None, lb):
                row["latency_ms_p95"] = None
        else:
            row.update(latency_ms_p50=None, latency_ms_p95=None, throughput=None,
                       not_comparable="these models were timed at different batch sizes")


def _pareto(runs: Sequence[Any]) -> dict[str, Any]:
    """Accuracy vs median latency by the one rule the GUI chart uses too (``engine.pareto``)."""
    pts, notes = model_points([r for r in runs if _has_result(r) or r.kind == "sweep"])
    pts = [p for p in pts if p["latency_ms_p50"] is not None]
    front = pareto_front(pts, "latency_ms_p50", "accuracy")
    for p in pts:
        p["on_front"] = any(p is f for f in front)
    return {"points": pts, "front": [p["label"] for p in front], "notes": notes}


def _sweep_data(run: Any) -> dict[str, Any]:
    sw = dict((run.summary or {}).get("sweep") or {})
    sw["run_id"] = run.id
    sw["name"] = run.name
    return sw


def _stage_spans(store: Any, run: Any) -> list[dict[str, Any]]:
    """Stages from the run's log ("stage X started/finished"), in seconds since the run started."""
    open_at: dict[str, float] = {}
    spans: list[dict[str, Any]] = []
    for t, level, msg in store.logs(run.id):
        if level != "stage" or not msg.startswith("stage "):
            continue
        body = msg[len("stage "):]
        if body.endswith(" started"):
            open_at[body[: -len(" started")]] = t
        elif body.endswith(" finished"):
            name = body[: -len(" finished")]
            if name in open_at:
                spans.append({"stage": name, "start_s": open_at.pop(name) - run.created_at,
                              "end_s": t - run.created_at})
    end = (run.ended_at or time.time()) - run.created_at
    spans += [{"stage": n, "start_s": t0 - run.created_at, "end_s": end, "unfinished": True}
              for n, t0 in open_at.items()]
    spans.sort(key=lambda s: s["start_s"])
    return spans


def _telemetry(store: Any, run: Any, max_points: int = 400) -> dict[str, Any]:
    series = store.metrics(run.id, keys=list(TELEMETRY_KEYS) + [f"gpu{i}_{k}" for i in range(8)
                                                                for k in ("util_percent", "mem_used_bytes")])
    out: dict[str, list[list[float]]] = {}
    for key, rows in series.items():
        pts = [[t - run.created_at, v] for t, stage, _step, v in rows if stage == "telemetry"]
        if len(pts) > max_points:
            stride = math.ceil(len(pts) / max_points)
            pts = pts[::stride]
        if pts:
            out[key] = pts
    return {"series": out, "stages": _stage_spans(store, run)}


def _verdict(run: Any) -> dict[str, Any] | None:
    s = run.summary or {}
    if s.get("loader_verdict"):
        return dict(s["loader_verdict"])
    tr = s.get("train") or {}
    if "data_wait_s" not in tr or "compute_s" not in tr:
        return None
    try:
        from workbench.recipe import loads_recipe

        recipe = loads_recipe(run.recipe, f"run {run.id}")
    except WorkbenchError:
        return None
    return loader_verdict(float(tr["data_wait_s"]), float(tr["compute_s"]), recipe).to_dict()


def _environment(run: Any) -> dict[str, Any]:
    env = dict((run.summary or {}).get("environment") or {})
    return {k: v for k, v in env.items() if isinstance(v, str | int | float | bool)}


def collect_report_data(
    store: Any,
    run_ids: Sequence[int],
    *,
    predictions: bool = True,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Every number (and every sentence's source) of the report, as plain JSON-able data."""
    reporter = reporter or Reporter()
    cancel = cancel or CancelToken()
    if not run_ids:
        raise WorkbenchError("give at least one run ID (see `workbench runs`)")
    runs = []
    for rid in run_ids:
        run = store.get_run(int(rid))
        if run is None:
            raise WorkbenchError(f"no run with ID {rid} in the store (see `workbench runs`)")
        runs.append(run)
    reporter.stage_started("report", 4)
    data: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "workbench": __version__,
        "runs": [_run_info(r) for r in runs],
        "headline": _headline_for(runs),
        "comparison": _comparison(runs),
        "pareto": _pareto(runs),
        "sweeps": [_sweep_data(r) for r in runs if r.kind == "sweep"],
        "verdicts": {str(r.id): v for r in runs if (v := _verdict(r))},
        "environments": {str(r.id): _environment(r) for r in runs},
        "recipes": {str(r.id): r.recipe for r in runs},
    }
    reporter.progress(1, 4, "telemetry")
    data["telemetry"] = {str(r.id): _telemetry(store, r) for r in runs}
    cancel.raise_if_cancelled()
    reporter.progress(2, 4, "sample predictions")
    data["predictions"] = (_predictions(store, runs, cancel) if predictions
                           else {"available": False, "reason": "sample predictions were not requested"})
    reporter.progress(4, 4, "done")
    reporter.stage_finished("report", {"runs": len(runs)})
    return data


# -------------------------------------------------------------------------------------- predictions


def _png_data_uri(img: Any, scale: int = 3) -> str:
    from PIL import Image

    im = Image.fromarray(img)
    if scale > 1 and max(im.size) < 96:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pick_indices(targets: Any, num_classes: int, n: int) -> list[int]:
    """Deterministic eval samples spread over classes (the same pick as the GUI's thumbnails)."""
    from workbench.core.data.datasets import balanced_indices

    return balanced_indices(targets, num_classes, n)


def _predictions(store: Any, runs: Sequence[Any], cancel: CancelToken) -> dict[str, Any]:
    """Predictions of each run's saved model on the same few eval images, side by side."""
    import numpy as np
    import torch

    from workbench.core.data import load_dataset
    from workbench.core.data.datasets import to_hwc_uint8
    from workbench.core.models import load_model, load_weights
    from workbench.recipe import loads_recipe

    candidates = [r for r in runs if r.kind != "sweep"]
    if not candidates:
        return {"available": False, "reason": "no training runs in this report (sweeps keep no trained model)"}
    status: dict[str, str] = {}
    ref = None  # (run, recipe, bundle)
    models: dict[int, Any] = {}
    for r in candidates:
        cancel.raise_if_cancelled()
        try:
            recipe = loads_recipe(r.recipe, f"run {r.id}")
        except WorkbenchError as exc:
            status[str(r.id)] = f"its recipe no longer validates ({exc})"
            continue
        if ref is not None and recipe.data != ref[1].data:
            status[str(r.id)] = f"it used different data than run {ref[0].id}, so its predictions are not comparable"
            continue
        arts = store.artifacts(r.id, "weights")
        if not arts:
            status[str(r.id)] = ("it saved no weights (only runs that finish with a PyTorch model do; "
                                 f"status: {r.status})")
            continue
        if not arts[-1].path.exists():
            status[str(r.id)] = f"its weights file {arts[-1].path} no longer exists"
            continue
        try:
            bundle = ref[2] if ref is not None else load_dataset(recipe.data)
        except WorkbenchError as exc:
            status[str(r.id)] = f"its data cannot be loaded now ({exc})"
            continue
        if bundle.kind != "image":
            status[str(r.id)] = f"its data is {bundle.kind}, not images"
            continue
        try:
            loaded = load_model(recipe.model.model_copy(update={"weights": ""}), bundle.num_classes,
                                tuple(bundle.input_shape))
            if loaded.module is None:
                raise WorkbenchError("an ONNX model (no PyTorch weights to load)")
            load_weights(loaded.module, arts[-1].path)
        except WorkbenchError as exc:
            status[str(r.id)] = (f"its model could not be rebuilt from the recipe and saved weights ({exc}); "
                                 "structured pruning, for one, changes layer shapes the recipe does not record")
            continue
        if ref is None:
            ref = (r, recipe, bundle)
        models[r.id] = loaded.module.eval()
        status[str(r.id)] = "ok"
    if ref is None:
        return {"available": False, "reason": "; ".join(f"run {k}: {v}" for k, v in status.items()),
                "status": status}
    bundle = ref[2]
    ds = bundle.eval
    idx = _pick_indices(getattr(ds, "targets", []), bundle.num_classes, PREDICTION_SAMPLES)
    xs = torch.stack([ds[i][0] for i in idx])
    preds: dict[int, list[int]] = {}
    confs: dict[int, list[float]] = {}
    with torch.inference_mode():
        for rid, m in models.items():
            probs = torch.softmax(m(xs).float(), dim=1)
            c, p = probs.max(dim=1)
            preds[rid], confs[rid] = p.tolist(), c.tolist()
    samples = []
    targets = np.asarray(ds.targets)
    for k, i in enumerate(idx):
        raw = ds.raw_image(i) if hasattr(ds, "raw_image") else None
        img = to_hwc_uint8(raw) if raw is not None else None
        true = int(targets[i])
        samples.append({"index": i, "true": bundle.class_names[true],
                        "image": _png_data_uri(img) if img is not None else None,
                        "predictions": {str(rid): {"label": bundle.class_names[preds[rid][k]],
                                                   "correct": preds[rid][k] == true,
                                                   "confidence": confs[rid][k]} for rid in models}})
    return {"available": True, "reference_run": ref[0].id, "runs": [str(r) for r in models], "status": status,
            "samples": samples, "note": "Each model is the run's saved PyTorch weights (the model at the end of "
            "the run); an exported ONNX/INT8 file is not re-run here"}


# ------------------------------------------------------------------------------------------- render

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d1d1f}
main{max-width:980px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:36px 0 8px;border-bottom:1px solid #e3e3e3;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}
.headline{font-size:28px;font-weight:700;color:#0b5394;margin:14px 0 4px}
.sub,.explain{color:#555;font-size:13px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border-bottom:1px solid #eee;padding:5px 10px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left} th{background:#fafafa}
.good{color:#1a7f37;font-weight:600} .bad{color:#b42318;font-weight:600}
.verdict{border-left:4px solid #0072B2;padding:6px 12px;margin:10px 0;background:#f4f8fc}
.verdict.loader-bound{border-color:#D55E00;background:#fdf4ee} .verdict.compute-bound{border-color:#009E73;background:#eefaf5}
.why{color:#8a5a00;background:#fff8e6;padding:6px 10px;font-size:13px}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px;border:1px solid #eee}
figure{margin:10px 0} svg.chart{max-width:100%;height:auto;border:1px solid #eee}
.samples td{text-align:center} .samples img{image-rendering:pixelated;width:72px;height:72px}
footer{color:#888;font-size:12px;margin-top:36px}
"""


def _fmt(v: Any, kind: str = "") -> str:
    n = _num(v)
    if n is None:
        return "\u2014" if v is None else escape(str(v))
    if kind == "pct":
        return f"{n * 100:.1f} %"
    if kind == "bytes":
        return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
    if kind == "ms":
        return f"{n:.3f}" if n < 10 else f"{n:.1f}"
    if kind in ("rate", "count"):
        return f"{n:,.0f}"
    return f"{n:,.3g}" if abs(n) < 1000 else f"{n:,.0f}"


def _change(key: str, kind: str, better: str, before: Any, after: Any) -> str:
    b, a = _num(before), _num(after)
    if b is None or a is None or (b == 0 and kind != "pct"):
        return ""
    if kind == "pct":
        d = (a - b) * 100
        cls = "good" if d > 0.05 else ("bad" if d < -0.05 else "")
        return f'<span class="{cls}">{"+" if d >= 0 else chr(0x2212)}{abs(d):.1f} pts</span>'
    if a == 0:
        return ""
    r = a / b
    improved = r < 1 if better == "lower" else r > 1
    cls = "good" if improved and abs(r - 1) > 0.02 else ("bad" if not improved and abs(r - 1) > 0.02 else "")
    if better == "lower":
        word = "faster" if kind == "ms" else "smaller"
        text = f"{1 / r:.2f}x {word}" if r <= 1 else f"{r:.2f}x {'slower' if kind == 'ms' else 'larger'}"
    else:
        text = f"{r:.2f}x"
    return f'<span class="{cls}">{text}</span>'


def _pareto_svg(data: dict[str, Any]) -> str:
    pts = data["pareto"]["points"]
    if not pts:
        return ""
    sp = [ScatterPoint(p["latency_ms_p50"], p["accuracy"] * 100, p["label"], highlight=p["on_front"],
                       group=f"run {p['run_id']}") for p in pts]
    front = [(p["latency_ms_p50"], p["accuracy"] * 100) for p in pts if p["on_front"]]
    return scatter_chart(sp, title="Accuracy against latency", x_label="median latency (ms), lower is better",
                         y_label="accuracy (%), higher is better", frontier=front)


def _sweep_charts(sw: dict[str, Any]) -> list[str]:
    charts: list[str] = []
    inf = sw.get("inference") or []
    trn = sw.get("train") or []
    precs = list(dict.fromkeys(p["precision"] for p in inf + trn))
    sizes = sorted({p["batch_size"] for p in inf + trn})
    ticks = {float(b): str(b) for b in sizes}
    log_x = bool(sizes) and max(sizes) / max(1, min(sizes)) >= 8
    if inf:
        series = []
        for prec in precs:
            pts = [p for p in inf if p["precision"] == prec]
            series.append(Series(f"{prec} median", [(p["batch_size"], p["p50_ms"]) for p in pts]))
            series.append(Series(f"{prec} p95", [(p["batch_size"], p["p95_ms"]) for p in pts], dashed=True,
                                 color=series[-1].color))
        for i, s in enumerate(series):
            s.color = s.color or ["#0072B2", "#E69F00", "#009E73"][(i // 2) % 3]
        charts.append(line_chart(series, title="Inference latency by batch size", x_label="batch size",
                                 y_label="ms per batch", log_x=log_x, x_tick_labels=ticks))
    thr = [Series(f"inference {prec}", [(p["batch_size"], p["throughput"]) for p in inf if p["precision"] == prec])
           for prec in precs if any(p["precision"] == prec for p in inf)]
    thr += [Series(f"training {prec}", [(p["batch_size"], p["throughput"]) for p in trn if p["precision"] == prec],
                   dashed=True) for prec in precs if any(p["precision"] == prec for p in trn)]
    if thr:
        charts.append(line_chart(thr, title="Throughput by batch size", x_label="batch size",
                                 y_label="samples per second", log_x=log_x, x_tick_labels=ticks))
    if inf:
        budget = sw.get("budget") or {}
        key = budget.get("latency_key") or "p95_ms"
        best = budget.get("best")
        sp = [ScatterPoint(p[key], p["throughput"], f"{p['precision']} b{p['batch_size']}",
                           highlight=best is not None and p == best, group=p["precision"]) for p in inf]
        vline = (budget["budget_ms"], f"budget {budget['budget_ms']:g} ms") if budget.get("budget_ms") else None
        charts.append(scatter_chart(sp, title=f"Throughput against latency ({key.removesuffix('_ms')})",
                                    x_label=f"latency {key.removesuffix('_ms')} (ms per batch)",
                                    y_label="samples per second", vline=vline, log_x=True))
    ld = sw.get("loader") or {}
    lpts = ld.get("points") or []
    if lpts:
        cats = [p["label"] + (" (default)" if p.get("is_default") else "") for p in lpts]
        best_i = next((i for i, p in enumerate(lpts) if ld.get("best") and p["label"] == ld["best"]["label"]), None)
        charts.append(bar_chart(cats, [("loader alone", [p["loader_samples_per_s"] for p in lpts]),
                                       ("training steps", [p["train_samples_per_s"] for p in lpts])],
                                title="DataLoader settings: samples per second", y_label="samples per second",
                                highlight=best_i))
        charts.append(bar_chart(cats, [("waiting for data (%)", [100 * (p["data_wait_fraction"] or 0) for p in lpts])],
                                title="Share of each training step spent waiting for data", y_label="% of step",
                                value_fmt="{:.0f} %", highlight=best_i))
    return charts


def _verdict_items(data: dict[str, Any]) -> list[dict[str, Any]]:
    items = []
    for rid, v in data["verdicts"].items():
        verdict = Verdict.from_dict(v)
        items.append({"title": f"Run {rid}", "kind": verdict.kind, "message": verdict.message,
                      "suggestions": list(verdict.suggestions)})
    for sw in data["sweeps"]:
        for p in (sw.get("loader") or {}).get("points") or []:
            if p.get("is_default"):
                v = Verdict.from_dict(p["verdict"])
                items.append({"title": f"Sweep {sw['run_id']}, default loader ({p['label']})", "kind": v.kind,
                              "message": v.message, "suggestions": list(v.suggestions)})
    return items


def _telemetry_svgs(data: dict[str, Any]) -> list[str]:
    out = []
    for rid, tel in data["telemetry"].items():
        ser = tel["series"]
        if not ser:
            continue
        bands = [Band(s["start_s"], s["end_s"], s["stage"]) for s in _top_level(tel["stages"])]
        cpu = [Series(name, [tuple(p) for p in ser[key]], markers=False) for key, name in
               (("cpu_percent", "machine CPU %"), ("proc_cpu_percent", "this process CPU %")) if key in ser]
        gpu = [Series(f"GPU {k[3]} util %", [tuple(p) for p in ser[k]], markers=False)
               for k in ser if k.endswith("_util_percent")]
        if cpu or gpu:
            out.append(line_chart(cpu + gpu, title=f"Run {rid}: processor load over time", x_label="seconds",
                                  y_label="percent", bands=bands))
        mem = [Series(name, [(t, v / 2**30) for t, v in ser[key]], markers=False) for key, name in
               (("ram_used_bytes", "machine RAM used (GiB)"), ("proc_rss_bytes", "this process (GiB)")) if key in ser]
        mem += [Series(f"GPU {k[3]} memory (GiB)", [(t, v / 2**30) for t, v in ser[k]], markers=False)
                for k in ser if k.endswith("_mem_used_bytes")]
        if mem:
            out.append(line_chart(mem, title=f"Run {rid}: memory over time", x_label="seconds", y_label="GiB",
                                  bands=bands))
    return out


def _top_level(stages: list[dict[str, Any]], limit: int = 24) -> list[dict[str, Any]]:
    """Stages not nested inside another one (so bands do not overlap), at most ``limit``."""
    out: list[dict[str, Any]] = []
    for s in stages:
        if out and s["start_s"] >= out[-1]["start_s"] and s["end_s"] <= out[-1]["end_s"]:
            continue
        out.append(s)
    return out[:limit]


@functools.cache
def _jinja() -> Any:
    """The Jinja2 environment: templates from this package, autoescape on (optional keys read as empty)."""
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.PackageLoader("workbench.analysis", "templates"),
                             autoescape=True, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = lambda v, kind="": Markup(_fmt(v, kind))  # _fmt escapes what it is given
    env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    env.globals["change"] = lambda *a: Markup(_change(*a))
    return env


def render_html(data: dict[str, Any]) -> str:
    """The report page from ``collect_report_data``'s dict (and nothing else), through report.html.j2."""
    from markupsafe import Markup

    envs = data["environments"]
    charts = {"pareto": Markup(_pareto_svg(data)),
              "sweeps": {sw["run_id"]: [Markup(c) for c in _sweep_charts(sw)] for sw in data["sweeps"]},
              "telemetry": [Markup(c) for c in _telemetry_svgs(data)]}
    context = {
        "h": data.get("headline") or {},
        "names": ", ".join(f"#{r['run_id']} {r['name']}" for r in data["runs"]),
        "css": Markup(_CSS), "metrics": METRICS, "comparison": data["comparison"], "charts": charts,
        "sweeps": data["sweeps"], "verdicts": _verdict_items(data), "predictions": data["predictions"],
        "runs": data["runs"], "environments": {r: {k: str(v) for k, v in e.items()} for r, e in envs.items()},
        "env_keys": list(dict.fromkeys(k for e in envs.values() for k in e)), "recipes": data["recipes"],
        "workbench": data["workbench"], "generated_at": data["generated_at"],
    }
    return _jinja().get_template("report.html.j2").render(context)


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
