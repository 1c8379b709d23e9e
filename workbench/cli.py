"""Command line: ``workbench`` opens the app; subcommands run the very same engine headless.

User errors print one line and exit 2; internal errors print where the traceback was logged
and exit 1; a cancelled run (Ctrl-C) exits 130. Runs are recorded whatever happens.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from workbench import RESOURCES
from workbench.errors import WorkbenchError, short

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_CANCELLED = 130

#: Subcommands added by technique modules: name -> (configure parser, handler). See ``add_command``.
_EXTRA_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def add_command(name: str, configure: Callable[[argparse.ArgumentParser], None],
                handler: Callable[[argparse.Namespace], int]) -> None:
    """Register a subcommand (e.g. ``sensitivity``, ``export``, ``quantize``) from its own module."""
    _EXTRA_COMMANDS[name] = (configure, handler)


def quickstart_recipe_path() -> Path:
    return RESOURCES / "recipes" / "quickstart.toml"


#: A safety net for one error line; values inside it are already cut to ``errors.MAX_VALUE_CHARS``.
MAX_ERROR_LINE = 1000


def fail(message: str) -> int:
    """Print one ``error:`` line on stderr (first line of ``message``, cut to a sane length); exit code 2."""
    print(f"error: {error_line(message)}", file=sys.stderr)
    return EXIT_USER_ERROR


def error_line(message: str) -> str:
    line = next((ln for ln in str(message).splitlines() if ln.strip()), str(message)).strip()
    return short(line, MAX_ERROR_LINE)


def plain_console(stderr: bool = False) -> Any:
    """A rich Console that prints user text literally: no markup, emoji codes or highlighting.

    Run names, file names and error messages can contain ``[...]`` or ``:name:``; as markup they
    would be mangled or raise ``MarkupError``. Style whole lines with ``style=`` instead.
    """
    from rich.console import Console

    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short(text)!r}: expected an integer >= {minimum}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value}: must be >= {minimum}")
    return value


class _OneLineArgumentParser(argparse.ArgumentParser):
    """argparse with one ``error:`` line and exit code 2 (no usage block, long values cut)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {error_line(message)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def int_list(text: str, minimum: int = 1, example: str = "1,8,64") -> list[int]:
    """Parse '1,8,64' for argparse; one clear message when it is not a list of ints >= ``minimum``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short(text)!r}: expected comma-separated integers, e.g. {example}") from None
    if not values or any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"{short(text)!r}: expected integers >= {minimum}, e.g. {example}")
    return values



class CliReporter:
    """Rich progress bar + log lines on stderr (stdout stays clean for --json).

    Log text is printed literally (never as markup). Error-level lines are kept, not printed: the
    command prints a failed run's error once, itself. Library ``FutureWarning``/``DeprecationWarning``
    notes relayed from a run go to the debug log (once each), not into the user's output.
    """

    def __init__(self, quiet: bool = False) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = plain_console(stderr=True)
        self.quiet = quiet
        self.errors: list[str] = []
        self._noise_seen: set[str] = set()
        self.progress_bar = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                                     TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
                                     disable=quiet, transient=True)
        self.task: Any = None

    def __enter__(self) -> CliReporter:
        self.progress_bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress_bar.stop()

    # Reporter interface (duck-typed so the CLI does not subclass engine internals needlessly)
    def run_started(self, run_id: int, name: str) -> None:
        self.log(f"run {run_id} ({name}) started")

    def stage_started(self, stage: str, total: int | None = None) -> None:
        if self.task is not None:
            self.progress_bar.remove_task(self.task)
        self.task = self.progress_bar.add_task(stage, total=total)

    def stage_finished(self, stage: str, result: Mapping[str, Any] | None = None) -> None: ...

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        if self.task is not None:
            self.progress_bar.update(self.task, completed=done, total=total, description=message or None)

    def metrics(self, stage: str, step: int, values: Mapping[str, float], t: float | None = None) -> None: ...

    def log(self, message: str, level: str = "info") -> None:
        if level == "error":
            self.errors.append(message)
            return
        if level == "warning" and message.startswith(LIBRARY_NOISE):
            if message not in self._noise_seen:
                self._noise_seen.add(message)
                logging.getLogger("workbench").debug("library warning: %s", message)
            return
        if self.quiet and level != "warning":
            return
        self.console.print(short(message, MAX_ERROR_LINE), style="yellow" if level == "warning" else "dim")


#: Relayed warnings that are a library's note to its own users, not about the user's input.
LIBRARY_NOISE = ("FutureWarning:", "DeprecationWarning:", "PendingDeprecationWarning:")


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: library deprecation notes to the debug log, others one line."""
    if issubclass(category, DeprecationWarning | PendingDeprecationWarning | FutureWarning):
        logging.getLogger("workbench").debug("library warning: %s: %s (%s:%s)", category.__name__, message,
                                             filename, lineno)
        return
    print(f"warning: {category.__name__}: {short(message, MAX_ERROR_LINE)}", file=sys.stderr)


def _fmt(v: Any, kind: str = "") -> str:
    if v is None:
        return "—"
    if kind == "pct":
        return f"{v * 100:.2f} %"
    if kind == "bytes":
        return f"{v / 1e6:.2f} MB"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


ROWS = [("accuracy", "Eval accuracy", "pct"), ("train_samples_per_s", "Training throughput (samples/s)", ""),
        ("params", "Parameters", ""), ("size_bytes", "Size", "bytes")]


def print_summary(summary: Mapping[str, Any]) -> None:
    """The run's table (like with like: latency and throughput at one batch size each) and its speedup lines."""
    from rich.table import Table

    from workbench.core.measure.comparison import compare_run_to_baseline, measured_cases, speedup_sentence

    console = plain_console()
    final, baseline = summary.get("final") or {}, summary.get("baseline")
    table = Table(title=f"Run {summary.get('run_id')}: {summary.get('name', '')} — {summary.get('status', '')}")
    table.add_column("Metric")
    if baseline:
        table.add_column("Baseline", justify="right")
    table.add_column("Final" if baseline else "Value", justify="right")
    if baseline:
        table.add_column("Change", justify="right")
    cmp = compare_run_to_baseline(summary) if baseline else None
    rows: list[tuple[str, Any, Any, str]] = []
    for key, label, kind in ROWS[:1]:
        rows.append((label, _fmt((baseline or {}).get(key), kind), _fmt(final.get(key), kind),
                     _change(key, (baseline or {}).get(key), final.get(key))))
    fc, bc = measured_cases(final), measured_cases(baseline or {})
    speedup = summary.get("speedup")
    if isinstance(speedup, Mapping) and speedup.get("paired"):
        # Show the paired medians, so the figures and the ratio beside them come from the same rounds.
        for b, e in (speedup.get("latency") or {}).items():
            bc[int(b)] = {"p50_ms": e["baseline_ms"], "throughput": int(b) / e["baseline_ms"] * 1e3}
            fc[int(b)] = {"p50_ms": e["final_ms"], "throughput": int(b) / e["final_ms"] * 1e3}
    lat_batch = (cmp or {}).get("latency", {}).get("batch") or (min(fc) if fc else None)
    tput_batch = (cmp or {}).get("throughput", {}).get("batch") or (max(fc) if fc else None)
    if lat_batch is not None:
        change = _ratio_cell(cmp, "latency", "faster")
        rows.append((f"Latency p50 @ batch {lat_batch} (ms)", _fmt(bc.get(lat_batch, {}).get("p50_ms")),
                     _fmt(fc.get(lat_batch, {}).get("p50_ms")), change))
    if tput_batch is not None:
        change = _ratio_cell(cmp, "throughput", "")
        rows.append((f"Inference throughput @ batch {tput_batch} (samples/s)",
                     _fmt(bc.get(tput_batch, {}).get("throughput")), _fmt(fc.get(tput_batch, {}).get("throughput")),
                     change))
    for key, label, kind in ROWS[1:]:
        rows.append((label, _fmt((baseline or {}).get(key), kind), _fmt(final.get(key), kind),
                     _change(key, (baseline or {}).get(key), final.get(key))))
    for label, before, after, change in rows:
        table.add_row(*([label, before, after, change] if baseline else [label, after]))
    console.print(table)
    if isinstance(speedup, Mapping) and speedup.get("paired"):
        console.print(f"Speedup, paired: {speedup_sentence({**speedup, 'reliable': True})}")
        if not speedup.get("reliable"):
            console.print(f"Unreliable measurement: {speedup.get('reason')}", style="yellow")
    elif cmp is not None and summary.get("stages"):
        console.print(cmp["caveat"], style="yellow")
    for stage in summary.get("stages") or []:
        if stage.get("note"):
            console.print(f"{stage['name']}: {stage['note']}", style="yellow")


def _ratio_cell(cmp: Mapping[str, Any] | None, key: str, word: str) -> str:
    """A comparison ratio as a table cell: "5.86x faster (paired)", or why it is not comparable."""
    from workbench.core.measure.comparison import format_ratio

    if not cmp:
        return ""
    entry = cmp.get(key) or {}
    if not entry.get("comparable"):
        return str(entry.get("reason") or "")
    text = f"{format_ratio(entry['ratio'])} {word}".strip()
    if entry.get("ci95"):
        lo, hi = entry["ci95"]
        text += f" (CI {format_ratio(lo)}–{format_ratio(hi)})"
    return text


def _change(key: str, before: Any, after: Any) -> str:
    if not isinstance(before, int | float) or not isinstance(after, int | float) or not before or not after:
        return ""
    if key == "accuracy":
        return f"{(after - before) * 100:+.2f} pts"
    if key in ("size_bytes", "params"):
        return f"{before / after:.2f}x smaller"
    return f"{after / before:.2f}x"


def cmd_run(args: argparse.Namespace) -> int:
    from workbench.core.events import CancelToken
    from workbench.core.store import RunStore
    from workbench.recipe import load_recipe
    from workbench.techniques import run_recipe

    recipe = load_recipe(args.recipe)
    if args.name:
        recipe.name = args.name
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
        table.add_row(str(r.id), r.name, r.model, ", ".join(r.techniques), r.status, _fmt(f.get("accuracy"), "pct"),
                      _fmt(f.get("latency_ms_p50")), _fmt(f.get("throughput")),
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


def cmd_bench(args: argparse.Namespace) -> int:
    from workbench.core.measure.model_file import bench_model_file

    result = bench_model_file(Path(args.model), args.batch_sizes, runtimes=args.runtimes, input_shape=args.shape,
                              iters=args.iters, threads=args.threads)
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    from rich.table import Table

    table = Table(title=f"{args.model}: input {result['input_shape']}")
    for col in ("Runtime", "Batch", "p50 ms", "p95 ms", "p99 ms", "CI95 of median", "Samples/s"):
        table.add_column(col, justify="right")
    for runtime, rows in result["runtimes"].items():
        for st in rows:
            lo, hi = st["ci95_median_ms"]
            table.add_row(runtime, str(st["batch_size"]), f"{st['p50_ms']:.3f}", f"{st['p95_ms']:.3f}",
                          f"{st['p99_ms']:.3f}", f"{lo:.3f}–{hi:.3f}", f"{st['throughput']:,.0f}")
    console = plain_console()
    console.print(table)
    console.print(f"threads: {result['threads']['reason']}")
    for note in result.get("notes") or []:
        print(f"note: {note}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineArgumentParser(prog="workbench", description="Acceleration Workbench: make PyTorch models "
                                     "train and run faster, and prove it. With no command, opens the app.")
    parser.add_argument("--screenshot", metavar="DIR", help="render the main window's key states to PNG and exit")
    parser.add_argument("--recipe", metavar="FILE", help="open this recipe in the app")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("run", help="run a recipe headless")
    p.add_argument("recipe")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    p.add_argument("--name", help="override the recipe's name")
    p.add_argument("--benchmark-only", action="store_true", help="skip training and optimization stages")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("runs", help="list stored runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="show one stored run")
    p.add_argument("run_id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("bench", help="benchmark a model file (ONNX, TorchScript, .pt2) on synthetic inputs")
    p.add_argument("model")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 8, 64])
    p.add_argument("--runtimes", default="", help="comma list of eager,compile,onnxruntime (default: what fits)")
    p.add_argument("--shape", default="", help="input shape without batch, e.g. 3,32,32 (for symbolic dims)")
    p.add_argument("--iters", type=positive_int, default=50, help="timed calls per batch size (at least 3)")
    p.add_argument("--threads", type=non_negative_int, default=0, help="intra-op threads (0 = all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    for name, (configure, handler) in _EXTRA_COMMANDS.items():
        p = sub.add_parser(name)
        configure(p)
        p.set_defaults(func=handler)
    return parser


def _load_command_modules() -> None:
    """Technique modules that add subcommands register them on import."""
    import importlib
    import pkgutil

    import workbench.commands

    for info in pkgutil.iter_modules(workbench.commands.__path__, "workbench.commands."):
        importlib.import_module(info.name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (argument errors too: 2, with one line on stderr)."""
    _load_command_modules()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, already printed as one line)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # restored on exit; library deprecation notes stay out of errors
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command is None:
            return launch_app(args)
        return int(args.func(args))
    except WorkbenchError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except OSError as exc:
        if exc.filename is None:
            return _internal_error(exc)
        # a path the user gave that the OS refuses: too long, no permission, not a folder, ...
        return fail(f"{short(exc.filename)}: {exc.strerror or type(exc).__name__}")
    except Exception as exc:
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> int:
    from workbench.core.pipeline import log_internal_error

    path = log_internal_error(exc)
    print(f"internal error: {type(exc).__name__}: {error_line(str(exc))} (full traceback in {path})",
          file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def launch_app(args: argparse.Namespace) -> int:
    """Open the desktop app; without the GUI package, run the quickstart headless instead."""
    try:
        from workbench.gui.app import main as gui_main
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("workbench.gui"):
            raise
        print("GUI not available; running the quickstart recipe headless", file=sys.stderr)
        return cmd_run(argparse.Namespace(recipe=str(quickstart_recipe_path()), json=False, name=None,
                                          benchmark_only=False))
    return int(gui_main(recipe=args.recipe, screenshot_dir=args.screenshot))
