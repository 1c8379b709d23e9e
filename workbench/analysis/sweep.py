"""Sweeps: how speed changes with batch size, precision and DataLoader settings, stored as ONE run.

Three grids, each point measured with the honest harness (``bench.time_callable`` / ``bench_torch``):

- **Batch x precision, inference**: latency p50/p95 and throughput per batch size (``bench_torch``).
- **Batch x precision, training**: one optimizer step on a fixed batch, timed after warm-up steps
  (allocator, autograd graph and optimizer state are warm), so the figure is steady state. The
  step's input is already in memory: this is what the *model* can train at, the ceiling a loader
  has to keep up with.
- **Loader**: ``num_workers x pin_memory x cache``. Each configuration is measured twice on the same
  DataLoader (persistent workers, so worker start-up is paid once and excluded): the loader alone
  (samples/s of ``next(batch)``) and full training steps with it (``train()``, which splits every
  step into waiting for data and computing). The split gives a verdict per configuration
  (``diagnose.loader_verdict``).

Why measure loader configurations with real training steps and not only the loader alone: on a
small CPU, worker processes compete with the training step for the same cores, so the loader
configuration that is fastest alone is not always the fastest for training.

Entry points a GUI (or the CLI) calls, all taking a ``Reporter`` and a ``CancelToken`` and
returning plain dataclasses: ``run_sweep`` (creates and fills one stored run of kind ``sweep``),
``batch_sweep`` and ``loader_sweep`` (no store), plus the pure helper ``best_within_budget`` (the Pareto
rule lives in ``engine.pareto``).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from workbench.analysis.pareto import metric_value as _value
from workbench.core.budget import over_budget
from workbench.core.diagnose import loader_verdict
from workbench.core.events import CancelToken, MultiReporter, Reporter, relay_warnings
from workbench.core.hardware import native_bf16_cpu
from workbench.core.measure.paired import ContentionMonitor
from workbench.core.measure.timing import bench_torch, cuda_sync_for, fixed_threads, time_callable
from workbench.core.pipeline import RunOutcome, environment, record_process_exit, record_unfinished_run
from workbench.core.precision import (
    PrecisionPlan,
    make_scaler,
    prepare_module,
    unwrap,
)
from workbench.errors import WorkbenchError
from workbench.recipe import Recipe, dumps_recipe

__all__ = [
    "PRECISIONS",
    "BatchPoint",
    "LoaderConfig",
    "LoaderPoint",
    "SweepOutcome",
    "SweepSpec",
    "batch_sweep",
    "best_within_budget",
    "loader_configs",
    "loader_sweep",
    "precision_plan",
    "run_sweep",
]

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}
#: Data sources decoded from files per sample: the only ones where ``data.cache`` changes anything.
_CACHEABLE_SOURCES = ("default", "image_folder")

P = TypeVar("P")


# ------------------------------------------------------------------------------------ pure helpers


def best_within_budget(
    points: Sequence[P], budget_ms: float, *, latency_key: str = "p95_ms", throughput_key: str = "throughput"
) -> P | None:
    """The highest-throughput point whose latency is within ``budget_ms``, or None if none is.

    Works on dicts (a stored sweep's ``summary["sweep"]["inference"]``) and on ``BatchPoint``s. The
    budget is checked against p95 by default: a latency budget is a promise about slow requests,
    and a median within budget still breaks it one time in two. Ties go to the lower latency.
    """
    best: P | None = None
    best_key: tuple[float, float] | None = None
    for p in points:
        lat, thr = _value(p, latency_key), _value(p, throughput_key)
        if lat is None or thr is None or over_budget(lat, budget_ms):
            continue
        key = (thr, -lat)
        if best_key is None or key > best_key:
            best, best_key = p, key
    return best


# ------------------------------------------------------------------------------------------ specs


@dataclass
class SweepSpec:
    """What to sweep. ``None`` timing fields fall back to the recipe's ``[bench]`` section.

    The loader grid runs only when ``workers`` is set. ``cache`` lists the cache settings to try
    (``[False, True]`` for both).
    """

    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    inference: bool = True
    train: bool = True
    cap_at_max_batch: bool = False
    latency_budget_ms: float | None = None
    latency_key: str = "p95_ms"
    warmup: int | None = None
    iters: int | None = None
    max_time_s: float | None = None
    threads: int | None = None
    train_warmup_steps: int = 3
    train_steps: int = 10
    workers: list[int] | None = None
    pin_memory: list[bool] = field(default_factory=lambda: [False])
    cache: list[bool] | None = None
    loader_batches: int = 40
    loader_train_steps: int = 20

    def __post_init__(self) -> None:
        if not self.batch_sizes and self.workers is None:
            raise WorkbenchError("nothing to sweep: give batch sizes and/or loader workers")
        if any(b < 1 for b in self.batch_sizes):
            raise WorkbenchError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise WorkbenchError(f"unknown precision {bad[0]!r}; choose from {', '.join(PRECISIONS)}")
        if self.workers is not None and any(w < 0 for w in self.workers):
            raise WorkbenchError(f"worker counts must be >= 0, got {self.workers}")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise WorkbenchError(f"latency budget must be > 0 ms, got {self.latency_budget_ms}")
        if self.latency_key not in ("p50_ms", "p95_ms"):
            raise WorkbenchError(f"latency_key must be p50_ms or p95_ms, got {self.latency_key!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BatchPoint:
    """One (kind, precision, batch size) measurement. ``throughput`` is samples/s at the median."""

    kind: str  # "inference" | "train"
    precision: str
    batch_size: int
    p50_ms: float
    p95_ms: float
    throughput: float
    mean_ms: float
    iters: int
    ci95_median_ms: list[float] = field(default_factory=list)
    peak_mem_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoaderConfig:
    num_workers: int
    pin_memory: bool
    cache: bool

    @property
    def label(self) -> str:
        parts = [f"{self.num_workers} worker" + ("" if self.num_workers == 1 else "s"),
                 "cache" if self.cache else "no cache"]
        if self.pin_memory:
            parts.append("pinned")
        return ", ".join(parts)


@dataclass
class LoaderPoint:
    """One loader configuration: the loader alone, training steps with it, and the verdict."""

    num_workers: int
    pin_memory: bool
    cache: bool
    batch_size: int
    loader_samples_per_s: float
    train_samples_per_s: float | None
    data_wait_s: float
    compute_s: float
    data_wait_fraction: float | None
    verdict: dict[str, Any]
    is_default: bool = False
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: A sweep is a stored run like any other; its points are in ``summary["sweep"]``.
SweepOutcome = RunOutcome


# --------------------------------------------------------------------------------------- precision


def precision_plan(recipe: Recipe, precision: str) -> tuple[PrecisionPlan | None, str]:
    """The plan for one precision of the grid, or (None, reason) when this device cannot run it.

    The recipe's other precision choices (device, channels_last, compile) are kept, so the grid
    varies one thing at a time. A note (second item) is returned for runnable-but-odd cases.
    """
    from workbench.core.precision import resolve_precision

    section = recipe.precision.model_copy(update={"autocast": _AUTOCAST[precision], "grad_scaler": "auto"})
    cuda = torch.cuda.is_available()
    on_cuda = section.device == "cuda" or (section.device == "auto" and cuda)
    if precision == "fp16" and not on_cuda:
        return None, "fp16 autocast needs a CUDA GPU and this machine has none; use bf16 on CPU"
    try:
        plan = resolve_precision(section)
    except WorkbenchError as exc:
        return None, str(exc)
    note = ""
    if precision == "bf16" and plan.device.type == "cpu" and not native_bf16_cpu():
        note = "bf16 on this CPU is emulated (no AVX-512 BF16/AMX): expect it slower than fp32"
    return plan, note


class _NoMetrics(Reporter):
    """Passes progress and logs through but drops metrics (the sweep emits its own, keyed by batch)."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        self.inner.progress(done, total, message)

    def log(self, message: str, level: str = "info") -> None:
        self.inner.log(message, level)


# -------------------------------------------------------------------------------------- batch sweep


def _train_step(module: nn.Module, plan: PrecisionPlan, recipe: Recipe, x: torch.Tensor,
                y: torch.Tensor) -> Callable[[], float]:
    from workbench.core.train import make_optimizer

    opt = make_optimizer(module, recipe.train)
    scaler = make_scaler(plan)
    criterion = nn.CrossEntropyLoss()
    module.train()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with plan.autocast():
            loss = criterion(module(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())  # a host sync on every device: the timed call includes all its work

    return step


def batch_sweep(
    module: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    recipe: Recipe,
    spec: SweepSpec,
    *,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Inference and training speed for every (precision, batch size); returns plain dicts.

    Keys: ``inference`` and ``train`` (lists of ``BatchPoint`` dicts), ``skipped`` (what was not
    measured and why), ``notes``, ``max_batch`` (the finder's result when capping was asked for)
    and ``batch_sizes`` (the sizes actually swept). ``module`` is not modified: every precision
    works on its own copy.
    """
    reporter = reporter or Reporter()
    cancel = cancel or CancelToken()
    bench = recipe.bench
    warmup = bench.warmup if spec.warmup is None else spec.warmup
    iters = bench.iters if spec.iters is None else spec.iters
    max_time = bench.max_time_s if spec.max_time_s is None else spec.max_time_s
    threads = bench.threads if spec.threads is None else spec.threads
    shape = tuple(int(d) for d in input_shape)
    base = unwrap(module).cpu()
    out: dict[str, Any] = {"inference": [], "train": [], "skipped": [], "notes": [], "max_batch": None}
    sizes = sorted(set(spec.batch_sizes))

    plans: list[tuple[str, PrecisionPlan]] = []
    for prec in dict.fromkeys(spec.precisions):
        plan, note = precision_plan(recipe, prec)
        if plan is None:
            out["skipped"].append({"what": prec, "reason": note})
            reporter.log(f"sweep: {prec} skipped: {note}", "warning")
            continue
        if note:
            out["notes"].append(f"{prec}: {note}")
            reporter.log(f"sweep: {note}", "warning")
        plans.append((prec, plan))

    if spec.cap_at_max_batch and plans and sizes:
        from workbench.core.batching import find_max_batch

        plan0 = plans[0][1]
        probe = prepare_module(copy.deepcopy(base), plan0)
        try:
            # Start at 2: BatchNorm cannot take a training step on one sample, and 1 fits whenever 2 does.
            res = find_max_batch(probe, shape, plan0, budget_bytes=int(recipe.batching.memory_budget_gb * 2**30),
                                 safety_margin=recipe.batching.safety_margin, start=2, limit=max(sizes),
                                 reporter=reporter, cancel=cancel)
        except (ValueError, RuntimeError) as exc:
            res = None
            out["notes"].append(f"max-batch finder failed ({str(exc).splitlines()[0]}); batch sizes not capped")
        del probe
        if res is not None:
            out["max_batch"] = res.to_dict()
            limit = res.max_batch
            for b in [b for b in sizes if b > limit]:
                out["skipped"].append({"what": f"batch {b}", "reason": f"above the max-batch finder's limit "
                                       f"({limit}) for training in {res.budget_bytes / 2**30:.2f} GiB"})
            sizes = [b for b in sizes if b <= limit]
    out["batch_sizes"] = sizes

    total = len(plans) * len(sizes) * (int(spec.inference) + int(spec.train))
    done = 0
    for prec, plan in plans:
        if spec.inference and sizes:
            cancel.raise_if_cancelled()
            stage = f"sweep:inference:{prec}"
            reporter.stage_started(stage, len(sizes))
            m = prepare_module(copy.deepcopy(base), plan)
            stats = bench_torch(m, shape, sizes, device=str(plan.device), autocast=plan.autocast_dtype,
                                channels_last=plan.channels_last, warmup=warmup, iters=iters, max_time_s=max_time,
                                threads=threads, cancel=cancel, reporter=_NoMetrics(reporter), stage=stage)
            got = {st.batch_size for st in stats}
            for b in sizes:
                if b not in got:
                    out["skipped"].append({"what": f"inference {prec} batch {b}", "reason": "out of device memory"})
            for st in stats:
                p = BatchPoint("inference", prec, st.batch_size, st.p50_ms, st.p95_ms, st.throughput, st.mean_ms,
                               st.iters, list(st.ci95_median_ms), st.peak_mem_bytes)
                out["inference"].append(p.to_dict())
                reporter.metrics(stage, st.batch_size, {"p50_ms": st.p50_ms, "p95_ms": st.p95_ms,
                                                        "throughput": st.throughput})
                reporter.log(f"sweep: inference {prec} batch {st.batch_size}: p50 {st.p50_ms:.3f} ms, "
                             f"p95 {st.p95_ms:.3f} ms, {st.throughput:,.0f} samples/s")
            done += len(sizes)
            reporter.stage_finished(stage, {"points": len(stats)})
            del m
        if spec.train and sizes:
            stage = f"sweep:train:{prec}"
            reporter.stage_started(stage, len(sizes))
            for i, b in enumerate(sizes):
                cancel.raise_if_cancelled()
                reporter.progress(i, len(sizes), f"training step, {prec}, batch {b}")
                point = _time_train_step(base, prec, plan, recipe, shape, num_classes, b, spec, max_time, threads,
                                         cancel)
                done += 1
                if isinstance(point, str):
                    out["skipped"].append({"what": f"train {prec} batch {b}", "reason": point})
                    reporter.log(f"sweep: train {prec} batch {b} skipped: {point}", "warning")
                    continue
                out["train"].append(point.to_dict())
                reporter.metrics(stage, b, {"step_ms_p50": point.p50_ms, "step_ms_p95": point.p95_ms,
                                            "train_samples_per_s": point.throughput})
                reporter.log(f"sweep: train {prec} batch {b}: step p50 {point.p50_ms:.2f} ms, "
                             f"{point.throughput:,.0f} samples/s")
            reporter.progress(done, total, "")
            reporter.stage_finished(stage, {"points": len(sizes)})
    if spec.inference and len(plans) >= 2 and sizes:
        out["inference_paired"] = _paired_precisions(base, plans, shape, sizes, recipe, threads, iters, warmup,
                                                     max_time, reporter, cancel)
    return out


def _paired_precisions(base: nn.Module, plans: Sequence[tuple[str, PrecisionPlan]], shape: tuple[int, ...],
                       sizes: Sequence[int], recipe: Recipe, threads: int, iters: int, warmup: int,
                       max_time_s: float, reporter: Reporter, cancel: CancelToken) -> dict[str, Any]:
    """The precisions' inference speed against the first one, timed together in interleaved rounds.

    The per-point figures above are timed one precision after the other; these ratios are the ones to
    quote, since a change in machine load hits both sides of each ratio alike.
    """
    from workbench.core.measure.paired import Contestant, choose_threads, time_paired
    from workbench.core.measure.runtimes import TorchRuntime

    stage = "sweep:inference:paired"
    reporter.stage_started(stage)
    choice = choose_threads(threads)
    contestants = []
    for prec, plan in plans:
        m = prepare_module(copy.deepcopy(base), plan)
        contestants.append(Contestant(prec, f"torch eager {plan.label}",
                                      TorchRuntime(m, device=plan.device, autocast_dtype=plan.autocast_dtype,
                                                   channels_last=plan.channels_last)))
    try:
        with fixed_threads(choice.threads):
            timing = time_paired(contestants, shape, sizes, threads=choice, rounds=recipe.bench.rounds,
                                 iters=iters, warmup=warmup, max_time_s=max_time_s, cancel=cancel,
                                 reporter=reporter)
    finally:
        for c in contestants:
            c.runtime.close()
    d = timing.to_dict()
    result = {"paired": True, "reference": plans[0][0], "reliable": timing.reliable, "reason": timing.reason,
              "rounds": timing.rounds, "threads": d["threads"], "contention": d["contention"],
              "against_reference": timing.against_first()}
    for prec, by_batch in result["against_reference"].items():
        text = ", ".join(f"batch {b} {e['ratio']:.2f}x (CI {e['ci95'][0]:.2f}–{e['ci95'][1]:.2f})"
                         for b, e in by_batch.items())
        reporter.log(f"sweep: {prec} against {plans[0][0]}, paired: {text}")
    if not timing.reliable:
        reporter.log(f"sweep: paired precision timing unreliable: {timing.reason}", "warning")
    reporter.stage_finished(stage, {"reliable": timing.reliable})
    return result


def _time_train_step(base: nn.Module, prec: str, plan: PrecisionPlan, recipe: Recipe, shape: tuple[int, ...], num_classes: int,
                     batch: int, spec: SweepSpec, max_time_s: float, threads: int,
                     cancel: CancelToken) -> BatchPoint | str:
    """Median optimizer-step time at one batch size, warm-up steps excluded; or why it could not run."""
    gen = torch.Generator().manual_seed(batch)
    m = prepare_module(copy.deepcopy(base), plan)
    try:
        x = plan.to_input(torch.randn((batch, *shape), generator=gen))
        y = torch.randint(0, num_classes, (batch,), generator=gen).to(plan.device)
        step = _train_step(m, plan, recipe, x, y)
        with fixed_threads(threads):
            st = time_callable(step, batch_size=batch, warmup=max(1, spec.train_warmup_steps),
                               iters=max(3, spec.train_steps), max_time_s=max_time_s,
                               sync=cuda_sync_for(plan.device), cancel=cancel)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "out of device memory"
    except (ValueError, RuntimeError) as exc:  # e.g. BatchNorm cannot train on a batch of 1
        return f"training step failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    finally:
        del m  # freed by refcount; no gc.collect() on a job thread (it could free GUI-thread Qt objects)
    return BatchPoint("train", prec, batch, st.p50_ms, st.p95_ms, st.throughput, st.mean_ms, st.iters,
                      list(st.ci95_median_ms), st.peak_mem_bytes)


# ------------------------------------------------------------------------------------- loader sweep


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
    cacheable = recipe.data.source in _CACHEABLE_SOURCES
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


# ------------------------------------------------------------------------------------------ run_sweep


def _budget_summary(inference: list[dict[str, Any]], spec: SweepSpec) -> dict[str, Any] | None:
    if spec.latency_budget_ms is None:
        return None
    best = best_within_budget(inference, spec.latency_budget_ms, latency_key=spec.latency_key)
    per_precision = {}
    for prec in dict.fromkeys(p["precision"] for p in inference):
        per_precision[prec] = best_within_budget([p for p in inference if p["precision"] == prec],
                                                 spec.latency_budget_ms, latency_key=spec.latency_key)
    return {"budget_ms": spec.latency_budget_ms, "latency_key": spec.latency_key, "best": best,
            "per_precision": per_precision,
            "message": (f"best within {spec.latency_budget_ms:g} ms ({spec.latency_key.removesuffix('_ms')}): "
                        f"{best['precision']} batch {best['batch_size']}, {best['throughput']:,.0f} samples/s"
                        if best else f"no point meets {spec.latency_budget_ms:g} ms at "
                        f"{spec.latency_key.removesuffix('_ms')}; the fastest is "
                        + (f"{min(p[spec.latency_key] for p in inference):.3f} ms" if inference else "unmeasured"))}


LOADER_CAVEAT = ("loader configurations are timed one after the other in this process (not interleaved): a "
                 "change in machine load between them changes the ratio")


def run_sweep(
    recipe: Recipe,
    spec: SweepSpec,
    *,
    store: Any = None,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
    name: str | None = None,
) -> SweepOutcome:
    """Run every grid of ``spec`` on ``recipe`` and record it as ONE stored run (kind ``sweep``).

    Like ``run_recipe`` it never raises for run failures: the outcome's status says what happened,
    and whatever was measured before a failure or cancel stays in the run's summary.
    """
    from workbench.core.store import RunStore, StoreReporter
    from workbench.recipe import check_device_support

    store = store or RunStore()
    cancel = cancel or CancelToken()
    outer = reporter or Reporter()
    check_device_support(recipe, torch.cuda.is_available())
    run_name = name or f"{recipe.name} sweep"
    run_id = store.create_run(run_name, dumps_recipe(recipe), _model_label(recipe), recipe.techniques, kind="sweep")
    rep = MultiReporter([StoreReporter(store, run_id), outer])
    run_started = getattr(outer, "run_started", None)
    if callable(run_started):
        run_started(run_id, run_name)
    summary: dict[str, Any] = {"run_id": run_id, "name": run_name, "kind": "sweep", "techniques": recipe.techniques,
                               "environment": environment(), "sweep": {"spec": spec.to_dict()}}
    sweep = summary["sweep"]
    sampler = None
    try:
        with relay_warnings(rep), fixed_threads(recipe.bench.threads if spec.threads is None else spec.threads):
            from workbench.core.telemetry import TelemetrySampler, device_description

            summary["environment"]["device"] = device_description()
            counter = itertools.count()
            sampler = TelemetrySampler(hz=recipe.bench.telemetry_hz, reporter=rep,
                                       on_sample=lambda s: rep.metrics("telemetry", next(counter), s))
            sampler.start()
            t0 = time.perf_counter()
            module, shape, num_classes = _load(recipe, summary, rep, cancel)
            if spec.batch_sizes and (spec.inference or spec.train):
                res = batch_sweep(module, shape, num_classes, recipe, spec, reporter=rep, cancel=cancel)
                sweep.update(res)
                sweep["budget"] = _budget_summary(res["inference"], spec)
                if sweep["budget"]:
                    rep.log(f"sweep: {sweep['budget']['message']}")
                store.update_summary(run_id, summary)
            if spec.workers is not None:
                with ContentionMonitor(include_children=True) as loader_load:  # workers are ours
                    sweep["loader"] = loader_sweep(recipe, spec, module=module, reporter=rep, cancel=cancel)
                ld = sweep["loader"]
                assert loader_load.load is not None
                # Loader configurations cannot share one process's interleaved rounds (each owns worker
                # processes), so their ratio is sequential: say so, and say if others competed meanwhile.
                ld["measurement"] = {"paired": False, "caveat": LOADER_CAVEAT,
                                     "contention": loader_load.load.to_dict()}
                if loader_load.load.contended:
                    rep.log(f"sweep: other processes used {loader_load.load.others_cores:.2f} CPU cores during the "
                            "loader sweep; its ratios are unreliable", "warning")
                if ld.get("speedup"):
                    rep.log(f"sweep: best loader configuration {ld['best']['label']}: "
                            f"{ld['best']['train_samples_per_s']:,.0f} training samples/s, {ld['speedup']:.2f}x the "
                            f"default ({ld['default']['label']})")
                store.update_summary(run_id, summary)
            sweep["wall_s"] = time.perf_counter() - t0
        summary["status"] = "completed"
        store.finish_run(run_id, "completed", summary)
        return SweepOutcome(run_id, "completed", summary)
    except (KeyboardInterrupt, SystemExit) as exc:
        return record_process_exit(store, run_id, summary, rep, exc)
    except Exception as exc:
        return record_unfinished_run(store, run_id, summary, rep, exc)
    finally:
        if sampler is not None:
            sampler.stop()


def _load(recipe: Recipe, summary: dict[str, Any], rep: Reporter,
          cancel: CancelToken) -> tuple[nn.Module, tuple[int, ...], int]:
    """Data (for its shape and classes) and the model, recorded in the summary like a normal run."""
    from workbench.core.data import load_dataset
    from workbench.core.models import load_model, summarize

    rep.stage_started("load")
    bundle = load_dataset(recipe.data)
    cancel.raise_if_cancelled()
    shape = tuple(int(d) for d in bundle.input_shape)
    loaded = load_model(recipe.model, bundle.num_classes, shape)
    if loaded.module is None:
        raise WorkbenchError(f"model.source = {recipe.model.source!r}: sweeps need a PyTorch model "
                             "(use `workbench bench` for ONNX files)")
    if recipe.model.weights.startswith("run:"):
        rep.log("sweep: model.weights = run:ID is not loaded for a sweep: speed does not depend on the weights")
    s = summarize(loaded.module, shape)
    summary["model"] = s.to_dict()
    summary["data"] = {"source": recipe.data.source, "description": bundle.source_desc,
                       "num_classes": bundle.num_classes, "input_shape": list(shape),
                       "train_samples": len(bundle.train), "val_samples": len(bundle.val),
                       "eval_samples": len(bundle.eval), "kind": bundle.kind}
    rep.log(f"sweep: model {loaded.description or recipe.model.zoo}: {s.params:,} params; data {bundle.source_desc}")
    rep.stage_finished("load", {"params": s.params})
    return loaded.module, shape, bundle.num_classes


def _model_label(recipe: Recipe) -> str:
    return recipe.model.label
