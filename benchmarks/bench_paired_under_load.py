"""The same recipe on a quiet machine and beside two busy processes: does the proof survive the load?

Runs ``workbench run RECIPE --json`` N times quiet, then N times while two other processes spin
(``python3 -c 'while True: pass'``, twice, as a user's busy laptop would), each in a fresh store,
and tables for every run: the unpaired baseline and final p50 at batch 1 (measured minutes apart in
the run, as every version before the paired timing reported them), their ratio, the paired speedup
with its 95 % interval, whether it was marked reliable and why not, and the threads the run chose.

    .venv/bin/python benchmarks/bench_paired_under_load.py                 # static INT8 recipe, 2 runs each
    .venv/bin/python benchmarks/bench_paired_under_load.py --runs 3 --samples 100 --epochs 1
    .venv/bin/python benchmarks/bench_paired_under_load.py --quick         # smoke: 1 run each, 40 samples/class

It starts two busy processes on purpose: run it alone, never beside other measurements.

Acceptance (issue #9): quiet runs report ``reliable: true``; each loaded run either reports a paired
latency ratio within a factor 1.5 of the quiet runs' median or ``reliable: false`` with a reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import markdown_table, print_header

ROOT = Path(__file__).resolve().parents[1]
WORKBENCH = [sys.executable, "-m", "workbench"]


def _recipe(base: Path, samples: int, epochs: int, out: Path) -> Path:
    text = base.read_text()
    text = text.replace("samples_per_class = 500", f"samples_per_class = {samples}")
    lines = []
    for line in text.splitlines():
        lines.append(f"epochs = {epochs}" if line.strip().startswith("epochs =") else line)
    out.write_text("\n".join(lines) + "\n")
    return out


def _run(recipe: Path, home: Path) -> dict[str, Any]:
    env = {**os.environ, "WORKBENCH_HOME": str(home)}
    t0 = time.perf_counter()
    proc = subprocess.run([*WORKBENCH, "run", str(recipe), "--json"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    result = json.loads(proc.stdout)
    result["_wall_s"] = wall
    return result


def _row(label: str, index: int, r: dict[str, Any]) -> dict[str, Any]:
    sp = r.get("speedup") or {}
    lat = (sp.get("latency") or {}).get("1") or {}
    b, f = r["baseline"], r["final"]
    return {"load": label, "run": index, "baseline_p50": b.get("latency_ms_p50"),
            "final_p50": f.get("latency_ms_p50"),
            "unpaired": b["latency_ms_p50"] / f["latency_ms_p50"] if f.get("latency_ms_p50") else None,
            "paired": lat.get("ratio"), "ci": lat.get("ci95"), "reliable": sp.get("reliable"),
            "reason": sp.get("reason") or "", "threads": (sp.get("threads") or {}).get("threads"),
            "others": (sp.get("contention") or {}).get("others_cores"),
            "steps": " × ".join(f"{s['name']} {s['ratio']:.2f}x" for s in sp.get("steps") or []),
            "accuracy": f.get("accuracy"), "wall": r["_wall_s"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "resources/recipes/quantize_static_int8.toml"))
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--samples", type=int, default=100, help="samples per class of the built-in data")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 run each, 40 samples per class")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.samples = 1, 40
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wb-load-") as tmp:
        recipe = _recipe(Path(args.recipe), args.samples, args.epochs, Path(tmp) / "recipe.toml")
        for i in range(args.runs):
            rows.append(_row("quiet", i + 1, _run(recipe, Path(tmp) / f"quiet-{i}")))
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        try:
            time.sleep(1.0)
            for i in range(args.runs):
                rows.append(_row("2 busy processes", i + 1, _run(recipe, Path(tmp) / f"loaded-{i}")))
        finally:
            for p in busy:
                p.kill()
                p.wait()
    quiet = [r["paired"] for r in rows if r["load"] == "quiet" and r["paired"]]
    ref = statistics.median(quiet) if quiet else None
    print_header("The same recipe quiet and beside two busy processes" + (" (QUICK smoke run: not a result)"
                                                                          if args.quick else ""),
                 argv=None if argv is None else [sys.argv[0], *argv])
    print(f"Recipe {Path(args.recipe).name}, {args.samples} samples per class, {args.epochs} epoch(s); each run in a "
          "fresh store, threads chosen per run (auto); unpaired figures are the run's separate baseline and final "
          "measurements, paired ones its interleaved timing\n")
    headers = ["Load", "Run", "Baseline p50 @1 (ms, unpaired)", "Final p50 @1 (ms, unpaired)", "Unpaired ratio",
               "Paired speedup @1 (95 % CI)", "Reliable", "Threads", "Others' cores", "Split by cause", "Verdict"]
    table = []
    ok = True
    for r in rows:
        ci = f"{r['ci'][0]:.2f}–{r['ci'][1]:.2f}" if r["ci"] else "—"
        verdict = "reference"
        if r["load"] != "quiet":
            within = ref is not None and r["paired"] is not None and 1 / 1.5 <= r["paired"] / ref <= 1.5
            verdict = ("within 1.5x of quiet" if within else "") + (
                ("; " if within else "") + "flagged unreliable" if not r["reliable"] else "")
            ok &= bool(within or not r["reliable"])
        else:
            ok &= bool(r["reliable"])
            if not r["reliable"]:
                verdict = "quiet run flagged: " + r["reason"]
        table.append([r["load"], str(r["run"]), f"{r['baseline_p50']:.3f}", f"{r['final_p50']:.3f}",
                      f"{r['unpaired']:.2f}x", f"{r['paired']:.2f}x ({ci})", str(r["reliable"]), str(r["threads"]),
                      f"{r['others']:.2f}", r["steps"], verdict])
    print(markdown_table(headers, table, "llrrrrlrrll"))
    print()
    for r in rows:
        if r["reason"]:
            print(f"- run {r['run']} ({r['load']}): {r['reason']}")
    print(f"\nacceptance {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
