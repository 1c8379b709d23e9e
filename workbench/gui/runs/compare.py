"""What the comparison shows: like-with-like ratios against the baseline, and how they were measured."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workbench.core.measure.comparison import (
    SEQUENTIAL_CAVEAT,
    UNPAIRED_CAVEAT,
    compare_measurements,
    compare_run_to_baseline,
    speedup_sentence,
)
from workbench.core.store import RunRecord


@dataclass
class CompareEntry:
    """One bar group: a run's final figures, or a run's own baseline/final in single-run mode."""

    label: str
    run_id: int
    metrics: dict[str, Any]
    is_baseline: bool = False


def value(metrics: dict[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        return None
    return float(v)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den not in (None, 0.0) else None


def speedup_row(run: dict[str, Any], base: dict[str, Any],
                comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ratios against the baseline, like with like (``engine.comparison``): >1 means faster for both
    speedups; size ratio <1 means smaller. A ratio that cannot be formed honestly (different batch
    sizes or thread counts) is None, and ``*_note`` says why. ``comparison`` passes a paired result."""
    cmp = comparison or compare_measurements(base, run)
    lat, tput = cmp["latency"], cmp["throughput"]
    return {
        "latency_speedup": lat.get("ratio") if lat.get("comparable") else None,
        "latency_batch": lat.get("batch"),
        "latency_ci95": lat.get("ci95"),
        "latency_note": "" if lat.get("comparable") else lat.get("reason", ""),
        "throughput_speedup": tput.get("ratio") if tput.get("comparable") else None,
        "throughput_batch": tput.get("batch"),
        "throughput_note": "" if tput.get("comparable") else tput.get("reason", ""),
        "accuracy_delta_pts": cmp["accuracy_delta_pts"],
        "size_ratio": cmp["size_ratio"],
    }


def proof_banner(mode: str, runs: Sequence[RunRecord]) -> dict[str, Any]:
    """How the compared figures were measured, in words: paired or not, reliable or not, split by cause.

    ``kind`` is "paired", "sequential" (one run's baseline and final, not interleaved) or "unpaired";
    ``warn`` is True when the reader should distrust the ratios (amber banner).
    """
    if mode == "baseline_vs_final" and runs:
        cmp = compare_run_to_baseline(runs[0].summary) or {}
        sp = runs[0].summary.get("speedup") or {}
        if cmp.get("paired"):
            text = (f"Measured together: baseline and optimized model timed in {sp.get('rounds')} interleaved "
                    f"rounds in one process. Speedup {speedup_sentence({**sp, 'reliable': True})}.")
            if not cmp.get("reliable"):
                text = f"⚠ Unreliable: {cmp.get('reason')}.\n" + text
            return {"kind": "paired", "reliable": bool(cmp.get("reliable")), "warn": not cmp.get("reliable"),
                    "text": text, "steps": cmp.get("steps") or []}
        return {"kind": "sequential", "reliable": None, "warn": True, "steps": [],
                "text": f"Not paired: {SEQUENTIAL_CAVEAT}."}
    if mode == "runs":
        contended = [r.id for r in runs if any(((m or {}).get("contention") or {}).get("contended")
                                               for m in (r.final, r.baseline))]
        text = f"{UNPAIRED_CAVEAT.capitalize()}."
        if contended:
            text += f" Other processes competed for the CPU while run(s) {', '.join(f'#{i}' for i in contended)} " \
                    "were timed."
        return {"kind": "unpaired", "reliable": False if contended else None, "warn": True, "steps": [],
                "text": text}
    return {"kind": "none", "reliable": None, "warn": False, "steps": [], "text": ""}


def default_baseline(runs: Sequence[RunRecord], pinned: int | None = None) -> RunRecord:
    """The pinned baseline when it is among ``runs``; else a completed plain fp32 run (no techniques ran),
    else the oldest; oldest first on ties."""
    oldest_first = sorted(runs, key=lambda r: (r.created_at, r.id))
    chosen = [r for r in oldest_first if r.id == pinned]
    plain = [r for r in oldest_first if not r.techniques and r.status == "completed"]
    return (chosen or plain or oldest_first)[0]


def short_label(run: RunRecord) -> str:
    return f"#{run.id} {run.name}".strip()


def fmt_ratio(v: float | None, suffix: str = "×") -> str:
    return "n/a" if v is None else f"{v:.2f}{suffix}"


def ratio_text(row: dict[str, Any], key: str) -> str:
    """"5.86× @ 1 (CI 5.45–6.10×)", or "not comparable" when batch sizes or threads differ."""
    ratio = row.get(f"{key}_speedup")
    if ratio is None:
        return "not comparable" if row.get(f"{key}_note") else "—"
    text = f"{fmt_ratio(ratio)} @ {row.get(f'{key}_batch')}"
    ci = row.get(f"{key}_ci95")
    if ci:
        text += f" (CI {ci[0]:.2f}–{ci[1]:.2f}×)"
    return text


def fmt_delta(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f} pts"


def fmt_metric(metrics: dict[str, Any], key: str, scale: float, spec: str) -> str:
    v = value(metrics, key)
    return "—" if v is None else format(v * scale, spec)


SPEEDUP_COLUMNS = (
    ("Run", "Compared run; the baseline row reads 1.00×."),
    ("Latency speedup", "Baseline p50 latency ÷ this run's p50 latency at the same batch size (shown after @). "
     "Above 1× means faster. With one run selected, the paired ratio with its 95 % CI."),
    ("Throughput speedup", "This run's throughput ÷ baseline throughput at the same batch size and thread count. "
     "Above 1× means faster; \"not comparable\" when the runs share no such case."),
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
