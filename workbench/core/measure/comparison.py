"""Comparing two measurements like with like, and saying how the numbers were obtained.

Two rules keep a ratio honest:

- **Like with like.** Latency is compared only at the same batch size; throughput only at the same
  batch size and thread count. Where two measurements share no such case the comparison says
  "not comparable" and why, instead of dividing 116 samples/s at batch 64 by 4034 at batch 1.
- **Paired or not.** A run that ran optimization stages stores a paired ``speedup`` (its baseline
  and final model timed in interleaved rounds, see ``engine.paired``): that ratio, its 95 %
  interval and its reliability are used as they are. Anything else (two runs stored at different
  times, or an old run without the paired record) is unpaired and carries that caveat.

Used by the CLI summary, the GUI comparison and the HTML report, so all three say the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "UNPAIRED_CAVEAT",
    "compare_measurements",
    "compare_run_to_baseline",
    "compare_runs",
    "format_ratio",
    "measured_cases",
    "speedup_sentence",
    "split_sentence",
]

UNPAIRED_CAVEAT = ("unpaired: measured in separate runs at different times, so a change in machine load "
                   "between them changes this ratio")
SEQUENTIAL_CAVEAT = ("measured one after the other in this run (not interleaved): a change in machine load "
                     "between the two measurements changes this ratio")


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v) or math.isinf(v):
        return None
    return float(v)


def format_ratio(r: float | None) -> str:
    """``3.52x`` (two decimals below 10, one above)."""
    if r is None:
        return "—"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def measured_cases(m: Mapping[str, Any]) -> dict[int, dict[str, float]]:
    """Per batch size: p50 latency (ms) and throughput (samples/s) of one measurement."""
    out: dict[int, dict[str, float]] = {}
    for st in m.get("bench") or []:
        b, p50 = st.get("batch_size"), _num(st.get("p50_ms"))
        if isinstance(b, int) and p50:
            out[b] = {"p50_ms": p50, "throughput": _num(st.get("throughput")) or b / p50 * 1e3}
    if not out:  # a summary without the per-batch list: use its single latency / throughput cases
        lb, lat = m.get("latency_batch"), _num(m.get("latency_ms_p50"))
        if isinstance(lb, int) and lat:
            out[lb] = {"p50_ms": lat, "throughput": lb / lat * 1e3}
        tb, tp = m.get("throughput_batch"), _num(m.get("throughput"))
        if isinstance(tb, int) and tp:
            out.setdefault(tb, {"p50_ms": tb / tp * 1e3, "throughput": tp})
    return out


def compare_measurements(base: Mapping[str, Any], cand: Mapping[str, Any]) -> dict[str, Any]:
    """Latency and throughput ratios of ``cand`` against ``base``, like with like.

    ``latency``: baseline p50 / candidate p50 at the smallest batch size both measured (> 1: faster).
    ``throughput``: candidate / baseline samples/s at the largest batch size both measured, only when
    both used the same thread count (where recorded). Each is ``{"batch", "ratio"}`` or
    ``{"comparable": False, "reason"}``. ``accuracy_delta_pts`` and ``size_ratio`` ride along.
    """
    bc, cc = measured_cases(base), measured_cases(cand)
    common = sorted(set(bc) & set(cc))
    out: dict[str, Any] = {}
    if common:
        b = common[0]
        out["latency"] = {"batch": b, "ratio": bc[b]["p50_ms"] / cc[b]["p50_ms"], "comparable": True}
    else:
        out["latency"] = _not_comparable("latency", bc, cc)
    bt, ct = base.get("threads"), cand.get("threads")
    if isinstance(bt, int) and isinstance(ct, int) and bt != ct:
        out["throughput"] = {"comparable": False,
                             "reason": f"not comparable: throughput measured with {bt} vs {ct} threads"}
    elif common:
        b = common[-1]
        out["throughput"] = {"batch": b, "ratio": cc[b]["throughput"] / bc[b]["throughput"], "comparable": True}
    else:
        out["throughput"] = _not_comparable("throughput", bc, cc)
    ba, ca = _num(base.get("accuracy")), _num(cand.get("accuracy"))
    out["accuracy_delta_pts"] = None if ba is None or ca is None else (ca - ba) * 100.0
    bs, cs = _num(base.get("size_bytes")), _num(cand.get("size_bytes"))
    out["size_ratio"] = cs / bs if bs and cs else None
    return out


def _not_comparable(what: str, bc: Mapping[int, Any], cc: Mapping[int, Any]) -> dict[str, Any]:
    if not bc or not cc:
        return {"comparable": False, "reason": f"no {what} measured on one side"}
    return {"comparable": False, "reason": f"not comparable: {what} measured at batch "
                                           f"{', '.join(map(str, sorted(bc)))} vs {', '.join(map(str, sorted(cc)))}"}


def _paired_entry(speedup: Mapping[str, Any], kind: str, batch: int | None) -> dict[str, Any] | None:
    table = speedup.get(kind) or {}
    if not table:
        return None
    key = str(batch) if batch is not None and str(batch) in table else (
        min(table, key=int) if kind == "latency" else max(table, key=int))
    e = table[key]
    return {"batch": int(key), "ratio": e["ratio"], "ci95": list(e["ci95"]), "comparable": True}


def compare_run_to_baseline(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """A run's final model against its own baseline: paired when the run stored a ``speedup`` record."""
    base, final = summary.get("baseline"), summary.get("final")
    if not base or not final:
        return None
    out = compare_measurements(base, final)
    sp = summary.get("speedup")
    if isinstance(sp, Mapping) and sp.get("paired"):
        lat = _paired_entry(sp, "latency", None)
        tput = _paired_entry(sp, "throughput", None)
        if lat:
            out["latency"] = lat
        if tput:
            out["throughput"] = tput
        out.update(paired=True, reliable=bool(sp.get("reliable")), reason=sp.get("reason") or "",
                   steps=list(sp.get("steps") or []), rounds=sp.get("rounds"),
                   caveat="" if sp.get("reliable") else f"unreliable: {sp.get('reason')}")
    else:
        out.update(paired=False, reliable=None, reason="", steps=[], caveat=SEQUENTIAL_CAVEAT)
    return out


