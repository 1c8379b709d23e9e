"""The ``[prune]`` recipe section. Pruning: remove channels (structured) or zero weights (unstructured), then fine-tune."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.recipe.base import Section

SECTION = "prune"


class PruneSection(Section):
    method: Literal["structured", "unstructured"] = "structured"
    ratio: float = Field(0.5, gt=0.0, lt=1.0)
    importance: Literal["l1", "l2", "bn_scale", "taylor"] = "l2"
    scope: Literal["global", "uniform"] = "uniform"
    skip_layers: list[str] = Field(default_factory=list, description="Module names never pruned.")
    steps: int = Field(1, ge=1, le=100, description="Iterative pruning steps.")
    finetune_epochs: int = Field(2, ge=0, le=1000)
    finetune_distill: bool = Field(False, description="Use the unpruned model as teacher while fine-tuning.")
    finetune_lr: float = Field(1e-3, gt=0.0, le=10.0)
    finetune_temperature: float = Field(4.0, gt=0.0, le=100.0, description="KD temperature when finetune_distill.")
    finetune_alpha: float = Field(0.7, ge=0.0, le=1.0, description="KD loss weight when finetune_distill.")
    round_to: int = Field(1, ge=1, le=64, description="Structured: keep channel counts multiples of this (1 = off).")


SECTION_MODEL = PruneSection


def label(section: PruneSection) -> str:
    """What a run with this section is called in tables and charts."""
    return f"prune-{section.method}-{section.ratio:g}"
