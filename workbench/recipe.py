"""The recipe: one versioned, validated TOML file describing a whole experiment.

Each technique owns one section (a pydantic model with ``extra="forbid"``), so a typo is an
error rather than a silently ignored key. ``load_recipe`` turns every validation problem into a
``RecipeError`` whose message names the field, the value and what is allowed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.errors import RecipeError, short

RECIPE_VERSION = 1
#: A recipe is a page of settings; anything this large is the wrong file.
MAX_RECIPE_BYTES = 1 << 20


class Section(BaseModel):
    """Base for recipe sections: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class DistillSection(Section):
    teacher: str = Field("", description="zoo:NAME, run:ID, or a model file path.")
    teacher_weights: str = Field("", description="Weights for a zoo:/python teacher (.safetensors or .pt).")
    teacher_width: float = Field(1.0, gt=0.0, le=8.0, description="Width multiplier of a zoo:NAME teacher.")
    teacher_epochs: int = Field(0, ge=0, description="Train the teacher first when it has no weights.")
    temperature: float = Field(4.0, gt=0.0, le=100.0)
    alpha: float = Field(0.7, ge=0.0, le=1.0)
    control: bool = Field(False, description="Also train the student alone for comparison.")
    cache_teacher_logits: bool = Field(True, description="Reuse teacher logits across epochs (only when data.augment = false).")


class QuantizeSection(Section):
    method: Literal["dynamic", "static", "fp16", "torch_dynamic"] = "dynamic"
    per_channel: bool = True
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(256, ge=1, le=100000)
    preprocess: bool = True
    max_accuracy_drop: float = Field(0.0, ge=0.0, le=100.0, description="Points; 0 disables accuracy-aware mode.")
    exclude: list[str] = Field(default_factory=list, description="PyTorch module names kept in float.")


class ExportSection(Section):
    formats: list[Literal["onnx", "pt2", "safetensors"]] = Field(default_factory=lambda: ["onnx"])
    opset: int = Field(18, ge=13, le=23)
    bundle_dir: str = Field("", description="Write a deployment bundle here (empty = none).")
    force: bool = Field(False, description="Overwrite an existing bundle.")
    parity_batches: int = Field(4, ge=1, le=1000)
    ort_threads: int = Field(0, ge=0, le=1024)
    ort_optimization: Literal["disable", "basic", "extended", "all"] = "all"


class Recipe(BaseModel):
    """A whole experiment. Optional sections are ``None`` when the technique is off."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    version: Literal[1] = RECIPE_VERSION
    name: str = "experiment"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    precision: PrecisionSection = Field(default_factory=PrecisionSection)
    batching: BatchingSection = Field(default_factory=BatchingSection)
    loader: LoaderSection = Field(default_factory=LoaderSection)
    bench: BenchSection = Field(default_factory=BenchSection)
    prune: PruneSection | None = None
    distill: DistillSection | None = None
    quantize: QuantizeSection | None = None
    export: ExportSection | None = None

    @model_validator(mode="after")
    def _combinations(self) -> Recipe:
        if self.model.source == "onnx" and self.train.epochs > 0:
            raise ValueError(
                "model.source = 'onnx' cannot be trained: set train.epochs = 0 (ONNX is for evaluation and benchmarks)"
            )
        if self.model.source != "zoo" and not self.model.path:
            raise ValueError(f"model.path is required when model.source = {self.model.source!r}")
        if self.data.source not in ("default", "synthetic") and not self.data.path:
            raise ValueError(f"data.path is required when data.source = {self.data.source!r}")
        if self.precision.autocast == "fp16" and self.precision.device == "cpu":
            raise ValueError("precision.autocast = 'fp16' needs CUDA; on CPU use 'bf16'")
        if self.precision.grad_scaler == "on" and self.precision.autocast != "fp16":
            raise ValueError("precision.grad_scaler = 'on' only applies to fp16 autocast; use 'auto' or 'off'")
        return self

    @property
    def techniques(self) -> list[str]:
        """Short labels of what this recipe changes versus a plain fp32 run (for tables and charts)."""
        out: list[str] = []
        if self.precision.autocast != "none":
            out.append(self.precision.autocast)
        if self.precision.channels_last:
            out.append("channels_last")
        if self.precision.compile:
            out.append("compile")
        if self.batching.grad_accum_steps > 1:
            out.append(f"accum{self.batching.grad_accum_steps}")
        if self.loader.num_workers:
            out.append(f"workers{self.loader.num_workers}")
        if self.data.cache and self.data.source in CACHED_SOURCES:
            out.append("cache")
        if self.prune:
            out.append(f"prune-{self.prune.method}-{self.prune.ratio:g}")
        if self.distill:
            out.append("distill")
        if self.quantize:
            out.append(f"int8-{self.quantize.method}" if self.quantize.method != "fp16" else "fp16")
        if self.export:
            out.append("export")
        return out


def _format_error(err: ValidationError, source: str) -> str:
    """One line per problem: 'FILE: field.path = value: reason'."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "recipe"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            section = ".".join(str(p) for p in e["loc"][:-1])
            allowed = _allowed_keys(section)
            lines.append(f"{source}: unknown key {loc!r}; allowed keys here: {', '.join(allowed)}")
            continue
        if e["type"] == "model_type" and loc != "recipe":
            lines.append(f"{source}: {loc} must be a table: write [{loc}] followed by key = value lines")
            continue
        if loc == "recipe":
            lines.append(f"{source}: {msg}")
            continue
        lines.append(f"{source}: {loc} = {short(repr(e.get('input')))}: {short(msg)}")
    return "; ".join(lines)


