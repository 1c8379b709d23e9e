"""The core recipe sections: model, data, train, precision, batching, loader and bench.

Each is a pydantic model with ``extra="forbid"``, so a typo is an error rather than a silently
ignored key. Technique sections live in their technique's ``config.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from workbench.recipe.base import Section

#: Data sources that decode files per sample, where ``data.cache`` does something (arrays live in memory).
CACHED_SOURCES = ("default", "image_folder")


ZooName = Literal["mlp", "small_cnn", "mobilenet", "resnet", "transformer"]


class ModelSection(Section):
    """Which model to load. ``source`` picks the loader; ``num_classes`` defaults to the data's."""

    source: Literal["zoo", "python", "torchscript", "export", "onnx"] = "zoo"
    zoo: ZooName = "small_cnn"
    path: str = Field("", description="Model file for python/torchscript/export/onnx sources.")
    class_name: str = Field("", description="The nn.Module class in a .py file, or a factory function that "
                            "returns one (e.g. ResNet18); empty: the file's only nn.Module class.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Constructor kwargs (python and zoo).")
    weights: str = Field("", description="Optional .safetensors or .pt (weights_only) or run:ID.")
    width: float = Field(1.0, gt=0.0, le=8.0, description="Zoo width multiplier.")

    @property
    def label(self) -> str:
        """How runs, weights and bundles name this model: the zoo name, or the file and class/factory."""
        if self.source == "zoo":
            return self.zoo
        name = Path(self.path).name
        if self.source == "python" and self.class_name.strip():
            return f"{self.class_name.strip()} from {name}"
        return f"{self.source}:{name}"


class DataSection(Section):
    source: Literal["default", "synthetic", "image_folder", "csv", "npz", "mnist"] = "default"
    path: str = ""
    label_column: str = Field("label", description="CSV column holding the class label.")
    eval_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of all samples held out to report accuracy on."
    )
    val_fraction: float = Field(
        0.1, gt=0.0, lt=1.0,
        description="Share of the rest held out as the validation split, to choose on (budgets, sensitivity).",
    )
    seed: int = 0
    image_size: int = Field(32, ge=8, le=1024, description="Images are resized to this square size.")
    augment: bool = Field(True, description="Train-split augmentation on/off; augment_crop and augment_flip "
                          "pick the kinds.")
    augment_crop: bool = Field(True, description="Random crop after 4-pixel padding (when augment is on).")
    augment_flip: bool = Field(False, description="Random horizontal flip (when augment is on). Off by default: a "
                               "mirror image changes the class of digits, letters and other handed things.")
    normalize: bool = True
    cache: bool = Field(True, description="Keep decoded samples in memory after the first epoch.")
    limit: int = Field(0, ge=0, description="Use at most this many samples (0 = all).")
    # synthetic source only
    synthetic_shape: list[int] = Field(default_factory=lambda: [3, 32, 32])
    synthetic_classes: int = Field(10, ge=2)
    synthetic_samples: int = Field(2048, ge=8)
    # default source only: samples per class of the generated shapes dataset
    samples_per_class: int = Field(500, ge=20, le=20000)

    @model_validator(mode="before")
    @classmethod
    def _augment_as_written_before_the_switches(cls, data: Any) -> Any:
        """A recipe from before augment_crop/augment_flip: ``augment = true`` meant crop + flip, and still does."""
        if isinstance(data, dict) and "augment" in data and not {"augment_crop", "augment_flip"} & data.keys():
            data = {**data, "augment_flip": data["augment"]}
        return data

    @property
    def augmentations(self) -> list[str]:
        """The train-time augmentations in effect, e.g. ['crop'] (empty when off)."""
        if not self.augment:
            return []
        return [name for name, on in (("crop", self.augment_crop), ("flip", self.augment_flip)) if on]

    @field_validator("synthetic_shape")
    @classmethod
    def _positive_shape(cls, v: list[int]) -> list[int]:
        if not v or any(d <= 0 for d in v):
            raise ValueError("must be a non-empty list of positive ints, e.g. [3, 32, 32]")
        return v


class TrainSection(Section):
    epochs: int = Field(3, ge=0, le=1000, description="0 skips training (evaluate/benchmark only).")
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(3e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    schedule: Literal["none", "cosine", "step", "onecycle"] = "onecycle"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    max_steps: int = Field(0, ge=0, description="Stop after this many optimizer steps (0 = no cap).")
    log_every: int = Field(10, ge=1, description="Report metrics every N steps.")


class PrecisionSection(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    autocast: Literal["none", "bf16", "fp16"] = "none"
    grad_scaler: Literal["auto", "on", "off"] = Field(
        "auto", description="Loss scaling; auto = on for fp16 autocast on CUDA."
    )
    channels_last: bool = False
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    tf32: bool = False


class BatchingSection(Section):
    batch_size: int = Field(64, ge=1, le=65536)
    eval_batch_size: int = Field(256, ge=1, le=65536)
    grad_accum_steps: int = Field(1, ge=1, le=1024)
    find_max_batch: bool = Field(False, description="Search the largest batch that fits (reported, not applied).")
    memory_budget_gb: float = Field(0.0, ge=0.0, description="CPU max-batch budget (0 = 50% of free RAM).")
    safety_margin: float = Field(0.1, ge=0.0, lt=0.9)
    length_aware: bool = Field(False, description="Token data: batch sentences of similar length and pad each "
                               "batch only to its longest member (no effect on other data).")


class LoaderSection(Section):
    num_workers: int = Field(0, ge=0, le=64)
    pin_memory: bool = False
    prefetch_factor: int = Field(2, ge=1, le=64)
    persistent_workers: bool = True
    drop_last: bool = True
    mp_context: Literal["spawn", "forkserver"] = Field(
        "forkserver", description="Never fork: forking a process with Qt threads can deadlock."
    )


class BenchSection(Section):
    enabled: bool = True
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64])
    runtimes: list[Literal["eager", "compile", "onnxruntime"]] = Field(default_factory=lambda: ["eager"])
    warmup: int = Field(5, ge=0, le=10000)
    iters: int = Field(50, ge=3, le=100000)
    min_time_s: float = Field(0.0, ge=0.0, le=600.0, description="Keep timing until this much time passed.")
    max_time_s: float = Field(10.0, gt=0.0, le=3600.0, description="Stop timing one case after this long.")
    threads: int = Field(0, ge=0, le=1024, description="torch/ORT intra-op threads (0 = auto: one per core that "
                         "other processes leave free).")
    paired: bool = Field(True, description="After optimization stages, time the baseline and every stage's result "
                         "in interleaved rounds in one process (the speedup with its confidence interval).")
    rounds: int = Field(10, ge=5, le=1000, description="Interleaved rounds of the paired timing (at least 5).")
    telemetry_hz: float = Field(4.0, gt=0.0, le=100.0)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError("must be a non-empty list of batch sizes >= 1")
        return v
