"""Recipe panels, one per recipe section, found by a registry so a new technique is one new file.

To add a panel (e.g. for ``[prune]``): copy ``loader.py`` to ``prune.py``, set ``section_name``,
``title``, ``description`` (and ``optional = True`` for a section that is ``None`` when off),
declare its controls in ``build`` and keep the ``@register_panel(order=...)`` decorator. Every
module in this package is imported by ``panel_classes()``, and the main window shows the panels
in ``order``: nothing else needs to change.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from workbench.gui.panels.base import FieldErrors, PanelHost, RecipePanel

_REGISTRY: dict[str, tuple[int, type[RecipePanel]]] = {}


def register_panel(order: int) -> Callable[[type[RecipePanel]], type[RecipePanel]]:
    """Class decorator: show this panel in the window, sorted by ``order`` (lower first)."""

    def deco(cls: type[RecipePanel]) -> type[RecipePanel]:
        if not cls.section_name:
            raise TypeError(f"{cls.__name__} must set section_name")
        _REGISTRY[cls.section_name] = (order, cls)
        return cls

    return deco


def panel_classes() -> list[type[RecipePanel]]:
    """Every registered panel class, in display order (imports all panel modules first)."""
    for info in pkgutil.iter_modules(__path__, f"{__name__}."):
        if info.name.rsplit(".", 1)[-1] != "base":
            importlib.import_module(info.name)
    return [cls for _order, cls in sorted(_REGISTRY.values(), key=lambda oc: oc[0])]


__all__ = ["FieldErrors", "PanelHost", "RecipePanel", "panel_classes", "register_panel"]
