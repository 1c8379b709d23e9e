"""How much faster does training get from DataLoader settings alone, on a loader-bound recipe?

Runs the loader sweep of ``workbench sweep`` (num_workers x cache; pin_memory only matters on CUDA)
on ``resources/recipes/loader_bound.toml``: a light model fed PNGs decoded, resized to 64 px and
augmented in the training process (0 workers, no cache). Every configuration is measured on one
DataLoader with persistent workers: the loader alone, then full training steps (time waiting for
data vs computing), warm-up excluded. It prints a markdown table for benchmarks/BENCHMARKS.md and
the best configuration's training samples/s against the default's (goal: >= 1.8x on 2 cores).

    .venv/bin/python benchmarks/bench_loader_sweep.py            # full (a few minutes)
    .venv/bin/python benchmarks/bench_loader_sweep.py --quick    # smoke test (~30 s)

On a shared machine the absolute numbers move with the neighbours' load; the load average at
start and end is printed so a reader can judge. Ratios measured back to back are more stable.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from workbench.engine.events import Reporter  # noqa: E402
from workbench.engine.sweep import SweepSpec, loader_sweep  # noqa: E402
from workbench.engine.telemetry import device_description  # noqa: E402
from workbench.recipe import load_recipe  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "resources" / "recipes" / "loader_bound.toml"
GOAL = 1.8


class _Progress(Reporter):
    def log(self, message: str, level: str = "info") -> None:
        if message.startswith("sweep: loader") or level in ("warning", "error"):
            print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _load() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--recipe", default=str(RECIPE))
    ap.add_argument("--workers", type=_ints, default=None, help="worker counts (default 0,1,2; quick: 0,1)")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps per setting (default 60)")
    ap.add_argument("--batches", type=int, default=None, help="timed loader-alone batches per setting (default 60)")
    ap.add_argument("--quick", action="store_true", help="smoke test: fewer settings and steps")
    args = ap.parse_args(argv)
    workers = args.workers or ([0, 1] if args.quick else [0, 1, 2])
    steps = args.steps or (8 if args.quick else 60)
    batches = args.batches or (8 if args.quick else 60)

    recipe = load_recipe(args.recipe)
    spec = SweepSpec(batch_sizes=[], workers=workers, cache=[False, True], pin_memory=[False, True],
                     loader_batches=batches, loader_train_steps=steps)
    load_before = _load()
    t0 = time.perf_counter()
    out = loader_sweep(recipe, spec, reporter=_Progress())
    wall = time.perf_counter() - t0
    load_after = _load()

    given = sys.argv[1:] if argv is None else argv
    command = " ".join([".venv/bin/python", "benchmarks/bench_loader_sweep.py", *map(shlex.quote, given)])
    dflt = out["default"]
    print(f"### DataLoader sweep on `{Path(args.recipe).name}`{' (quick)' if args.quick else ''}\n")
    print(f"Command: `{command}`  ")
    print(f"Machine: {device_description()}; {platform.system()} {platform.release()}; Python "
          f"{platform.python_version()}; torch {torch.__version__}; intra-op threads {recipe.bench.threads or 'all'}; "
          f"mp_context {recipe.loader.mp_context}  ")
    print(f"Load average (1/5/15 min) before: {load_before}; after: {load_after}; sweep wall time {wall:.0f} s  ")
    print(f"Batch {out['batch_size']}, {steps} timed training steps and {batches} timed loader batches per setting, "
          "after warm-up; persistent workers.\n")
    print("| Setting | Loader alone (samples/s) | Training (samples/s) | vs default | Waiting for data | Verdict |")
    print("|---|---:|---:|---:|---:|---|")
    for p in out["points"]:
        ratio = (p["train_samples_per_s"] or 0) / dflt["train_samples_per_s"] if dflt["train_samples_per_s"] else 0
        name = p["label"] + (" **(default)**" if p["is_default"] else "")
        if out["best"] and p["label"] == out["best"]["label"]:
            name += " **(best)**"
        print(f"| {name} | {p['loader_samples_per_s']:,.0f} | {p['train_samples_per_s'] or 0:,.0f} | {ratio:.2f}x | "
              f"{(p['data_wait_fraction'] or 0):.0%} | {p['verdict']['kind']} |")
    for s in out["skipped"]:
        print(f"\nNot measured: {s['what']}: {s['reason']}")
    speedup = out["speedup"] or 0.0
    verdict = "meets" if speedup >= GOAL else "misses"
    print(f"\n**Best ({out['best']['label']}) vs default ({dflt['label']}): {speedup:.2f}x training samples/s** "
          f"({verdict} the {GOAL}x goal).")
    print(f"Default verdict: {dflt['verdict']['message']}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
