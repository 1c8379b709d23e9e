"""The techniques, one folder each. ``TECHNIQUES`` is the one ordered list: the chain order of a run.

A technique folder holds ``config.py`` (its recipe section: ``SECTION``, ``SECTION_MODEL``, ``label``),
``stage.py`` (``STAGE``, the pipeline step), its engine modules and, when it has them, ``cli.py``
(``COMMANDS``) and ``panel.py`` (the GUI panel). Adding a technique is one new folder plus one name
here (docs/ARCHITECTURE.md walks through it). Modules are imported by name, on demand, so importing
this package stays cheap: the recipe schema imports it to find the technique sections.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

#: Every technique, in the order a run chains them: data-parallel training first (it acts on training),
#: then prune → distill → early_exit → quantize → export.
TECHNIQUES: tuple[str, ...] = ("distributed", "prune", "distill", "early_exit", "quantize", "export")


def _module(name: str, part: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}.{part}")


def _optional(name: str, part: str) -> ModuleType | None:
    try:
        return _module(name, part)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}.{part}":
            raise
        return None


def technique_configs() -> list[ModuleType]:
    """Each technique's ``config`` module (its recipe section), in chain order."""
    return [_module(name, "config") for name in TECHNIQUES]


def stages() -> list[Any]:
    """Each technique's pipeline ``Stage``, in chain order."""
    return [_module(name, "stage").STAGE for name in TECHNIQUES]


def cli_modules() -> list[ModuleType]:
    """The techniques' ``cli`` modules (each with ``COMMANDS``), for those that have one."""
    return [m for name in TECHNIQUES if (m := _optional(name, "cli")) is not None]


def panel_modules() -> list[ModuleType]:
    """The techniques' ``panel`` modules (Qt), for those that have one. Only the GUI calls this."""
    return [m for name in TECHNIQUES if (m := _optional(name, "panel")) is not None]


def launchers() -> list[ModuleType]:
    """The techniques' ``launch`` modules: a technique that must start the run itself (several processes)
    offers ``needs_launch(recipe)`` and ``launch(recipe, **kwargs)`` there."""
    return [m for name in TECHNIQUES if (m := _optional(name, "launch")) is not None]


def run_recipe(recipe: Any, **kwargs: Any) -> Any:
    """``core.pipeline.run_recipe`` with every technique's stage: what the CLI and the GUI run.

    A technique whose launcher claims the recipe starts it instead (``[distributed]`` over several
    processes goes through PyTorch's launcher, ``distributed/launch.py``); each rank then runs this pipeline.
    """
    for launcher in launchers():
        if launcher.needs_launch(recipe):
            if kwargs.pop("benchmark_only", False):
                from workbench.errors import RecipeError

                raise RecipeError(
                    f"a [{launcher.SECTION}] recipe cannot run benchmark-only: remove [{launcher.SECTION}] to benchmark"
                )
            return launcher.launch(recipe, **kwargs)
    from workbench.core.pipeline import run_recipe as run_core

    return run_core(recipe, stages=stages(), **kwargs)
