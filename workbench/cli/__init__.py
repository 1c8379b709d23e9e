"""Command line: ``workbench`` opens the app; subcommands run the very same engine headless.

``main`` (``main.py``) builds the parser from each command module's ``COMMANDS``: ``run``/``runs``/``show``,
``bench``, ``sweep`` and ``report`` here, plus each technique's ``cli.py``. ``common.py`` holds what they
share (exit codes, one-line errors, argument types, the progress reporter).
"""

from workbench.cli.common import (
    EXIT_CANCELLED,
    EXIT_INTERNAL_ERROR,
    EXIT_USER_ERROR,
    MAX_ERROR_LINE,
    CliReporter,
    Command,
    error_line,
    fail,
    int_list,
    non_negative_int,
    plain_console,
    positive_int,
)
from workbench.cli.main import main

__all__ = ["EXIT_CANCELLED", "EXIT_INTERNAL_ERROR", "EXIT_USER_ERROR", "MAX_ERROR_LINE", "CliReporter", "Command",
           "error_line", "fail", "int_list", "main", "non_negative_int", "plain_console", "positive_int"]
