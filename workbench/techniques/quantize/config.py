"""The ``[quantize]`` recipe section. Quantization: INT8 (onnxruntime dynamic/static, torch dynamic) or fp16, with an accuracy budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.recipe.base import Section

SECTION = "quantize"


class QuantizeSection(Section):
    method: Literal["dynamic", "static", "fp16", "torch_dynamic"] = "dynamic"
    per_channel: bool = True
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(256, ge=1, le=100000)
    preprocess: bool = True
    max_accuracy_drop: float = Field(0.0, ge=0.0, le=100.0, description="Points; 0 disables accuracy-aware mode.")
    exclude: list[str] = Field(default_factory=list, description="PyTorch module names kept in float.")


SECTION_MODEL = QuantizeSection


def label(section: QuantizeSection) -> str:
    """What a run with this section is called in tables and charts."""
    return f"int8-{section.method}" if section.method != "fp16" else "fp16"
