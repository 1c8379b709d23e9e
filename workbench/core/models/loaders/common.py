"""What every model-file loader shares: the loaded-model record, path checks, quiet loggers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.errors import ModelLoadError

KINDS = ("zoo", "python", "torchscript", "export", "onnx")


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@dataclass
class LoadedModel:
    """A model ready for the pipeline.

    ``input_shape`` excludes the batch dim. For ``onnx`` it is the graph's declared input shape with
    symbolic dims filled in from the data (the raw graph shape, ``None`` for symbolic dims, is kept
    in ``declared_input_shape``, batch dim included).
    """

    module: nn.Module | None
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    onnx_path: Path | None = None
    description: str = ""
    declared_input_shape: tuple[int | None, ...] | None = None
    declared_num_classes: int | None = None

    @property
    def trainable(self) -> bool:
        """True where optimizer steps work: zoo, python and torchscript modules (see module doc)."""
        return self.module is not None and self.kind in ("zoo", "python", "torchscript")

    @property
    def label(self) -> str:
        return self.description or self.kind


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message, prefixed with its type name."""
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(line) > 200:
        line = line[:197] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def exit_call(exc: BaseException) -> str:
    """How user code tried to stop the process, for a one-line error (we never let it)."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})" if exc.code is not None else "called sys.exit()"
    return "raised KeyboardInterrupt"


def check_model_path(path: str | Path, what: str, hint: str) -> Path:
    """Resolve ``path`` and make sure it is an existing, non-empty regular file.

    A FIFO, socket or device is refused before anything opens it: reading one blocks forever.
    """
    if not str(path).strip():
        raise ModelLoadError(f"no {what} path given; {hint}")
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"{p}: {what} not found; {hint}")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a folder, not a {what}; {hint}")
    if not p.is_file():
        raise ModelLoadError(f"{p}: not a regular file (a pipe, socket or device); {hint}")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p}: file is empty; {hint}")
    return p


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a library logger that prints tracebacks for errors we turn into one line anyway."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def shape_str(shape: tuple[Any, ...] | list[Any] | torch.Size) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
