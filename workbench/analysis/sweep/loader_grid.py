"""DataLoader settings (workers x pin_memory x cache), each timed alone and inside real training steps."""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from workbench.analysis.sweep.spec import CACHEABLE_SOURCES, LoaderConfig, LoaderPoint, SweepSpec
from workbench.core.diagnose import loader_verdict
from workbench.core.events import CancelToken, Reporter
from workbench.core.measure.timing import fixed_threads, time_callable
from workbench.core.precision import (
    PrecisionPlan,
    prepare_module,
    unwrap,
)
from workbench.errors import WorkbenchError
from workbench.recipe import Recipe


def _cuda_target(recipe: Recipe) -> bool:
    d = recipe.precision.device
    return torch.cuda.is_available() and d in ("auto", "cuda")


def loader_configs(recipe: Recipe, spec: SweepSpec) -> tuple[LoaderConfig, list[LoaderConfig], list[dict[str, str]]]:
    """(default, configurations to measure with the default first, skipped-with-reason).

    Combinations that cannot differ on this machine are skipped rather than measured twice:
    ``pin_memory`` only changes copies to a CUDA device, and ``cache`` only applies to data
    decoded from image files.
    """
    cuda = _cuda_target(recipe)
    cacheable = recipe.data.source in CACHEABLE_SOURCES
    default = LoaderConfig(recipe.loader.num_workers, bool(recipe.loader.pin_memory and cuda),
                           bool(recipe.data.cache and cacheable))
    skipped: list[dict[str, str]] = []
    pins = list(dict.fromkeys(spec.pin_memory or [False]))
    if not cuda and True in pins:
        skipped.append({"what": "pin_memory = true", "reason": "pinned memory only speeds up copies to a CUDA GPU; "
                        "this run has none, so it would measure the same as unpinned"})
        pins = [False]
    caches = list(dict.fromkeys(spec.cache if spec.cache is not None else [recipe.data.cache]))
    if not cacheable and True in caches:
        skipped.append({"what": "cache = true", "reason": f"data.source = {recipe.data.source!r} is already in "
                        "memory; data.cache only applies to image files"})
        caches = [False]
    configs = [LoaderConfig(w, p, c) for w, p, c in itertools.product(spec.workers or [0], pins, caches)]
    configs = [default] + [c for c in configs if c != default]
    return default, configs, skipped


class _Batches:
    """An endless stream of batches over a DataLoader (a new epoch starts when one ends)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.it: Iterator[Any] = iter(loader)

    def __call__(self) -> Any:
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)


def _close_loader(loader: Any) -> None:
    """Stop persistent workers now rather than whenever the garbage collector gets to them."""
    it = getattr(loader, "_iterator", None)
    shutdown = getattr(it, "_shutdown_workers", None)
    if callable(shutdown):
        with contextlib.suppress(Exception):  # best effort: never fail a sweep while tidying up
            shutdown()
    if it is not None:
        loader._iterator = None


def loader_sweep(
    recipe: Recipe,
    spec: SweepSpec,
    *,
    module: nn.Module | None = None,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Measure every loader configuration of ``spec``: loader alone and training steps with it.

    Returns ``{"batch_size", "points": [LoaderPoint dicts], "default", "best", "speedup",
    "skipped", "notes"}``; ``speedup`` is best over default training samples/s. ``module``
    defaults to the recipe's model (each configuration trains its own copy from the same start).
    """
    from workbench.core.models import load_model
    from workbench.core.precision import resolve_precision

    reporter = reporter or Reporter()
    cancel = cancel or CancelToken()
    plan = resolve_precision(recipe.precision)
    default, configs, skipped = loader_configs(recipe, spec)
    batch = recipe.batching.batch_size
    points: list[LoaderPoint] = []
    notes = ["figures are steady state: worker start-up and the first batches are excluded, and with "
             "cache on the images are decoded once before timing (what every epoch after the first sees)"]
    base = unwrap(module).cpu() if module is not None else None
    stage = "sweep:loader"
    reporter.stage_started(stage, len(configs))
    with fixed_threads(recipe.bench.threads if spec.threads is None else spec.threads):
        for i, cfg in enumerate(configs):
            cancel.raise_if_cancelled()
            reporter.progress(i, len(configs), f"loader: {cfg.label}")
            variant = recipe.model_copy(deep=True)
            variant.data.cache = cfg.cache
            variant.loader.num_workers = cfg.num_workers
            variant.loader.pin_memory = cfg.pin_memory
            variant.loader.persistent_workers = True  # start-up paid once per configuration, then steady state
            if base is None:
                from workbench.core.data import load_dataset

                bundle = load_dataset(variant.data)
                base = load_model(recipe.model, bundle.num_classes, tuple(bundle.input_shape)).module
                if base is None:
                    raise WorkbenchError("the loader sweep trains the model; an ONNX model cannot be trained")
                if bundle.kind == "tokens":
                    from workbench.core.models.token_inputs import wrap_for_tokens

                    base = wrap_for_tokens(base, bundle.preprocess["token_inputs"])
            point = _measure_loader_config(variant, cfg, spec, plan, base, f"{stage}:{i}", reporter, cancel)
            point.is_default = cfg == default
            points.append(point)
            reporter.metrics(stage, i, {"num_workers": cfg.num_workers, "pin_memory": float(cfg.pin_memory),
                                        "cache": float(cfg.cache), "loader_samples_per_s": point.loader_samples_per_s,
                                        "train_samples_per_s": point.train_samples_per_s or 0.0,
                                        "data_wait_fraction": point.data_wait_fraction or 0.0})
            reporter.log(f"sweep: loader {cfg.label}: loader alone {point.loader_samples_per_s:,.0f} samples/s, "
                         f"training {point.train_samples_per_s or 0:,.0f} samples/s, {point.verdict['kind']} "
                         f"({(point.data_wait_fraction or 0):.0%} waiting for data)")
    reporter.stage_finished(stage, {"points": len(points)})
    out: dict[str, Any] = {"batch_size": batch, "points": [p.to_dict() for p in points], "skipped": skipped,
                           "notes": notes, "default": None, "best": None, "speedup": None,
                           "cores": os.cpu_count()}
    if points:
        dflt = next(p for p in points if p.is_default)
        best = max(points, key=lambda p: p.train_samples_per_s or 0.0)
        out.update(default=dflt.to_dict(), best=best.to_dict())
        if dflt.train_samples_per_s and best.train_samples_per_s:
            out["speedup"] = best.train_samples_per_s / dflt.train_samples_per_s
    return out


