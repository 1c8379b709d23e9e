"""Batch size x precision: inference latency/throughput per point, training steps, and precisions timed paired."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from workbench.analysis.sweep.spec import AUTOCAST, BatchPoint, SweepSpec
from workbench.core.events import CancelToken, Reporter
from workbench.core.hardware import native_bf16_cpu
from workbench.core.measure.timing import bench_torch, cuda_sync_for, fixed_threads, time_callable
from workbench.core.precision import (
    PrecisionPlan,
    make_scaler,
    prepare_module,
    unwrap,
)
from workbench.errors import WorkbenchError
from workbench.recipe import Recipe


def precision_plan(recipe: Recipe, precision: str) -> tuple[PrecisionPlan | None, str]:
    """The plan for one precision of the grid, or (None, reason) when this device cannot run it.

    The recipe's other precision choices (device, channels_last, compile) are kept, so the grid
    varies one thing at a time. A note (second item) is returned for runnable-but-odd cases.
    """
    from workbench.core.precision import resolve_precision

    section = recipe.precision.model_copy(update={"autocast": AUTOCAST[precision], "grad_scaler": "auto"})
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
