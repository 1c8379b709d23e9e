"""The ``[quantize]`` recipe section. Quantization: INT8 (onnxruntime dynamic/static, torch dynamic) or fp16, with an accuracy budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.recipe.base import Section

SECTION = "quantize"

#: Why ``method = "auto"`` picks what it picks (the panel and the run's record say it).
AUTO_REASONS = {
    "static": "convolutional model: static INT8 quantizes the convolutions (dynamic INT8 leaves them float "
              "and measured 0.20–0.45x of fp32 on CNNs here)",
    "dynamic": "no convolutions: dynamic INT8 needs no calibration and speeds up Linear/MatMul-heavy models",
}


class QuantizeSection(Section):
    method: Literal["auto", "dynamic", "static", "fp16", "torch_dynamic"] = Field(
        "auto", description="auto: static INT8 for convolutional models, dynamic for linear/attention ones (what "
        "this project measured faster on each; see the panel).")
    per_channel: bool = True
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(256, ge=1, le=100000)
    preprocess: bool = True
    max_accuracy_drop: float = Field(0.0, ge=0.0, le=100.0, description="Points; 0 disables accuracy-aware mode.")
    exclude: list[str] = Field(default_factory=list, description="PyTorch module names kept in float.")


SECTION_MODEL = QuantizeSection


def label(section: QuantizeSection) -> str:
    """What a run with this section is called in tables and charts."""
    if section.method == "fp16":
        return "fp16"
    return "int8" if section.method == "auto" else f"int8-{section.method}"  # the run names the method it chose
