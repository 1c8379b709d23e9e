"""``workbench report RUN_ID... --out report.html``: one self-contained HTML page for non-engineers.

The first run is the baseline. ``--csv``/``--json`` export every number the page shows.
"""

from __future__ import annotations

import argparse
import sys

from workbench.cli.common import EXIT_CANCELLED, CliReporter, Command


def configure(p: argparse.ArgumentParser) -> None:
    p.description = ("Write one HTML file (no external assets) comparing stored runs: headline, before/after "
                     "table, accuracy-vs-latency Pareto chart, sweep charts, telemetry, loader verdict, sample "
                     "predictions, environment and exact recipes. The first run is the baseline.")
    p.add_argument("run_ids", nargs="+", type=int, metavar="RUN_ID")
    p.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    p.add_argument("--csv", nargs="?", const="", default=None, metavar="FILE",
                   help="also export every number as CSV (default name: next to --out)")
    p.add_argument("--json", nargs="?", const="", default=None, metavar="FILE",
                   help="also export every number as JSON (default name: next to --out)")
    p.add_argument("--no-predictions", action="store_true", help="skip rebuilding models for sample predictions")
    p.add_argument("--force", action="store_true", help="replace existing output files")


def handler(args: argparse.Namespace) -> int:
    from pathlib import Path

    from workbench.analysis.report import write_report
    from workbench.core.events import CancelToken
    from workbench.core.store import RunStore

    out = Path(args.out)
    csv_path = (args.csv or str(out.with_suffix(".csv"))) if args.csv is not None else None
    json_path = (args.json or str(out.with_suffix(".json"))) if args.json is not None else None
    cancel = CancelToken()
    with RunStore() as store, CliReporter() as reporter:
        try:
            report = write_report(store, args.run_ids, out, csv_path=csv_path, json_path=json_path,
                                  predictions=not args.no_predictions, reporter=reporter, cancel=cancel,
                                  overwrite=args.force)
        except KeyboardInterrupt:
            cancel.cancel()
            print("cancelled", file=sys.stderr)
            return EXIT_CANCELLED
    head = (report.data.get("headline") or {}).get("text", "")
    print(f"wrote {out}" + (f": {head}" if head else ""))
    for extra in (csv_path, json_path):
        if extra:
            print(f"wrote {extra}")
    return 0


COMMANDS = [Command("report", "write a self-contained HTML report of stored runs (first = baseline)", configure, handler)]
