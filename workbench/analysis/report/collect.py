"""Every number a report shows, collected from the run store into one plain dict first."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from workbench import __version__
from workbench.analysis.pareto import model_points, pareto_front
from workbench.analysis.report.predictions import sample_predictions
from workbench.core.diagnose import loader_verdict
from workbench.core.events import CancelToken, Reporter
from workbench.core.measure.comparison import (
    SEQUENTIAL_CAVEAT,
    UNPAIRED_CAVEAT,
    compare_measurements,
    measured_cases,
    split_sentence,
)
from workbench.errors import WorkbenchError

TELEMETRY_KEYS = ("cpu_percent", "proc_cpu_percent", "ram_used_bytes", "proc_rss_bytes")

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


def num(v: Any) -> float | None:
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
    bs, fs = num(baseline.get("size_bytes")), num(final.get("size_bytes"))
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
    btr, ftr = num(baseline.get("train_samples_per_s")), num(final.get("train_samples_per_s"))
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
        h["caveat"] = f"{UNPAIRED_CAVEAT.capitalize()}."
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


def _search_data(store: Any, run: Any) -> dict[str, Any]:
    """An Accelerate search: its settings, trials, Pareto front, winner, card, and the winner's recipe to re-run."""
    acc = dict((run.summary or {}).get("accelerate") or {})
    acc["run_id"] = run.id
    acc["name"] = run.name
    best = acc.get("best") or {}
    winner = store.get_run(int(best["run_id"])) if best.get("run_id") is not None else None
    acc["winner_recipe"] = winner.recipe if winner is not None else ""
    return acc


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


def _early_exit(run: Any) -> dict[str, Any] | None:
    """A run's early-exit result: the validation curve, the chosen threshold and the eval figures."""
    record = next((s for s in (run.summary or {}).get("stages") or []
                   if isinstance(s, Mapping) and s.get("name") == "early_exit"), None)
    if record is None:
        return None
    ev, lat = record.get("eval") or {}, record.get("latency") or {}
    return {"run_id": run.id, "threshold": record.get("threshold"), "rule": record.get("rule"),
            "exits": record.get("exits") or [], "validation": record.get("validation") or {}, "eval": ev,
            "latency": lat, "note": record.get("note", "")}


def _layer_profile(store: Any, run: Any, top: int = 10) -> dict[str, Any] | None:
    """The run's last stored per-layer profile (``workbench profile RUN``): top layers, verdicts, diff counts."""
    from workbench.analysis.profile import latest_profile

    stored = latest_profile(store, run.id)
    if stored is None:
        return None
    prof = stored["profile"]
    rows = sorted(prof.get("layers") or [], key=lambda r: num(r.get("time_ms")) or 0.0, reverse=True)
    diff = stored.get("diff") or None
    return {"run_id": run.id, "source": prof.get("source", ""), "runtime": prof.get("runtime", ""),
            "batch": prof.get("batch"), "total_ms": num(prof.get("total_ms")), "threads": prof.get("threads"),
            "top": rows[:top], "layers": len(rows), "verdicts": stored.get("verdicts") or [],
            "diff": None if diff is None else {"before": diff.get("before"), "before_total_ms": diff.get("before_total_ms"),
                                               "after_total_ms": diff.get("after_total_ms"),
                                               "counts": diff.get("counts") or {}}}


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
        "searches": [_search_data(store, r) for r in runs if r.kind == "accelerate"],
        "verdicts": {str(r.id): v for r in runs if (v := _verdict(r))},
        "environments": {str(r.id): _environment(r) for r in runs},
        "recipes": {str(r.id): r.recipe for r in runs},
        "early_exits": [e for r in runs if (e := _early_exit(r))],
        "layer_profiles": [p for r in runs if (p := _layer_profile(store, r))],
    }
    reporter.progress(1, 4, "telemetry")
    data["telemetry"] = {str(r.id): _telemetry(store, r) for r in runs}
    cancel.raise_if_cancelled()
    reporter.progress(2, 4, "sample predictions")
    data["predictions"] = (sample_predictions(store, runs, cancel) if predictions
                           else {"available": False, "reason": "sample predictions were not requested"})
    reporter.progress(4, 4, "done")
    reporter.stage_finished("report", {"runs": len(runs)})
    return data
