"""The table a finished run prints: like with like, and the paired speedup with its split by cause."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workbench.cli.common import plain_console


def format_value(v: Any, kind: str = "") -> str:
    if v is None:
        return "—"
    if kind == "pct":
        return f"{v * 100:.2f} %"
    if kind == "bytes":
        return f"{v / 1e6:.2f} MB"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


ROWS = [("accuracy", "Eval accuracy", "pct"), ("train_samples_per_s", "Training throughput (samples/s)", ""),
        ("params", "Parameters", ""), ("size_bytes", "Size", "bytes")]


def print_summary(summary: Mapping[str, Any]) -> None:
    """The run's table (like with like: latency and throughput at one batch size each) and its speedup lines."""
    from rich.table import Table

    from workbench.core.measure.comparison import compare_run_to_baseline, measured_cases, speedup_sentence

    console = plain_console()
    final, baseline = summary.get("final") or {}, summary.get("baseline")
    table = Table(title=f"Run {summary.get('run_id')}: {summary.get('name', '')} — {summary.get('status', '')}")
    table.add_column("Metric")
    if baseline:
        table.add_column("Baseline", justify="right")
    table.add_column("Final" if baseline else "Value", justify="right")
    if baseline:
        table.add_column("Change", justify="right")
    cmp = compare_run_to_baseline(summary) if baseline else None
    rows: list[tuple[str, Any, Any, str]] = []
    for key, label, kind in ROWS[:1]:
        rows.append((label, format_value((baseline or {}).get(key), kind), format_value(final.get(key), kind),
                     _change(key, (baseline or {}).get(key), final.get(key))))
    fc, bc = measured_cases(final), measured_cases(baseline or {})
    speedup = summary.get("speedup")
    if isinstance(speedup, Mapping) and speedup.get("paired"):
        # Show the paired medians, so the figures and the ratio beside them come from the same rounds.
        for b, e in (speedup.get("latency") or {}).items():
            bc[int(b)] = {"p50_ms": e["baseline_ms"], "throughput": int(b) / e["baseline_ms"] * 1e3}
            fc[int(b)] = {"p50_ms": e["final_ms"], "throughput": int(b) / e["final_ms"] * 1e3}
    lat_batch = (cmp or {}).get("latency", {}).get("batch") or (min(fc) if fc else None)
    tput_batch = (cmp or {}).get("throughput", {}).get("batch") or (max(fc) if fc else None)
    if lat_batch is not None:
        change = _ratio_cell(cmp, "latency", "faster")
        rows.append((f"Latency p50 @ batch {lat_batch} (ms)", format_value(bc.get(lat_batch, {}).get("p50_ms")),
                     format_value(fc.get(lat_batch, {}).get("p50_ms")), change))
    if tput_batch is not None:
        change = _ratio_cell(cmp, "throughput", "")
        rows.append((f"Inference throughput @ batch {tput_batch} (samples/s)",
                     format_value(bc.get(tput_batch, {}).get("throughput")), format_value(fc.get(tput_batch, {}).get("throughput")),
                     change))
    for key, label, kind in ROWS[1:]:
        rows.append((label, format_value((baseline or {}).get(key), kind), format_value(final.get(key), kind),
                     _change(key, (baseline or {}).get(key), final.get(key))))
    for label, before, after, change in rows:
        table.add_row(*([label, before, after, change] if baseline else [label, after]))
    console.print(table)
    if isinstance(speedup, Mapping) and speedup.get("paired"):
        console.print(f"Speedup, paired: {speedup_sentence({**speedup, 'reliable': True})}")
        if not speedup.get("reliable"):
            console.print(f"Unreliable measurement: {speedup.get('reason')}", style="yellow")
    elif cmp is not None and summary.get("stages"):
        console.print(cmp["caveat"], style="yellow")
    for stage in summary.get("stages") or []:
        if stage.get("note"):
            console.print(f"{stage['name']}: {stage['note']}", style="yellow")


def _ratio_cell(cmp: Mapping[str, Any] | None, key: str, word: str) -> str:
    """A comparison ratio as a table cell: "5.86x faster (paired)", or why it is not comparable."""
    from workbench.core.measure.comparison import format_ratio

    if not cmp:
        return ""
    entry = cmp.get(key) or {}
    if not entry.get("comparable"):
        return str(entry.get("reason") or "")
    text = f"{format_ratio(entry['ratio'])} {word}".strip()
    if entry.get("ci95"):
        lo, hi = entry["ci95"]
        text += f" (CI {format_ratio(lo)}–{format_ratio(hi)})"
    return text


def _change(key: str, before: Any, after: Any) -> str:
    if not isinstance(before, int | float) or not isinstance(after, int | float) or not before or not after:
        return ""
    if key == "accuracy":
        return f"{(after - before) * 100:+.2f} pts"
    if key in ("size_bytes", "params"):
        return f"{before / after:.2f}x smaller"
    return f"{after / before:.2f}x"
