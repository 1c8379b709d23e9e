"""Errors a user can fix. They carry one clear line; the CLI prints it without a traceback."""


class WorkbenchError(Exception):
    """A problem with the user's input (file, field, combination). Message: one line, names the culprit."""


class RecipeError(WorkbenchError):
    """The recipe is invalid: names the field, the value and what is allowed."""


class ModelLoadError(WorkbenchError):
    """A model file could not be loaded (missing, corrupt, unsafe, wrong kind)."""


class DataLoadError(WorkbenchError):
    """A dataset could not be loaded (missing, empty, unreadable, wrong layout)."""


class Cancelled(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by CancelToken.raise_if_cancelled(); the run is recorded as cancelled."""


#: Longest user value quoted in an error line; longer ones are cut (a 600,000-character value once was not).
MAX_VALUE_CHARS = 200


def short(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``str(value)`` cut to ``limit`` characters (with the total length noted) for one-line messages."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"
