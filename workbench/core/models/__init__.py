"""Models: the built-in zoo, loaders for user model files and weights, and size/compute summaries."""

from workbench.core.models.loaders import (
    LoadedModel,
    check_model_data_compat,
    load_model,
    load_weights,
    save_weights,
)
from workbench.core.models.summary import LayerRow, ModelSummary, summarize, summarize_onnx
from workbench.core.models.zoo import ZOO, build_zoo_model, make_divisible

__all__ = [
    "ZOO",
    "LayerRow",
    "LoadedModel",
    "ModelSummary",
    "build_zoo_model",
    "check_model_data_compat",
    "load_model",
    "load_weights",
    "make_divisible",
    "save_weights",
    "summarize",
    "summarize_onnx",
]
