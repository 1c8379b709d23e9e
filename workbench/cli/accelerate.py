"""``workbench accelerate RECIPE``: search for the fastest model within an accuracy budget.

``workbench accelerate-worker STUDY --storage URL`` joins a running search from another process or
machine. The search is one stored run (kind ``accelerate``) and every trial a run of its own.
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
    non_negative_int,
    plain_console,
)


def _duration(text: str) -> float:
    from workbench.analysis.accelerate import parse_duration
    from workbench.errors import RecipeError

    try:
        return parse_duration(text)
    except RecipeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _points(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected accuracy points, e.g. 1.0") from None
    if not 0 <= v <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: the accuracy budget is 0–100 points, e.g. 1.0")
    return v


def configure(p: argparse.ArgumentParser) -> None:
    p.description = ("Search precision, runtime, channels_last, INT8 quantization, structured pruning (and batch "
                     "size for throughput) with Optuna for the fastest model within an accuracy budget. Every "
                     "trial is a stored run timed paired against torch eager fp32; the winner is bundled. Run the "
                     "same command again to resume the search.")
    p.add_argument("recipe")
    p.add_argument("--objective", choices=("latency", "throughput"), default="latency",
                   help="latency: batch-1 speed-up; throughput: samples/s (the batch size is searched too)")
    p.add_argument("--max-drop", type=_points, default=1.0, metavar="POINTS",
                   help="accuracy budget in points on the validation split (default 1.0)")
    p.add_argument("--time-budget", type=_duration, default=600.0, metavar="DURATION",
                   help="when to stop starting trials, e.g. 2m, 10m, 1h (default 10m)")
    p.add_argument("--trials", type=non_negative_int, default=0,
                   help="stop when the study has this many finished trials (default 0: the time budget decides)")
    p.add_argument("--storage", default="", metavar="URL",
                   help="study storage (default: a SQLite file beside the runs database; postgresql://… for a "
                   "cluster)")
    p.add_argument("--study", default="", help="study name (default: derived from the recipe and settings, so "
                   "the same command resumes)")
    p.add_argument("--bundle", default="", metavar="DIR", help="write the winner's deployment bundle here "
                   "(default: in the search's artifacts)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --bundle folder")
    p.add_argument("--finetune-epochs", type=non_negative_int, default=2,
                   help="fine-tuning epochs after pruning in a trial (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the search's result")


def handler(args: argparse.Namespace) -> int:
    from workbench.analysis.accelerate import SearchSettings, run_search
    from workbench.core.events import CancelToken
    from workbench.core.store import RunStore
    from workbench.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    settings = SearchSettings(objective=args.objective, max_drop=args.max_drop, time_budget_s=args.time_budget,
                              trials=args.trials, storage=args.storage, study=args.study, bundle_dir=args.bundle,
                              force=args.force, finetune_epochs=args.finetune_epochs)
    if args.bundle:
        from workbench.techniques.export.bundle import check_bundle_target, resolve_bundle_dir

        check_bundle_target(resolve_bundle_dir(args.bundle), args.force)  # before minutes of search
    cancel = CancelToken()
    with RunStore() as store, CliReporter(quiet=args.json) as reporter:
        try:
            outcome = run_search(recipe, settings, store=store, reporter=reporter, cancel=cancel)
        except KeyboardInterrupt:
            cancel.cancel()
            print("cancelled (finished trials are kept: run the same command to resume)", file=sys.stderr)
            return EXIT_CANCELLED
    acc = outcome.summary.get("accelerate", {})
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status, "error": outcome.error or None,
                          "accelerate": acc}, default=str))
    elif acc.get("trials") is not None:
        print_search(outcome.run_id, acc)
    if outcome.status == "cancelled":
        return EXIT_CANCELLED
    if outcome.status == "failed":
        print(f"error: {error_line(outcome.error)}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR if outcome.error.startswith("internal error") else EXIT_USER_ERROR
    return 0


def print_search(run_id: int, acc: dict[str, Any]) -> None:
    """The trials table, the Pareto front and the Before → After card (stdout)."""
    from rich.table import Table

    from workbench.analysis.accelerate.search import points_delta

    console = plain_console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # a log file or pipe: keep each trial on one line
    front = set(acc.get("pareto") or [])
    ref = acc.get("reference") or {}
    t = Table(title=f"Accelerate run {run_id}: study {acc.get('study')} (vs {ref.get('label', 'the reference')})")
    for col in ("#", "Configuration", "State", "Speed-up (95 % CI)", "Δ acc val", "Δ acc eval", "Smaller", "Run",
                "Pareto"):
        t.add_column(col, justify="left" if col in ("Configuration", "State") else "right")
    for r in acc.get("trials") or []:
        ci = r.get("ci95") or []
        speed = f"{r['speedup']:.2f}x" if r.get("speedup") is not None else ""
        if speed and len(ci) == 2:
            speed += f" ({ci[0]:.2f}–{ci[1]:.2f})"
        t.add_row(str(r["number"]), r["label"], r["state"] + (f": {r['reason']}" if r.get("reason") else ""), speed,
                  points_delta(r.get("drop_points")), points_delta(r.get("eval_drop_points")),
                  f"{r['size_ratio']:.1f}x" if r.get("size_ratio") else "",
                  str(r.get("run_id") or ""), "●" if r["number"] in front else "")
    console.print(t)
    if acc.get("card"):
        console.print(f"Before → After: {acc['card']}")
        best = acc.get("best") or {}
        if best.get("steps"):
            console.print("split by cause: " + " × ".join(f"{s['name']} {s['ratio']:.2f}x" for s in best["steps"]
                                                           if s.get("ratio") is not None))
        if best.get("reliable") is False:
            console.print(f"unreliable timing: {best.get('unreliable_reason')}", style="yellow")
    else:
        console.print(f"no trial within {(acc.get('settings') or {}).get('max_drop')} points on validation",
                      style="yellow")
    bundle = acc.get("bundle") or {}
    if bundle.get("path"):
        console.print(f"bundle: {bundle['path']}" + (f" ({bundle['note']})" if bundle.get("note") else ""))
    elif bundle.get("error"):
        console.print(f"bundle not written: {bundle['error']}", style="yellow")
    console.print(f"search stopped: {acc.get('stopped', '')}; resume with the same command")


def configure_worker(p: argparse.ArgumentParser) -> None:
    p.description = ("Join a running Accelerate search (started with `workbench accelerate RECIPE --storage URL`) "
                     "and run its trials here; trials are shared, none runs twice. The base weights must be at "
                     "the same path on this machine (a shared folder).")
    p.add_argument("study", help="the study name (printed by `workbench accelerate`)")
    p.add_argument("--storage", required=True, metavar="URL", help="the study storage URL, e.g. "
                   "postgresql://user:password@host/db or sqlite:///shared/accelerate.sqlite")
    p.add_argument("--time-budget", type=_duration, default=600.0, metavar="DURATION",
                   help="stop starting trials after this long (default 10m)")
    p.add_argument("--trials", type=non_negative_int, default=0,
                   help="stop when the study has this many finished trials (default 0: the time budget decides)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the trials run here")


def handler_worker(args: argparse.Namespace) -> int:
    from workbench.analysis.accelerate import run_worker
    from workbench.core.events import CancelToken
    from workbench.core.store import RunStore

    cancel = CancelToken()
    with RunStore() as store, CliReporter(quiet=args.json) as reporter:
        try:
            result = run_worker(args.study, args.storage, time_budget_s=args.time_budget, trials=args.trials,
                                store=store, reporter=reporter, cancel=cancel)
        except KeyboardInterrupt:
            cancel.cancel()
            print("cancelled", file=sys.stderr)
            return EXIT_CANCELLED
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(f"worker stopped ({result['stopped']}); trials run here: "
              f"{', '.join(map(str, result['trials_run'])) or 'none'}")
    return 0 if result["stopped"] != "cancelled" else EXIT_CANCELLED


COMMANDS = [
    Command("accelerate", "search for the fastest model within an accuracy budget (Optuna; resumable)",
            configure, handler),
    Command("accelerate-worker", "join a running Accelerate search from another process or machine",
            configure_worker, handler_worker),
]
