"""``workbench sweep RECIPE``: speed against batch size, precision and DataLoader settings, as one run.

The whole sweep is stored as ONE run (kind ``sweep``): ``workbench show ID`` re-opens it and
``workbench report ID`` draws its charts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from workbench.cli.common import (
    EXIT_CANCELLED,
    EXIT_INTERNAL_ERROR,
    EXIT_USER_ERROR,
    CliReporter,
    Command,
    error_line,
    int_list,
    plain_console,
    positive_int,
)


def _iters(text: str) -> int:
    value = positive_int(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"{value}: time at least 3 calls per point (a median needs a few)")
    return value


def _workers(text: str) -> list[int]:
    return int_list(text, minimum=0, example="0,1,2")


def _precisions(text: str) -> list[str]:
    from workbench.analysis.sweep import PRECISIONS

    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in PRECISIONS]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(PRECISIONS)}, e.g. fp32,bf16")
    return values


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of milliseconds, e.g. 20") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the latency budget must be > 0 ms")
    return v


def configure(p: argparse.ArgumentParser) -> None:
    p.description = ("Measure inference latency/throughput and training throughput against batch size and "
                     "precision, and (with --workers) DataLoader settings with a loader-bound verdict each. "
                     "Stored as one run.")
    p.add_argument("recipe")
    p.add_argument("--batch-sizes", type=int_list, default=None,
                   help="comma list, e.g. 1,8,32,128 (default: the recipe's bench.batch_sizes)")
    p.add_argument("--precisions", type=_precisions, default=["fp32"],
                   help="comma list of fp32,bf16,fp16 (fp16 needs CUDA; skipped with a reason otherwise)")
    p.add_argument("--latency-budget", type=_positive, default=None, metavar="MS",
                   help="mark the highest-throughput point whose latency fits this budget")
    p.add_argument("--budget-on", choices=("p50", "p95"), default="p95",
                   help="which latency the budget applies to (default p95)")
    p.add_argument("--cap-max-batch", action="store_true",
                   help="run the max-batch finder first and drop batch sizes above its limit")
    p.add_argument("--no-train", action="store_true", help="inference only in the batch sweep")
    p.add_argument("--no-inference", action="store_true", help="training only in the batch sweep")
    p.add_argument("--skip-batch", action="store_true", help="no batch sweep (e.g. loader sweep only)")
    p.add_argument("--workers", type=_workers, default=None,
                   help="DataLoader sweep over these worker counts, e.g. 0,1,2 (no loader sweep without it)")
    p.add_argument("--pin-memory", action="store_true", help="also try pin_memory = true (only matters on CUDA)")
    p.add_argument("--cache", choices=("both", "on", "off"), default="both",
                   help="data cache settings to try in the loader sweep (default both)")
    p.add_argument("--iters", type=_iters, default=None, help="timed calls per inference point, at least 3 "
                   "(default bench.iters)")
    p.add_argument("--train-steps", type=positive_int, default=10, help="timed training steps per batch point")
    p.add_argument("--loader-batches", type=positive_int, default=40,
                   help="timed batches of the loader alone per setting")
    p.add_argument("--loader-steps", type=positive_int, default=20, help="timed training steps per loader setting")
    p.add_argument("--name", help="name of the stored run (default: '<recipe name> sweep')")
    p.add_argument("--json", action="store_true", help="print one JSON object with the run ID and all points")


def spec_from_args(args: argparse.Namespace, recipe: Any) -> Any:
    """The ``SweepSpec`` the command line describes (shared with tests)."""
    from workbench.analysis.sweep import SweepSpec

    caches = {"both": [False, True], "on": [True], "off": [False]}[args.cache]
    sizes = [] if args.skip_batch else (args.batch_sizes or list(recipe.bench.batch_sizes))
    return SweepSpec(batch_sizes=sizes, precisions=args.precisions, inference=not args.no_inference,
                     train=not args.no_train, cap_at_max_batch=args.cap_max_batch,
                     latency_budget_ms=args.latency_budget, latency_key=f"{args.budget_on}_ms", iters=args.iters,
                     train_steps=args.train_steps, workers=args.workers,
                     pin_memory=[False, True] if args.pin_memory else [False], cache=caches,
                     loader_batches=args.loader_batches, loader_train_steps=args.loader_steps)


def handler(args: argparse.Namespace) -> int:
    from workbench.analysis.sweep import run_sweep
    from workbench.core.events import CancelToken
    from workbench.core.store import RunStore
    from workbench.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    spec = spec_from_args(args, recipe)
    cancel = CancelToken()
    with RunStore() as store, CliReporter(quiet=args.json) as reporter:
        try:
            outcome = run_sweep(recipe, spec, store=store, reporter=reporter, cancel=cancel, name=args.name)
        except KeyboardInterrupt:
            cancel.cancel()
            print("cancelled", file=sys.stderr)
            return EXIT_CANCELLED
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status, "error": outcome.error or None,
                          "sweep": outcome.summary.get("sweep", {}), "environment": outcome.summary.get("environment")},
                         default=str))
    elif outcome.summary.get("sweep"):
        print_sweep(outcome.run_id, outcome.summary["sweep"])
    if outcome.status == "cancelled":
        return EXIT_CANCELLED
    if outcome.status == "failed":
        print(f"error: {error_line(outcome.error)}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR if outcome.error.startswith("internal error") else EXIT_USER_ERROR
    return 0


def print_sweep(run_id: int, sw: dict[str, Any]) -> None:
    """Human-readable tables of a sweep (stdout)."""
    from rich.table import Table

    console = plain_console()
    best = (sw.get("budget") or {}).get("best")
    rows = [("inference", p) for p in sw.get("inference") or []] + [("train", p) for p in sw.get("train") or []]
    if rows:
        t = Table(title=f"Sweep run {run_id}: batch size x precision")
        for col in ("Kind", "Precision", "Batch", "p50 ms", "p95 ms", "Samples/s", ""):
            t.add_column(col, justify="right")
        for kind, p in rows:
            mark = "within budget, best" if best is not None and p == best else ""
            t.add_row(kind, p["precision"], str(p["batch_size"]), f"{p['p50_ms']:.3f}", f"{p['p95_ms']:.3f}",
                      f"{p['throughput']:,.0f}", mark)
        console.print(t)
    if sw.get("budget"):
        console.print(sw["budget"]["message"])
    ip = sw.get("inference_paired")
    if ip:
        for prec, by_batch in ip["against_reference"].items():
            text = ", ".join(f"batch {b}: {e['ratio']:.2f}x (95 % CI {e['ci95'][0]:.2f}–{e['ci95'][1]:.2f}x)"
                             for b, e in by_batch.items())
            console.print(f"{prec} against {ip['reference']}, paired ({ip['rounds']} interleaved rounds): {text}")
        if not ip["reliable"]:
            console.print(f"unreliable: {ip['reason']}", style="yellow")
    ld = sw.get("loader") or {}
    if ld.get("points"):
        t = Table(title=f"DataLoader settings (batch {ld['batch_size']})")
        for col in ("Setting", "Loader alone samples/s", "Training samples/s", "Waiting for data", "Verdict"):
            t.add_column(col, justify="right")
        for p in ld["points"]:
            t.add_row(p["label"] + (" (default)" if p["is_default"] else ""), f"{p['loader_samples_per_s']:,.0f}",
                      f"{p['train_samples_per_s'] or 0:,.0f}", f"{(p['data_wait_fraction'] or 0):.0%}",
                      p["verdict"]["kind"])
        console.print(t)
        if ld.get("speedup"):
            console.print(f"best: {ld['best']['label']}, {ld['speedup']:.2f}x the default's training samples/s")
            m = ld.get("measurement") or {}
            if m.get("caveat"):
                console.print(m["caveat"], style="yellow")
        dflt = ld.get("default") or {}
        v = dflt.get("verdict") or {}
        if v:
            console.print(f"default setting: {v['message']}")
            for s in v.get("suggestions") or []:
                console.print(f"  - {s}")
    for s in (sw.get("skipped") or []) + (ld.get("skipped") or []):
        console.print(f"not measured: {s['what']}: {s['reason']}", style="yellow")


COMMANDS = [Command("sweep", "sweep batch sizes, precisions and loader settings of a recipe (one stored run)", configure, handler)]
