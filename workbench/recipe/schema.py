"""The recipe: one versioned, validated TOML file describing a whole experiment.

The core sections (``sections.py``) and one section per technique (each technique's ``config.py``,
gathered in ``workbench.techniques`` order) make up ``Recipe``. Every section is a pydantic model
with ``extra="forbid"``, so a typo is an error rather than a silently ignored key. ``load_recipe`` turns every validation problem into a
``RecipeError`` whose message names the field, the value and what is allowed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from workbench.errors import RecipeError, short
from workbench.recipe.sections import (
    CACHED_SOURCES,
    BatchingSection,
    BenchSection,
    DataSection,
    LoaderSection,
    ModelSection,
    PrecisionSection,
    TrainSection,
)
from workbench.techniques import technique_configs

RECIPE_VERSION = 1
#: A recipe is a page of settings; anything this large is the wrong file.
MAX_RECIPE_BYTES = 1 << 20


class RecipeBase(BaseModel):
    """The core of a recipe; ``Recipe`` adds one optional section per technique (``None`` when off)."""

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

    @model_validator(mode="after")
    def _combinations(self) -> RecipeBase:
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
        return [*self.runtime_techniques(trained=True), *(label for _, label in self.section_techniques())]

    def runtime_techniques(self, trained: bool) -> list[str]:
        """Labels of the core settings: how the model runs (always), and how it trains when ``trained``."""
        out: list[str] = []
        if self.precision.autocast != "none":
            out.append(self.precision.autocast)
        if self.precision.channels_last:
            out.append("channels_last")
        if self.precision.compile:
            out.append("compile")
        if not trained:
            return out
        if self.batching.grad_accum_steps > 1:
            out.append(f"accum{self.batching.grad_accum_steps}")
        if self.loader.num_workers:
            out.append(f"workers{self.loader.num_workers}")
        if self.data.cache and self.data.source in CACHED_SOURCES:
            out.append("cache")
        return out

    def section_techniques(self) -> list[tuple[str, str]]:
        """(section name, label) of each technique that is on, in chain order (its stage has that name)."""
        out: list[tuple[str, str]] = []
        for config in technique_configs():
            section = getattr(self, config.SECTION, None)
            if section is not None:
                out.append((config.SECTION, config.label(section)))
        return out


def _assemble() -> type[RecipeBase]:
    """``Recipe``: the core sections plus each technique's section, in the techniques' order."""
    fields: dict[str, Any] = {c.SECTION: (c.SECTION_MODEL | None, None) for c in technique_configs()}
    return create_model("Recipe", __base__=RecipeBase, __doc__="A whole experiment. Optional sections are "
                        "``None`` when the technique is off.", __module__=__name__, **fields)


Recipe = _assemble()


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
