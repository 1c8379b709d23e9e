"""The recipe package: core sections, the assembled ``Recipe`` and TOML in/out.

Names resolve lazily (PEP 562): technique ``config.py`` modules import ``workbench.recipe.base``,
and the assembled ``Recipe`` imports those configs, so nothing here may import eagerly.
"""

from __future__ import annotations

import importlib
from typing import Any

_FROM: dict[str, str] = {
    "Section": "workbench.recipe.base",
    **dict.fromkeys(("CACHED_SOURCES", "ZooName", "ModelSection", "DataSection", "TrainSection", "PrecisionSection",
                     "BatchingSection", "LoaderSection", "BenchSection"), "workbench.recipe.sections"),
    **dict.fromkeys(("RECIPE_VERSION", "MAX_RECIPE_BYTES", "Recipe", "RecipeBase", "recipe_from_dict", "load_recipe",
                     "loads_recipe", "recipe_to_dict", "dumps_recipe", "save_recipe", "check_device_support",
                     "default_recipe"), "workbench.recipe.schema"),
    # Technique sections, re-exported for convenience (they are defined in each technique's config.py).
    "PruneSection": "workbench.techniques.prune.config",
    "DistillSection": "workbench.techniques.distill.config",
    "QuantizeSection": "workbench.techniques.quantize.config",
    "ExportSection": "workbench.techniques.export.config",
    "EarlyExitSection": "workbench.techniques.early_exit.config",
    "DistributedSection": "workbench.techniques.distributed.config",
}

__all__ = sorted(_FROM)


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench.recipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