def _allowed_keys(section: str) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in filter(None, section.split(".")):
        ann = model.model_fields[part].annotation
        candidates = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return []
        model = candidates[0]
    return sorted(model.model_fields)


def recipe_from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    if "version" in data and data["version"] != RECIPE_VERSION:
        raise RecipeError(f"{source}: version = {short(repr(data['version']))}: this Workbench reads version "
                          f"{RECIPE_VERSION}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_format_error(exc, source)) from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a TOML recipe; any problem becomes a one-line ``RecipeError``."""
    p = Path(path)
    try:
        if not p.exists():
            raise RecipeError(f"{p}: recipe file not found")
        if p.is_dir():
            raise RecipeError(f"{p}: is a folder; give a .toml recipe file")
        if not p.is_file():  # a FIFO or device would block (or never end) when read
            raise RecipeError(f"{p}: not a regular file (a pipe, socket or device); give a .toml recipe file")
        if p.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{p}: {p.stat().st_size:,} bytes is far too large for a recipe (at most "
                              f"{MAX_RECIPE_BYTES:,}); give a .toml recipe file")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{p}: not a text file; a recipe is UTF-8 TOML") from None
    except OSError as exc:
        raise RecipeError(f"{short(p)}: cannot read the recipe ({exc.strerror or type(exc).__name__})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{p}: invalid TOML: {short(exc)}") from None
    if not data:
        raise RecipeError(f"{p}: the recipe is empty, so it would silently run the whole default experiment; "
                          "write the settings you want (start from resources/recipes/quickstart.toml)")
    return recipe_from_dict(data, str(p))


def loads_recipe(text: str, source: str = "recipe") -> Recipe:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{source}: invalid TOML: {short(exc)}") from None
    return recipe_from_dict(data, source)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return recipe.model_dump(mode="json", exclude_none=True)


def dumps_recipe(recipe: Recipe) -> str:
    return tomli_w.dumps(recipe_to_dict(recipe))


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a recipe."""
    from workbench.core.fileio import atomic_write_text

    atomic_write_text(Path(path), dumps_recipe(recipe))


def check_device_support(recipe: Recipe, cuda_available: bool) -> None:
    """Reject combinations this machine cannot run, before anything starts."""
    p = recipe.precision
    wants_cuda = p.device == "cuda" or (p.device == "auto" and cuda_available)
    if p.device == "cuda" and not cuda_available:
        raise RecipeError("precision.device = 'cuda': no CUDA device on this machine; use 'auto' or 'cpu'")
    if p.autocast == "fp16" and not wants_cuda:
        raise RecipeError("precision.autocast = 'fp16' needs CUDA and this machine has none; use 'bf16' on CPU")
    if p.tf32 and not wants_cuda:
        raise RecipeError("precision.tf32 = true only applies on CUDA; set it to false on this CPU-only machine")


def default_recipe() -> Recipe:
    return Recipe()
