"""Recipe panels, one per recipe section: the core sections' here, each technique's in its own folder.

A panel module declares its class with ``@register_panel(order=...)``; ``panel_classes`` imports the
core panel modules listed in ``CORE_PANELS`` and each technique's ``panel.py`` (from the one list in
``workbench.techniques``), and the main window shows them in ``order``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from workbench.gui.panels.base import FieldErrors, PanelHost, RecipePanel

#: The core sections' panels, in this package.
CORE_PANELS = ("model", "data", "train", "precision", "batching", "loader", "bench")

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
    """Every panel class, core sections' and techniques', in display order."""
    from workbench import techniques

    for name in CORE_PANELS:
        importlib.import_module(f"{__name__}.{name}")
    techniques.panel_modules()
    return [cls for _order, cls in sorted(_REGISTRY.values(), key=lambda oc: oc[0])]


__all__ = ["CORE_PANELS", "FieldErrors", "PanelHost", "RecipePanel", "panel_classes", "register_panel"]
