"""`workbench export` and `workbench quantize`: deployment from the command line.

    workbench export RUN_ID|RECIPE [--formats onnx,pt2,safetensors] [--bundle DIR] [--force]
                                   [--quantize keep|none|dynamic|static|fp16] [--no-bench] [--json]
    workbench quantize MODEL.onnx --method dynamic|static|fp16 [--calib DATA] [--samples N]
                                  [--calibration minmax|entropy|percentile] [--no-per-channel]
                                  [--out OUT.onnx] [--shape 3,32,32] [--batch 32] [--data DATA]
                                  [--bench] [--force] [--json]

``export RUN_ID`` re-creates the run's model from its stored recipe and trained weights (no
training), then runs the quantize (as in that run, unless ``--quantize`` says otherwise) and
export stages as a new, recorded run; ``export RECIPE`` runs the recipe with the export settings
given. ``quantize`` works on any single-input ONNX file, including models Workbench has never
seen: with ``--calib`` it calibrates on that data, otherwise on synthetic inputs (and says that
ranges from noise are rough).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from workbench.cli.common import Command, error_line
from workbench.errors import WorkbenchError, short


def _configure_export(p: argparse.ArgumentParser) -> None:
    p.description = "Export a run's model (or a recipe's) to ONNX/pt2/safetensors and write a deployment bundle"
    p.add_argument("source", help="a run ID (see `workbench runs`) or a recipe .toml file")
    p.add_argument("--formats", default="", help="comma list of onnx,pt2,safetensors (default: the recipe's, "
                   "else onnx)")
    p.add_argument("--bundle", default=None, metavar="DIR", help="write a deployment bundle folder here")
    p.add_argument("--force", action="store_true", help="overwrite an existing bundle folder")
    p.add_argument("--quantize", default="keep", choices=["keep", "none", "dynamic", "static", "fp16"],
                   help="quantize before export (keep = as the run/recipe did)")
    p.add_argument("--opset", type=_opset, default=None, help="ONNX opset, 13 to 23 (default: the recipe's, 18)")
    p.add_argument("--no-bench", action="store_true", help="skip latency measurement (accuracy and parity only)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")


EXPORT_FORMATS = ("onnx", "pt2", "safetensors")


def _opset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short(text)!r}: expected an ONNX opset number from 13 to 23") from None
    if not 13 <= value <= 23:
        raise argparse.ArgumentTypeError(f"{value}: ONNX opsets 13 to 23 are supported (18 is a safe default)")
    return value


def _formats(text: str) -> list[str]:
    """--formats as a list, or a one-line error naming the unknown entries."""
    names = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [n for n in names if n not in EXPORT_FORMATS]
    if not names or bad:
        raise WorkbenchError(f"--formats {short(text)!r}: unknown format {short(', '.join(bad) or 'none given')}; "
                             f"choose a comma list of {', '.join(EXPORT_FORMATS)}, e.g. onnx,pt2")
    return list(dict.fromkeys(names))


def _recipe_for_export(args: argparse.Namespace) -> Any:
    from workbench.core.store import RunStore
    from workbench.recipe import ExportSection, QuantizeSection, load_recipe, loads_recipe

    src = str(args.source)
    if src.isdigit() and not Path(src).exists():
        with RunStore() as store:
            run = store.get_run(int(src))
        if run is None:
            raise WorkbenchError(f"no run with ID {src} (see `workbench runs`)")
        recipe = loads_recipe(run.recipe, f"run {src}")
        if recipe.model.source == "onnx":
            pass  # the ONNX file is the model; nothing to re-load
        else:
            if recipe.prune is not None or recipe.distill is not None:
                raise WorkbenchError(f"run {src} used pruning/distillation, which changes the model; export it by "
                                     "adding an [export] section to its recipe and running that")
            recipe.model.weights = f"run:{src}"
        recipe.train.epochs = 0
        recipe.name = f"{recipe.name}-export"
    else:
        recipe = load_recipe(src)
    export = recipe.export or ExportSection()
    if args.formats:
        export.formats = _formats(args.formats)
    if args.bundle is not None:
        export.bundle_dir = args.bundle
    if args.force:
        export.force = True
    if args.opset is not None:
        export.opset = args.opset
    recipe.export = export
    if args.quantize == "none":
        recipe.quantize = None
    elif args.quantize != "keep":
        recipe.quantize = (recipe.quantize or QuantizeSection()).model_copy(update={"method": args.quantize})
    if args.no_bench:
        recipe.bench.enabled = False
    return recipe


def cmd_export(args: argparse.Namespace) -> int:
    from workbench.cli.common import CliReporter
    from workbench.cli.summary import print_summary
    from workbench.core.events import CancelToken
    from workbench.core.store import RunStore
    from workbench.techniques import run_recipe
    from workbench.techniques.export.bundle import check_bundle_target, resolve_bundle_dir

    if args.formats:
        _formats(args.formats)  # before reading anything: the error names the flag
    recipe = _recipe_for_export(args)
    if recipe.export.bundle_dir:  # refuse before loading and measuring anything
        check_bundle_target(resolve_bundle_dir(recipe.export.bundle_dir), recipe.export.force)
    cancel = CancelToken()
    with RunStore() as store, CliReporter(quiet=args.json) as reporter:
        try:
            outcome = run_recipe(recipe, store=store, reporter=reporter, cancel=cancel)
        except KeyboardInterrupt:
            cancel.cancel()
            print("cancelled", file=sys.stderr)
            return 130
    export_rec = next((s for s in outcome.summary.get("stages", []) if s.get("name") == "export"), {})
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status, "error": outcome.error or None,
                          "bundle": export_rec.get("bundle"), "formats": export_rec.get("formats"),
                          "baseline": outcome.summary.get("baseline"), "final": outcome.summary.get("final"),
                          "stages": outcome.summary.get("stages")}, default=str))
    elif outcome.status == "completed":
        print_summary(outcome.summary)
        for fmt, rec in (export_rec.get("formats") or {}).items():
            p = rec["parity"]
            print(f"{fmt}: {rec['path']} ({rec['size_bytes'] / 1e6:.2f} MB), max abs error {p['max_abs_err']:.2e}, "
                  f"top-1 agreement {p['top1_agreement'] * 100:.2f} %")
        if export_rec.get("bundle"):
            print(f"bundle: {export_rec['bundle']}")
    if outcome.status == "failed":
        print(f"error: {error_line(outcome.error)}", file=sys.stderr)
        return 1 if outcome.traceback_path is not None else 2
    return 130 if outcome.status == "cancelled" else 0


# ----------------------------------------------------------------------------------- quantize


COMMANDS = [Command("export", "export a stored run or a recipe: ONNX/.pt2/safetensors, verified, and a deployment bundle", _configure_export, cmd_export)]
