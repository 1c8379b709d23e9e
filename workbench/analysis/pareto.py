"""The one Pareto rule: which models go on the accuracy-vs-speed chart, and which are on the frontier.

The GUI chart and the HTML report both call ``model_points`` and ``pareto_front``, so for the same
runs they draw the same points and ring the same frontier. The rule:

- one run: its path (baseline, each stage's result, final model); several runs: each run's final
  model, one point per run;
- sweeps have no accuracy and are named in the notes, never drawn at a made-up height;
- latency is compared like with like: only points timed at the same batch size share a chart (the
  batch most points share); the rest are named in the notes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

__all__ = ["metric_value", "model_points", "pareto_front", "short_techniques"]

P = TypeVar("P")


def metric_value(point: Any, key: str) -> float | None:
    """``point[key]`` for mappings, ``point.key`` otherwise; None when missing or not a finite number."""
    v = point.get(key) if isinstance(point, Mapping) else getattr(point, key, None)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def pareto_front(
    points: Sequence[P], x_key: str, y_key: str, minimize_x: bool = True, maximize_y: bool = True
) -> list[P]:
    """Points no other point beats on both axes, sorted by ``x_key`` ascending.

    E.g. accuracy (``y``, higher is better) against latency (``x``, lower is better): a model is
    on the frontier when no other model is both faster and at least as accurate. Points missing
    either value are ignored; duplicates of a frontier point are all kept.
    """
    sx = 1.0 if minimize_x else -1.0
    sy = -1.0 if maximize_y else 1.0
    scored = [(sx * x, sy * y, p) for p in points
              if (x := metric_value(p, x_key)) is not None and (y := metric_value(p, y_key)) is not None]
    # After the sign flips both axes are "lower is better": sort by x then y and keep each point
    # that improves on the best y seen so far (or equals it at the same x).
    scored.sort(key=lambda t: (t[0], t[1]))
    front: list[tuple[float, float, P]] = []
    best_y = math.inf
    for x, y, p in scored:
        if y < best_y or (front and y == best_y and x == front[-1][0]):
            front.append((x, y, p))
            best_y = min(best_y, y)
    return sorted((p for _, _, p in front), key=lambda p: metric_value(p, x_key) or 0.0)


#: Longer technique labels are elided so a chart label stays readable.
MAX_TECHNIQUE_CHARS = 22


def short_techniques(techniques: Sequence[str]) -> str:
    """'int8-dynamic+prune-l1-0.5' style label, elided: what a point on the Pareto chart is."""
    # Loader-only techniques (cache, workers) change how fast data arrives, not the model on the chart.
    model_side = [t for t in techniques if t != "cache" and not t.startswith("workers")]
    text = "+".join(t.replace("channels_last", "cl") for t in model_side) or "fp32"
    return text if len(text) <= MAX_TECHNIQUE_CHARS else text[: MAX_TECHNIQUE_CHARS - 1] + "…"


def model_points(runs: Sequence[Any], *, path: bool | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The models to place on an accuracy-vs-speed chart, and notes on what was left out (and why).

    ``runs`` are stored runs (``id``, ``kind``, ``summary``, ``final``, ``techniques``). ``path``
    defaults to True for a single run (its baseline → stages → final) and False for several (one
    point per run). Each point: run_id, label, which (baseline/stage/final), accuracy,
    latency_ms_p50, latency_batch, throughput, throughput_batch, size_bytes.
    """
    if path is None:
        path = len([r for r in runs if r.kind != "sweep"]) == 1
    pts: list[dict[str, Any]] = []
    notes: list[str] = []
    for r in runs:
        if r.kind == "sweep":
            n = len(((r.summary or {}).get("sweep") or {}).get("inference") or [])
            notes.append(f"#{r.id} is a sweep ({n} speed points, no accuracy): open it in the Sweep tab")
            continue
        summary = r.summary or {}
        candidates: list[tuple[Mapping[str, Any] | None, str, str]] = []
        if path:
            candidates.append((summary.get("baseline"), f"#{r.id} baseline", "baseline"))
            for st in summary.get("stages") or []:
                if isinstance(st, Mapping) and isinstance(st.get("after"), Mapping):
                    candidates.append((st["after"], f"#{r.id} {st.get('name', 'stage')}", "stage"))
        candidates.append((r.final, f"#{r.id} {short_techniques(r.techniques)}", "final"))
        placed = False
        seen: list[Mapping[str, Any]] = []
        for metrics, label, which in candidates:
            if not metrics or any(metrics == s for s in seen) or metric_value(metrics, "accuracy") is None:
                continue
            seen.append(metrics)
            pts.append({"run_id": r.id, "label": label, "which": which,
                        "accuracy": metric_value(metrics, "accuracy"),
                        "latency_ms_p50": metric_value(metrics, "latency_ms_p50"),
                        "latency_batch": metrics.get("latency_batch"),
                        "throughput": metric_value(metrics, "throughput"),
                        "throughput_batch": metrics.get("throughput_batch"),
                        "size_bytes": metric_value(metrics, "size_bytes")})
            placed = True
        if not placed:
            notes.append(f"#{r.id} has no accuracy measured")
    return _same_batch(pts, notes)


def _same_batch(pts: list[dict[str, Any]], notes: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Keep latency only for points timed at the batch size most of them share (like with like)."""
    batches = Counter(p["latency_batch"] for p in pts if p["latency_ms_p50"] is not None
                      and p["latency_batch"] is not None)
    if len(batches) > 1:
        common = batches.most_common(1)[0][0]
        for p in pts:
            if p["latency_batch"] not in (None, common) and p["latency_ms_p50"] is not None:
                notes.append(f"{p['label']}: latency timed at batch {p['latency_batch']}, not {common}; "
                             "left off the latency axis")
                p["latency_ms_p50"] = None
    return pts, notes
