"""``workbench run``, ``runs`` and ``show``: run a recipe headless, list stored runs, show one."""

from __future__ import annotations

import argparse
import json
import sys
import time

from workbench.cli.common import (
    EXIT_CANCELLED,
    EXIT_INTERNAL_ERROR,
    EXIT_USER_ERROR,
    CliReporter,
    Command,
    error_line,
    fail,
    plain_console,
)
from workbench.cli.summary import format_value, print_summary


def cmd_run(args: argparse.Namespace) -> int:
    from workbench.core.events import CancelToken
    from workbench.core.store import RunStore
    from workbench.recipe import load_recipe
    from workbench.techniques import run_recipe

    recipe = load_recipe(args.recipe)
    if args.name:
        recipe.name = args.name
    if args.node_commands or (recipe.distributed is not None and recipe.distributed.nnodes > 1):
        return _print_node_commands(args.recipe, recipe)
    cancel = CancelToken()
    with RunStore() as store, CliReporter(quiet=args.json) as reporter:
        try:
            outcome = run_recipe(recipe, store=store, reporter=reporter, cancel=cancel,
                                 benchmark_only=args.benchmark_only)
        except KeyboardInterrupt:
            cancel.cancel()
            print("cancelled", file=sys.stderr)
            return EXIT_CANCELLED
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status, "error": outcome.error or None,
                          **{k: v for k, v in outcome.summary.items() if k not in ("run_id", "status")}},
                         default=str))
    elif outcome.status == "completed":
        print_summary(outcome.summary)
    if outcome.status == "cancelled":
        return EXIT_CANCELLED
    if outcome.status == "failed":
        print(f"error: {error_line(outcome.error)}", file=sys.stderr)
        if outcome.traceback_path is not None:
            return EXIT_INTERNAL_ERROR
        return EXIT_USER_ERROR
    return 0


def _print_node_commands(path: str, recipe: object) -> int:
    """A multi-machine data-parallel run starts on each machine: print the exact command for each."""
    from workbench.techniques.distributed.launch import node_commands

    if getattr(recipe, "distributed", None) is None:
        return fail(f"{path}: --node-commands needs a [distributed] section in the recipe")
    print("# start this on each machine (the same recipe file on each; node 0 records the run):")
    for k, cmd in enumerate(node_commands(path, recipe)):  # type: ignore[arg-type]
        print(f"# node {k}\n{cmd}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.table import Table

    from workbench.core.store import RunStore

    with RunStore() as store:
        runs = store.list_runs()
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], default=str))
        return 0
    table = Table(title=f"{len(runs)} stored runs")
    for col in ("ID", "Name", "Model", "Techniques", "Status", "Accuracy", "p50 ms", "Throughput", "Date"):
        table.add_column(col)
    for r in runs:
        f = r.final
        table.add_row(str(r.id), r.name, r.model, ", ".join(r.techniques), r.status, format_value(f.get("accuracy"), "pct"),
                      format_value(f.get("latency_ms_p50")), format_value(f.get("throughput")),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)))
    plain_console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from workbench.core.store import RunStore

    with RunStore() as store:
        run = store.get_run(args.run_id)
        if run is None:
            return fail(f"no run with ID {args.run_id} (see `workbench runs`)")
        if args.json:
            print(json.dumps({**run.to_dict(), "recipe": run.recipe}, default=str))
            return 0
        print_summary({**run.summary, "run_id": run.id, "name": run.name, "status": run.status})
        if run.error:
            print(f"error: {run.error}")
        print(f"\nrecipe:\n{run.recipe}")
    return 0


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    p.add_argument("--name", help="override the recipe's name")
    p.add_argument("--benchmark-only", action="store_true", help="skip training and optimization stages")
    p.add_argument("--node-commands", action="store_true",
                   help="print the torchrun command to start on each machine of a [distributed] recipe, then exit")


def _configure_runs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def _configure_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", type=int)
    p.add_argument("--json", action="store_true")


COMMANDS = [
    Command("run", "run a recipe headless", _configure_run, cmd_run),
    Command("runs", "list stored runs", _configure_runs, cmd_runs),
    Command("show", "show one stored run", _configure_show, cmd_show),
]
