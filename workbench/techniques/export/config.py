"""The ``[export]`` recipe section. Export: ONNX, torch.export .pt2 and safetensors files, verified, and an optional deployment bundle."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.recipe.base import Section

SECTION = "export"


class ExportSection(Section):
    formats: list[Literal["onnx", "pt2", "safetensors"]] = Field(default_factory=lambda: ["onnx"])
    opset: int = Field(18, ge=13, le=23)
    bundle_dir: str = Field("", description="Write a deployment bundle here (empty = none).")
    force: bool = Field(False, description="Overwrite an existing bundle.")
    parity_batches: int = Field(4, ge=1, le=1000)
    ort_threads: int = Field(0, ge=0, le=1024)
    ort_optimization: Literal["disable", "basic", "extended", "all"] = "all"


SECTION_MODEL = ExportSection


def label(section: ExportSection) -> str:
    """What a run with this section is called in tables and charts."""
    return "export"
