"""Does our timing harness agree with torch.utils.benchmark?

Same model, same input, same callable, same thread count: our ``time_callable`` median versus
``torch.utils.benchmark.Timer.blocked_autorange`` median, interleaved over a few rounds so drift
(thermal, noisy neighbours) hits both alike. A ratio near 1.0 means our per-call timing adds no
bias; it prints a markdown table for benchmarks/BENCHMARKS.md.

The two timers cannot time the same calls, so they ALTERNATE (harness first in odd rounds, Timer
first in even ones); the output gives the thread count both used, the CPU and the CPU other
processes took during each batch size's rounds.

    .venv/bin/python benchmarks/bench_harness_fidelity.py            # full: batch 1 and 32, 5 rounds
    .venv/bin/python benchmarks/bench_harness_fidelity.py --quick    # smoke: batch 1, 3 short rounds
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch
from _common import TreeContentionMonitor, contention_line, print_header, threads_line
from torch import nn
from torch.utils import benchmark

from workbench.core.measure.paired import CpuLoad, choose_threads
from workbench.core.measure.timing import fixed_threads, time_callable


def small_cnn(num_classes: int = 10) -> nn.Module:
    """conv-bn-relu x3 + linear on 3x32x32: a typical small vision workload."""

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(3, 32, 1),
        *block(32, 64, 2),
        *block(64, 128, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    ).eval()


def make_call(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def run() -> Any:
        with torch.inference_mode():
            return model(x)

    return run


def harness_ms(fn: Callable[[], Any], batch: int, min_time_s: float) -> dict[str, Any]:
    s = time_callable(fn, batch_size=batch, warmup=10, iters=50, min_time_s=min_time_s, max_time_s=60.0)
    return {"median": s.p50_ms, "mean": s.mean_ms, "ci": s.ci95_median_ms, "n": s.iters}


def timer_ms(fn: Callable[[], Any], threads: int, min_time_s: float) -> dict[str, Any]:
    # Timer defaults to num_threads=1: pass ours, or the comparison is meaningless.
    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    t.timeit(10)  # warm-up, like the harness
    m = t.blocked_autorange(min_run_time=min_time_s)
    # Timer's median is over blocks of number_per_run calls; its mean is total time / calls.
    return {"median": m.median * 1e3, "mean": m.mean * 1e3, "n": m.number_per_run * len(m.raw_times)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=5, help="alternated rounds per batch size")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per measurement")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = auto: free cores)")
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 1, 3 rounds of 0.2 s")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.rounds, args.min_time = [1], 3, 0.2

    torch.manual_seed(0)
    model = small_cnn()
    choice = choose_threads(args.threads)
    print_header("Harness fidelity: this harness vs torch.utils.benchmark"
                 + (" (QUICK smoke run: not a result)" if args.quick else ""),
                 argv=None if argv is None else [sys.argv[0], *argv])
    with fixed_threads(choice.threads) as threads:
        print(threads_line(choice) + f" and torch.utils.benchmark.Timer(num_threads={threads})  ")
        print(f"{args.rounds} alternated rounds x {args.min_time:g} s per measurement\n")
        print(
            "| batch | round | harness p50 ms | harness 95% CI of p50 | harness mean ms | n "
            "| Timer median ms | Timer mean ms | n | p50 ratio | mean ratio |"
        )
        print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        summary: list[tuple[int, float, float, list[float], list[float], CpuLoad]] = []
        for b in args.batch_sizes:
            x = torch.randn(b, 3, 32, 32)
            fn = make_call(model, x)
            ours: list[float] = []
            theirs: list[float] = []
            med_ratios: list[float] = []
            mean_ratios: list[float] = []
            with TreeContentionMonitor() as mon:
                for r in range(args.rounds):
                    # alternate which goes first so neither always runs on a "warmer" machine
                    if r % 2 == 0:
                        h = harness_ms(fn, b, args.min_time)
                        t = timer_ms(fn, threads, args.min_time)
                    else:
                        t = timer_ms(fn, threads, args.min_time)
                        h = harness_ms(fn, b, args.min_time)
                    ours.append(h["median"])
                    theirs.append(t["median"])
                    med_ratios.append(h["median"] / t["median"])
                    mean_ratios.append(h["mean"] / t["mean"])
                    lo, hi = h["ci"]
                    print(
                        f"| {b} | {r + 1} | {h['median']:.3f} | [{lo:.3f}, {hi:.3f}] | {h['mean']:.3f} | {h['n']} "
                        f"| {t['median']:.3f} | {t['mean']:.3f} | {t['n']} | {med_ratios[-1]:.3f} "
                        f"| {mean_ratios[-1]:.3f} |", flush=True
                    )
            assert mon.load is not None
            summary.append((b, statistics.median(ours), statistics.median(theirs), med_ratios, mean_ratios, mon.load))
        print()
        print(
            "| batch | harness p50 ms | Timer median ms | p50 ratio (median, range) | mean ratio (median, range) "
            "| others' cores |"
        )
        print("|---:|---:|---:|---|---|---:|")
        for b, o, t, mr, ar, load in summary:
            print(
                f"| {b} | {o:.3f} | {t:.3f} | {statistics.median(mr):.3f} ({min(mr):.3f}-{max(mr):.3f}) "
                f"| {statistics.median(ar):.3f} ({min(ar):.3f}-{max(ar):.3f}) | {load.others_cores:.2f} |"
            )
        print()
        for b, *_, load in summary:
            print(contention_line(load, f"at batch {b}") + "  ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