def _measure_loader_config(variant: Recipe, cfg: LoaderConfig, spec: SweepSpec, plan: PrecisionPlan,
                           base: nn.Module, stage: str, reporter: Reporter, cancel: CancelToken) -> LoaderPoint:
    """One configuration on ONE DataLoader: loader alone first, then training steps with it.

    Sharing the loader means persistent workers start once; both measurements skip their first
    batches (worker start-up, filling the prefetch queue), so they are steady state.
    """
    from workbench.core.data import build_loader, load_dataset
    from workbench.core.train import WARMUP_STEPS, train

    batch = variant.batching.batch_size
    bundle = load_dataset(variant.data)  # fresh datasets: one configuration's cache never helps another
    if cfg.cache and hasattr(bundle.train, "preload"):
        bundle.train.preload()
    loader = build_loader(bundle.train, batch, variant.loader, train=True, seed=variant.train.seed)
    try:
        if len(loader) == 0:
            raise WorkbenchError(f"batching.batch_size = {batch} is larger than the {len(bundle.train)} "
                                 "training samples; lower it")
        stream = _Batches(loader)
        warm = cfg.num_workers * variant.loader.prefetch_factor + 2
        st = time_callable(stream, batch_size=batch, warmup=warm, iters=max(3, spec.loader_batches),
                           max_time_s=max(10.0, spec.loader_batches * 0.5), cancel=cancel)
        loader_sps = batch / (st.mean_ms / 1e3) if st.mean_ms > 0 else math.inf
        steps = WARMUP_STEPS + max(3, spec.loader_train_steps)
        tcfg = variant.train.model_copy(update={"max_steps": steps, "epochs": min(1000, steps // len(loader) + 2),
                                                "log_every": max(1, steps // 4)})
        m = prepare_module(copy.deepcopy(base), plan)
        tr = train(m, loader, None, tcfg, variant.batching, plan, reporter, cancel, stage=stage)
        del m
    finally:
        _close_loader(loader)
        del loader
    verdict = loader_verdict(tr.data_wait_s, tr.compute_s, variant)
    return LoaderPoint(cfg.num_workers, cfg.pin_memory, cfg.cache, batch, loader_sps, tr.train_samples_per_s,
                       tr.data_wait_s, tr.compute_s, tr.data_wait_fraction, verdict.to_dict(), label=cfg.label)
