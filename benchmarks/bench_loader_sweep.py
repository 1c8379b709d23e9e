"""How much faster does training get from DataLoader settings alone, on a loader-bound recipe? (alternated)

Measures the loader configurations of ``workbench sweep`` (num_workers x cache; pin_memory only
matters on CUDA) on ``resources/recipes/loader_bound.toml``: a light model fed PNGs decoded, resized
to 64 px and augmented in the training process (0 workers, no cache). Each measurement is one
``engine.sweep.loader_sweep`` call for ONE configuration: a fresh DataLoader with persistent
workers, the loader alone, then full training steps (time waiting for data vs computing), warm-up
excluded.

Configurations cannot share one process's interleaved rounds (each owns its worker processes), so
they are ALTERNATED, not paired: repetition 1 runs A B C, repetition 2 C B A, and so on (at least
3 repetitions). Each repetition gives each configuration's training samples/s over the default's;
the table reports the median of those ratios with their range, and the CPU other processes took
during every measurement (worker processes count as ours, not as competition).

    .venv/bin/python benchmarks/bench_loader_sweep.py            # full (several minutes)
    .venv/bin/python benchmarks/bench_loader_sweep.py --quick    # smoke: 2 settings, 3 short repetitions
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import (
    ALTERNATED_NOTE,
    MIN_REPETITIONS,
    AlternatedRatio,
    TreeContentionMonitor,
    alternating_order,
    contention_line,
    markdown_table,
    print_header,
    threads_line,
)

from workbench.analysis.sweep import SweepSpec, loader_configs, loader_sweep
from workbench.core.data import load_dataset
from workbench.core.events import Reporter
from workbench.core.measure.paired import CpuLoad, choose_threads
from workbench.core.models import load_model
from workbench.recipe import Recipe, load_recipe

RECIPE = Path(__file__).resolve().parents[1] / "resources" / "recipes" / "loader_bound.toml"
GOAL = 1.8


class _Progress(Reporter):
    def log(self, message: str, level: str = "info") -> None:
        if message.startswith("sweep: loader") or level in ("warning", "error"):
            print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _bools(text: str) -> list[bool]:
    return [v.strip().lower() in ("1", "true", "on", "yes") for v in text.split(",") if v.strip()]


def measure_one(recipe: Recipe, workers: int, cache: bool, threads: int, steps: int, batches: int,
                module: Any) -> tuple[dict[str, Any], CpuLoad]:
    """One configuration, measured alone by the engine's loader sweep; with the CPU others used meanwhile."""
    variant = recipe.model_copy(deep=True)
    variant.loader.num_workers = workers
    variant.data.cache = cache
    spec = SweepSpec(batch_sizes=[], workers=[workers], cache=[cache], pin_memory=[False], threads=threads,
                     loader_batches=batches, loader_train_steps=steps)
    with TreeContentionMonitor() as mon:
        out = loader_sweep(variant, spec, module=module, reporter=_Progress())
    assert mon.load is not None and len(out["points"]) == 1, out
    return out["points"][0], mon.load


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--recipe", default=str(RECIPE))
    ap.add_argument("--workers", type=_ints, default=None, help="worker counts (default 0,1,2; quick: 0,1)")
    ap.add_argument("--cache", type=_bools, default=None, help="cache settings (default 0,1; quick: 0)")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps per measurement (default 60)")
    ap.add_argument("--batches", type=int, default=None, help="timed loader-alone batches per measurement (default 60)")
    ap.add_argument("--repetitions", type=int, default=MIN_REPETITIONS,
                    help=f"alternated repetitions of every setting (at least {MIN_REPETITIONS})")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads (default: the recipe's bench.threads; 0 = auto: free cores)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 settings, fewer steps, 100 images/class")
    args = ap.parse_args(argv)
    if args.repetitions < MIN_REPETITIONS:
        ap.error(f"--repetitions {args.repetitions}: at least {MIN_REPETITIONS} are needed for a range")
    workers = args.workers or ([0, 1] if args.quick else [0, 1, 2])
    caches = args.cache or ([False] if args.quick else [False, True])
    steps = args.steps or (8 if args.quick else 60)
    batches = args.batches or (8 if args.quick else 60)

    recipe = load_recipe(args.recipe)
    if args.quick:
        recipe.data.samples_per_class = min(recipe.data.samples_per_class, 100)
    choice = choose_threads(recipe.bench.threads if args.threads is None else args.threads)
    default, configs, skipped = loader_configs(recipe, SweepSpec(batch_sizes=[], workers=workers, cache=caches,
                                                                 pin_memory=[False]))
    bundle = load_dataset(recipe.data)  # one model, one start: every measurement trains a copy of it
    module = load_model(recipe.model, bundle.num_classes, tuple(bundle.input_shape)).module

    print_header(f"DataLoader sweep on `{Path(args.recipe).name}`, alternated"
                 + (" (QUICK smoke run: not a result)" if args.quick else ""),
                 argv=None if argv is None else [sys.argv[0], *argv])
    print(threads_line(choice) + "  ")
    print(f"Batch {recipe.batching.batch_size}, {steps} timed training steps and {batches} timed loader batches per "
          f"measurement, after warm-up; persistent workers; mp_context {recipe.loader.mp_context}; "
          f"{args.repetitions} repetitions of {len(configs)} settings\n", flush=True)

    points: list[list[dict[str, Any]]] = [[] for _ in configs]
    loads: list[list[CpuLoad]] = [[] for _ in configs]
    with TreeContentionMonitor() as whole:
        for rep, i in alternating_order(len(configs), args.repetitions):
            cfg = configs[i]
            print(f"  repetition {rep + 1}: {cfg.label}", file=sys.stderr, flush=True)
            point, load = measure_one(recipe, cfg.num_workers, cfg.cache, choice.threads, steps, batches, module)
            points[i].append(point)
            loads[i].append(load)

    ratios = []
    for i in range(len(configs)):
        values = [(p["train_samples_per_s"] or 0.0) / d["train_samples_per_s"]
                  for p, d in zip(points[i], points[0], strict=True) if d["train_samples_per_s"]]
        ratios.append(AlternatedRatio(values, loads[i] + loads[0]))
    best = max(range(len(configs)), key=lambda i: ratios[i].median)
    rows = []
    for i, cfg in enumerate(configs):
        name = cfg.label + (" **(default)**" if cfg == default else "") + (" **(best)**" if i == best else "")
        verdicts = Counter(p["verdict"]["kind"] for p in points[i])
        problems = ratios[i].problems() if i else [p for p in ratios[i].problems() if "range" not in p]
        rows.append([name, f"{statistics.median(p['loader_samples_per_s'] for p in points[i]):,.0f}",
                     f"{statistics.median(p['train_samples_per_s'] or 0.0 for p in points[i]):,.0f}",
                     "1.00x (reference)" if i == 0 else ratios[i].cell(),
                     f"{statistics.median(p['data_wait_fraction'] or 0.0 for p in points[i]):.0%}",
                     ", ".join(f"{k} ×{n}" for k, n in verdicts.most_common()),
                     f"{max(ld.others_cores for ld in loads[i]):.2f}",
                     "yes" if not problems else "NO: " + "; ".join(problems)])
    print(markdown_table(["Setting", "Loader alone (samples/s)", "Training (samples/s)", "vs default (median, range)",
                          "Waiting for data", "Verdict (per repetition)", "Others' cores (max)", "Reliable"],
                         rows, "lrrrrlrl"))
    print()
    print(ALTERNATED_NOTE + "  ")
    print("Samples/s and waiting: medians over repetitions. Others' cores: the most CPU other processes took during "
          "any one measurement (this process's DataLoader workers count as ours).  ")
    assert whole.load is not None
    print(contention_line(whole.load, "over the whole sweep"))
    for s in skipped:
        print(f"\nNot measured: {s['what']}: {s['reason']}")
    if best != 0:
        r = ratios[best]
        verdict = "meets" if r.median >= GOAL else "misses"
        print(f"\n**Best ({configs[best].label}) vs default ({default.label}): {r.cell()} training samples/s**, "
              f"alternated ({verdict} the {GOAL}x goal){'' if not r.problems() else '; unreliable: '}"
              f"{'; '.join(r.problems())}.")
    else:
        print(f"\nNo setting beat the default ({default.label}) on median training samples/s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
