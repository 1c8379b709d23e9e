"""The ``[distill]`` recipe section. Knowledge distillation: train the recipe's model (the student) from a bigger teacher."""

from __future__ import annotations

from pydantic import Field

from workbench.recipe.base import Section

SECTION = "distill"


class DistillSection(Section):
    teacher: str = Field("", description="zoo:NAME, run:ID, or a model file path.")
    teacher_weights: str = Field("", description="Weights for a zoo:/python teacher (.safetensors or .pt).")
    teacher_width: float = Field(1.0, gt=0.0, le=8.0, description="Width multiplier of a zoo:NAME teacher.")
    teacher_epochs: int = Field(0, ge=0, description="Train the teacher first when it has no weights.")
    temperature: float = Field(4.0, gt=0.0, le=100.0)
    alpha: float = Field(0.7, ge=0.0, le=1.0)
    control: bool = Field(False, description="Also train the student alone for comparison.")
    cache_teacher_logits: bool = Field(True, description="Reuse teacher logits across epochs (only when data.augment = false).")


SECTION_MODEL = DistillSection


def label(section: DistillSection) -> str:
    """What a run with this section is called in tables and charts."""
    return "distill"
