"""The ``[early_exit]`` recipe section. Early exits: easy inputs leave the network at an earlier head."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from workbench.recipe.base import Section

SECTION = "early_exit"


class EarlyExitSection(Section):
    exits: list[str] = Field(default_factory=list, description="Module names to attach exit heads after "
                             "(empty = the zoo model's stage boundaries).")
    mode: Literal["joint", "heads_only"] = Field("joint", description="joint: fine-tune backbone and heads together "
                                                 "(BranchyNet); heads_only: train the heads on a frozen backbone.")
    epochs: int = Field(3, ge=1, le=1000, description="Epochs of joint or heads-only training.")
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="Learning rate of that training.")
    loss_weights: list[float] = Field(default_factory=list, description="Loss weight per exit, the final head last "
                                      "(empty = 1.0 each).")
    rule: Literal["max_prob", "entropy"] = Field("max_prob", description="Exit when the max softmax probability "
                                                 "reaches the threshold, or when 1 − normalised entropy does.")
    max_drop: float = Field(1.0, ge=0.0, le=100.0, description="Accuracy budget in points against the full model, "
                            "checked on the validation split when choosing the threshold.")
    threshold: float = Field(0.0, ge=0.0, le=1.01, description="A fixed threshold (0 = choose it on validation).")
    bundle_dir: str = Field("", description="Also write ONNX segments + a runner here (empty = only in the run).")
    force: bool = Field(False, description="Overwrite an existing bundle_dir.")

    @field_validator("loss_weights")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if any(w < 0 for w in v):
            raise ValueError("loss weights must be >= 0")
        return v


SECTION_MODEL = EarlyExitSection


def label(section: EarlyExitSection) -> str:
    """What a run with this section is called in tables and charts."""
    return "early-exit"
