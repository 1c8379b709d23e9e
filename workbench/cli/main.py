"""The ``workbench`` entry point: with no command it opens the app; subcommands run the engine headless."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from workbench.cli.common import (
    EXIT_CANCELLED,
    EXIT_INTERNAL_ERROR,
    EXIT_USER_ERROR,
    OneLineArgumentParser,
    error_line,
    fail,
    show_warning_quietly,
)
from workbench.errors import WorkbenchError, short


def command_modules() -> list[ModuleType]:
    """The modules whose ``COMMANDS`` make up the CLI: the core commands, then each technique's."""
    from workbench import techniques
    from workbench.cli import accelerate, bench, profile, report, run, sweep

    return [run, bench, sweep, accelerate, report, profile, *techniques.cli_modules()]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="workbench", description="Acceleration Workbench: make PyTorch models "
                                     "train and run faster, and prove it. With no command, opens the app.")
    parser.add_argument("--screenshot", metavar="DIR", help="render the main window's key states to PNG and exit")
    parser.add_argument("--recipe", metavar="FILE", help="open this recipe in the app")
    sub = parser.add_subparsers(dest="command")
    for module in command_modules():
        for command in module.COMMANDS:
            p = sub.add_parser(command.name, help=command.help)
            command.configure(p)
            p.set_defaults(func=command.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (argument errors too: 2, with one line on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, already printed as one line)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    with warnings.catch_warnings():
        warnings.showwarning = show_warning_quietly  # restored on exit; library deprecation notes stay out of errors
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
        from workbench.cli.run import cmd_run
        from workbench.core.paths import quickstart_recipe_path

        return cmd_run(argparse.Namespace(recipe=str(quickstart_recipe_path()), json=False, name=None,
                                          benchmark_only=False))
    return int(gui_main(recipe=args.recipe, screenshot_dir=args.screenshot))