def compare_runs(base: Mapping[str, Any], cand: Mapping[str, Any]) -> dict[str, Any]:
    """Final figures of two different runs: always unpaired, so always with the caveat."""
    out = compare_measurements(base, cand)
    contended = [m for m in (base, cand) if (m.get("contention") or {}).get("contended")]
    out.update(paired=False, reliable=False if contended else None, steps=[], caveat=UNPAIRED_CAVEAT,
               reason="other processes competed for the CPU during a measurement" if contended else "")
    return out


def split_sentence(speedup: Mapping[str, Any]) -> str:
    """``runtime switch (torch eager fp32 → onnxruntime fp32) 3.52x × quantize (… → onnxruntime static INT8) 1.55x``."""
    parts = []
    for s in speedup.get("steps") or []:
        parts.append(f"{s['name']} ({s.get('detail', '')}) {format_ratio(s.get('ratio'))}")
    return " × ".join(parts)


def speedup_sentence(speedup: Mapping[str, Any]) -> str:
    """One line for logs and summaries: the paired headline, its interval, and the split by cause."""
    lat = _paired_entry(speedup, "latency", None)
    if lat is None:
        return "no paired timing"
    lo, hi = lat["ci95"]
    text = (f"{format_ratio(lat['ratio'])} at batch {lat['batch']} (95 % CI {format_ratio(lo)}–{format_ratio(hi)}, "
            f"paired, {speedup.get('rounds')} rounds)")
    steps = speedup.get("steps") or []
    if len(steps) > 1:
        text += " = " + split_sentence(speedup)
    elif steps:
        text += f" from {steps[0]['name']} ({steps[0].get('detail', '')})"
    if not speedup.get("reliable", True):
        text += f"; unreliable: {speedup.get('reason')}"
    return text
