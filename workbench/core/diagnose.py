"""Diagnoses drawn from measurements: is a training run waiting on its data loader or on compute?

``train()`` splits every steady-state step into the time spent waiting for the next batch
(``data_wait_s``) and the time spent computing it (``compute_s``). The share of waiting decides
the verdict, and the recipe decides which change to suggest: a suggestion only names a knob the
recipe has not already turned (no "add workers" when it already uses every core).

The thresholds are deliberately coarse. Below ``COMPUTE_BOUND_BELOW`` (10 %) hiding the loader
entirely would gain less than ~1.1x, so it is not where the time goes. Above ``LOADER_BOUND_ABOVE``
(25 %) a faster loader is worth at least ~1.33x, which is larger than the run-to-run noise of a
shared machine. Between the two, both sides matter ("balanced").
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from workbench.recipe import Recipe

LOADER_BOUND_ABOVE = 0.25
COMPUTE_BOUND_BELOW = 0.10

VerdictKind = Literal["loader-bound", "compute-bound", "balanced", "unknown"]

#: Data sources whose samples are decoded from files per sample (where caching and workers matter).
_FILE_SOURCES = ("default", "image_folder")


@dataclass
class Verdict:
    """What limits training speed, how sure we are (the wait share) and what to change."""

    kind: VerdictKind
    wait_fraction: float | None
    message: str
    suggestions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        return cls(d.get("kind", "unknown"), d.get("wait_fraction"), d.get("message", ""),
                   list(d.get("suggestions") or []))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS/Windows
        return os.cpu_count() or 1


def loader_verdict(data_wait_s: float, compute_s: float, recipe: Recipe, *, cores: int | None = None) -> Verdict:
    """Classify a training run as loader-bound, compute-bound or balanced and suggest changes.

    ``data_wait_s``/``compute_s`` are the steady-state totals from ``TrainResult``. ``cores``
    defaults to the CPUs this process may use; worker suggestions never exceed it, because on a
    small machine every extra worker steals a core from the training step itself.
    """
    total = data_wait_s + compute_s
    if total <= 0:
        return Verdict("unknown", None, "no steady-state training steps were measured, so there is no verdict "
                       "(train for more than a few steps)")
    frac = data_wait_s / total
    cores = cores or _cores()
    pct = f"{frac:.0%}"
    if frac >= LOADER_BOUND_ABOVE:
        ceiling = 1.0 / (1.0 - frac) if frac < 1.0 else float("inf")
        msg = (f"loader-bound: each training step spends {pct} of its time waiting for data; a loader that "
               f"kept up would make training up to {ceiling:.1f}x faster")
        return Verdict("loader-bound", frac, msg, _loader_suggestions(recipe, cores, strong=True))
    if frac <= COMPUTE_BOUND_BELOW:
        msg = (f"compute-bound: only {pct} of each step waits for data; the loader keeps up, so speed comes "
               "from the model and its precision, not from the loader")
        return Verdict("compute-bound", frac, msg, _compute_suggestions(recipe))
    msg = (f"balanced: {pct} of each step waits for data; a faster loader and a cheaper step would both "
           "help a little")
    return Verdict("balanced", frac, msg, _loader_suggestions(recipe, cores, strong=False)[:2]
                   + _compute_suggestions(recipe)[:1])


def _loader_suggestions(recipe: Recipe, cores: int, *, strong: bool) -> list[str]:
    data, loader, batching = recipe.data, recipe.loader, recipe.batching
    out: list[str] = []
    max_workers = max(1, cores - 1) if cores > 1 else 1
    if loader.num_workers < max_workers:
        target = min(max_workers, max(loader.num_workers + 1, 2 if cores > 2 else 1))
        out.append(f"more workers: set loader.num_workers = {target} so batches are prepared while the model "
                   f"computes (this machine has {cores} cores; each worker needs one)")
    elif loader.num_workers and loader.prefetch_factor < 4:
        out.append(f"deeper prefetch: loader.prefetch_factor = {loader.prefetch_factor * 2} smooths out slow batches")
    if data.source in _FILE_SOURCES and not data.cache:
        out.append("cache: set data.cache = true so each image is decoded once, not every epoch")
    if data.augment and data.source in (*_FILE_SOURCES, "npz", "mnist"):
        out.append("lighter augmentation: set data.augment = false (or augment fewer samples) if accuracy allows; "
                   "per-sample crops and flips run on the CPU")
    if data.source in _FILE_SOURCES and data.image_size > 64:
        out.append(f"smaller images: data.image_size = {data.image_size} makes decoding and resizing expensive; "
                   "try half of it if the task allows")
    if strong and batching.batch_size < 256:
        out.append(f"larger batch: batching.batch_size = {batching.batch_size * 2} amortises per-batch overhead "
                   "(collation, transfer, Python) over more samples")
    return out


def _fast_low_precision(device: str) -> bool:
    """bf16/fp16 only pay off on a GPU or a CPU with native bf16 (elsewhere bf16 is emulated, slower)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return True
    from workbench.core.hardware import native_bf16_cpu

    return native_bf16_cpu()


def _compute_suggestions(recipe: Recipe) -> list[str]:
    p = recipe.precision
    out: list[str] = []
    if p.autocast == "none" and _fast_low_precision(p.device):
        out.append("lower precision: precision.autocast = 'bf16' (or 'fp16' on CUDA) makes each step cheaper")
    if not p.channels_last and recipe.model.zoo in ("small_cnn", "mobilenet", "resnet"):
        out.append("memory format: precision.channels_last = true often speeds up convolutions")
    if not p.compile:
        out.append("compile: precision.compile = true fuses operations (pays a one-off compile time)")
    out.append("smaller model: prune or distill it, or lower model.width")
    if recipe.loader.num_workers > 1:
        out.append(f"fewer workers: loader.num_workers = {recipe.loader.num_workers} is more than needed; idle "
                   "workers still hold memory, and on a small CPU they compete with the step")
    return out
