"""``workbench sensitivity RECIPE``: which layers can be pruned cheaply, and which should be skipped.

Pruning and distillation themselves run through ``workbench run`` (the ``[prune]`` and
``[distill]`` recipe sections); this module adds the analysis that helps write those sections.
"""

from __future__ import annotations

import argparse
import json
import sys

from workbench.cli.common import CliReporter, Command, plain_console


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number between 0 and 1, e.g. 0.5") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: the ratio must be between 0 and 1 (exclusive), e.g. 0.5")
    return value


def _points(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:200]!r}: expected accuracy points, e.g. 1.0") from None
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"{value:g}: accuracy points lie between 0 and 100, e.g. 1.0")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    p.description = ("Prune each layer group alone at --ratio (no fine-tuning) and report the validation accuracy "
                     "drop (the choice is made on validation; runs report on eval); put the most sensitive groups "
                     "into prune.skip_layers.")
    p.add_argument("recipe")
    p.add_argument("--ratio", type=_ratio, default=None, help="fraction of channels to remove (default: prune.ratio "
                   "or 0.5)")
    p.add_argument("--max-drop", type=_points, default=1.0, help="suggest skipping groups losing more points than "
                   "this (>= 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def handler(args: argparse.Namespace) -> int:
    from workbench.core.budget import over_budget
    from workbench.core.events import CancelToken
    from workbench.core.store import RunStore
    from workbench.recipe import load_recipe
    from workbench.techniques.prune.sensitivity import sensitivity_for_recipe

    recipe = load_recipe(args.recipe)
    cancel = CancelToken()
    with RunStore() as store, CliReporter(quiet=args.json) as reporter:
        try:
            result = sensitivity_for_recipe(recipe, ratio=args.ratio, store=store, reporter=reporter, cancel=cancel)
        except KeyboardInterrupt:
            cancel.cancel()
            print("cancelled", file=sys.stderr)
            return 130
    suggested = result.most_sensitive(args.max_drop)
    if args.json:
        print(json.dumps({**result.to_dict(), "suggested_skip_layers": suggested}))
        return 0
    from rich.table import Table

    table = Table(title=f"Pruning sensitivity: {result.model}, {result.ratio:.0%} of channels per group "
                        f"({result.importance}); unpruned {result.split} accuracy {result.base_accuracy:.2%}")
    table.add_column("Group (root layer)", no_wrap=True)
    for col in ("Type", "Coupled", "Channels", "Removed", "Params removed", "Val accuracy", "Drop (pts)"):
        table.add_column(col, justify="left" if col == "Type" else "right")
    for r in result.rows:
        style = "red" if over_budget(r.drop, args.max_drop) else None
        table.add_row(r.group, r.type, str(r.coupled_layers), str(r.channels), str(r.channels_removed),
                      f"{r.params_removed:,}", f"{r.accuracy:.2%}", f"{r.drop:+.2f}", style=style)
    console = plain_console()
    console.print(table)
    if suggested:
        # markup=False: rich would swallow "[prune]" as a style tag
        console.print(f"suggested: [prune] skip_layers = {json.dumps(suggested)}  (drop > {args.max_drop:g} points)",
                      markup=False)
    else:
        console.print(f"no group loses more than {args.max_drop:g} points at this ratio")
    return 0


COMMANDS = [Command("sensitivity", "which layers tolerate pruning: per-group accuracy drop on the validation split", configure, handler)]
