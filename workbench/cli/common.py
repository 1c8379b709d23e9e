"""What every command shares: exit codes, one-line errors, argument types, the progress reporter.

User errors print one line and exit 2; internal errors print where the traceback was logged
and exit 1; a cancelled run (Ctrl-C) exits 130. Runs are recorded whatever happens.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from workbench.errors import short

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_CANCELLED = 130


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, how it reads its arguments and what it runs.

    Each command module (``workbench/cli/*.py`` and ``workbench/techniques/*/cli.py``) lists its
    commands in ``COMMANDS``; ``cli.main`` builds the parser from those lists.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


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


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short(text)!r}: expected a number > 0, e.g. 10") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{short(text)}: must be a finite number > 0, e.g. 10")
    return value


def unit_float(text: str) -> float:
    """argparse type: a number from 0 to 1 (thresholds such as a cosine similarity)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short(text)!r}: expected a number from 0 to 1, e.g. 0.99") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{short(text)}: must be from 0 to 1, e.g. 0.99")
    return value


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short(text)!r}: expected an integer >= {minimum}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value}: must be >= {minimum}")
    return value


class OneLineArgumentParser(argparse.ArgumentParser):
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


def show_warning_quietly(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: library deprecation notes to the debug log, others one line."""
    if issubclass(category, DeprecationWarning | PendingDeprecationWarning | FutureWarning):
        logging.getLogger("workbench").debug("library warning: %s: %s (%s:%s)", category.__name__, message,
                                             filename, lineno)
        return
    print(f"warning: {category.__name__}: {short(message, MAX_ERROR_LINE)}", file=sys.stderr)


