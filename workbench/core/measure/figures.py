"""The figures a run records for one model, and the paired before/after timing at its end.

``measure_model`` gives eval accuracy, latency/throughput per batch size (with the thread count and
the CPU competition seen), params and size, for a torch module or an ONNX file. ``paired_speedup``
times the run's checkpoints (baseline → each stage's result) in interleaved rounds: the speedup
with its confidence interval, split by cause (see ``measure.paired``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from workbench.core.measure.paired import ContentionMonitor, Contestant, choose_threads, time_paired
from workbench.core.measure.runtimes import evaluate_runtime
from workbench.core.precision import unwrap


class RunContext(Protocol):
    """What measuring needs from a run (``core.pipeline.RunContext`` provides it; no import needed)."""

    recipe: Any
    reporter: Any
    cancel: Any
    plan: Any
    eval_loader: Any
    val_loader: Any
    data: Any
    threads: Any
    checkpoints: Sequence[Any]

    @property
    def thread_count(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def artifacts(self) -> Path: ...

__all__ = ["METRIC_KEYS", "STREAM_SAMPLES", "measure_model", "paired_speedup", "real_batches"]

#: Real samples per timed call when a model's speed depends on its input.
STREAM_SAMPLES = 64


def real_batches(dataset: Any, batch_size: int, samples: int = STREAM_SAMPLES) -> list[Any]:
    """The first ``samples`` items of ``dataset`` (at least one batch) as float32 batches of ``batch_size``.

    The same inputs for every contestant, and many of them: a model that decides per input how much
    to compute (early exits) is timed on a realistic mix, not on one sample repeated.
    """
    import numpy as np

    n = max(batch_size, samples - samples % batch_size)
    xs = [np.asarray(dataset[i % len(dataset)][0], dtype=np.float32) for i in range(n)]
    return [np.stack(xs[i:i + batch_size]) for i in range(0, n, batch_size)]


#: The keys every measured model reports (CLI `--json`, runs table, comparisons).
METRIC_KEYS = ("accuracy", "latency_ms_p50", "latency_ms_p95", "throughput", "params", "size_bytes",
               "train_samples_per_s")


def token_batches(ctx: RunContext) -> Any:
    """Token data: ``batch -> [batch, inputs, seq]`` int64 inputs that follow their meaning (ids inside the
    vocabulary, all-ones mask, zero token types) for timing; None for every other kind of data.

    Timing otherwise feeds standard-normal floats, which a torch token model turns into such inputs
    itself but onnxruntime would cast to (negative) ids.
    """
    if getattr(ctx.data, "kind", None) != "tokens" or ctx.module is None:
        return None
    tok = unwrap(ctx.module)
    example = getattr(tok, "example_input", None)
    if not callable(example):
        return None
    seq = int(ctx.input_shape[-1])
    return lambda b: example(b, seq, seed=b).numpy()


def measure_model(ctx: RunContext, label: str, *, module: nn.Module | None = None, onnx_path: Path | None = None,
                  train_samples_per_s: float | None = None) -> dict[str, Any]:
    """The standard figures for one model: eval accuracy, latency p50/p95, throughput, params, size.

    ``val_accuracy`` (the validation split, when the run has one) is what choices are made on; ``accuracy``
    (the eval split) is what is reported.
    """
    from workbench.core.measure.runtimes import OrtRuntime, TorchRuntime, bench_runtime, export_onnx_for_bench
    from workbench.core.measure.timing import bench_torch

    recipe, rep = ctx.recipe, ctx.reporter
    bench = recipe.bench
    stage = f"measure:{label}"
    rep.stage_started(stage)
    out: dict[str, Any] = {"label": label}
    threads = ctx.thread_count
    timing = dict(warmup=bench.warmup, iters=bench.iters, min_time_s=bench.min_time_s, max_time_s=bench.max_time_s,
                  cancel=ctx.cancel, threads=threads)
    monitor = ContentionMonitor()
    if module is None:
        assert onnx_path is not None, "measure needs a torch module or an ONNX file"
        runtime = OrtRuntime(onnx_path, threads=threads)
        try:
            out["accuracy"] = evaluate_runtime(runtime, ctx.eval_loader, ctx.cancel)
            if ctx.val_loader is not None:
                out["val_accuracy"] = evaluate_runtime(runtime, ctx.val_loader, ctx.cancel)
            with monitor:
                stats = bench_runtime(runtime, ctx.input_shape, bench.batch_sizes, feeds=token_batches(ctx),
                                      **timing) if bench.enabled else []
        finally:
            runtime.close()
        from workbench.core.models import summarize_onnx
        from workbench.core.models.loaders import onnx_file_size

        s = summarize_onnx(onnx_path)
        out.update(params=s.params, size_bytes=onnx_file_size(onnx_path), runtime="onnxruntime")
    else:
        from workbench.core.models import summarize
        from workbench.core.train import evaluate

        out["accuracy"] = evaluate(module, ctx.eval_loader, ctx.plan, ctx.cancel)["accuracy"]
        if ctx.val_loader is not None:  # what searches and budgets choose on
            out["val_accuracy"] = evaluate(module, ctx.val_loader, ctx.plan, ctx.cancel)["accuracy"]
        stats = []
        if bench.enabled:
            with monitor:
                stats = bench_torch(module, ctx.input_shape, bench.batch_sizes, device=str(ctx.plan.device),
                                    autocast=ctx.plan.autocast_dtype, channels_last=ctx.plan.channels_last,
                                    reporter=rep, **timing)
        s = summarize(unwrap(module), ctx.input_shape)
        out.update(params=s.params, size_bytes=s.size_bytes, macs=s.macs, runtime=f"torch {ctx.plan.label}")
        # Other runtimes side by side, so the user sees which wins on this machine.
        extra = [r for r in bench.runtimes if r != "eager"] if bench.enabled else []
        if extra:
            out["runtimes"] = {"eager": [st.to_dict() for st in stats]}
        for name in extra:
            ctx.cancel.raise_if_cancelled()
            if name == "compile":
                rt = TorchRuntime(unwrap(module), device=str(ctx.plan.device), autocast_dtype=ctx.plan.autocast_dtype,
                                  channels_last=ctx.plan.channels_last, compile=True)
            else:
                path = ctx.artifacts / f"bench-{label}.onnx"
                export_onnx_for_bench(unwrap(module).cpu(), ctx.input_shape, path)
                unwrap(module).to(ctx.plan.device)
                rt = OrtRuntime(path, threads=threads)
            try:
                out["runtimes"][name] = [st.to_dict() for st in bench_runtime(rt, ctx.input_shape, bench.batch_sizes,
                                                                              feeds=token_batches(ctx), **timing)]
            finally:
                rt.close()
    out["train_samples_per_s"] = train_samples_per_s
    out["threads"] = threads or torch.get_num_threads()
    if monitor.load is not None:
        out["contention"] = monitor.load.to_dict()
        if monitor.load.contended:
            rep.log(f"{label}: other processes used {monitor.load.others_cores:.2f} CPU cores while timing; "
                    "these figures are slower than on a quiet machine", "warning")
    cut = [st for st in stats if st.iters < bench.iters]
    if cut:
        out["iters_cut"] = {str(st.batch_size): st.iters for st in cut}
        rep.log(f"{label}: bench.iters = {bench.iters} cut by bench.max_time_s = {bench.max_time_s:g} s to "
                + ", ".join(f"{st.iters} at batch {st.batch_size}" for st in cut)
                + "; raise bench.max_time_s to time them all", "warning")
    if stats:
        first, best = stats[0], max(stats, key=lambda st: st.throughput)
        out.update(latency_ms_p50=first.p50_ms, latency_ms_p95=first.p95_ms, latency_batch=first.batch_size,
                   throughput=best.throughput, throughput_batch=best.batch_size,
                   bench=[st.to_dict() for st in stats])
        for st in stats:  # "measure:final@onnxruntime": live views label the point with runtime and batch
            rep.metrics(f"{stage}@{out['runtime']}", st.batch_size, {"latency_ms_p50": st.p50_ms,
                        "throughput": st.throughput, "batch_size": float(st.batch_size)})
    else:
        out.update(latency_ms_p50=None, latency_ms_p95=None, throughput=None)
    rep.log(f"{label}: accuracy {out['accuracy']:.4f}" + (
        f", latency p50 {out['latency_ms_p50']:.3f} ms @ batch {out['latency_batch']}, "
        f"throughput {out['throughput']:.0f} samples/s @ batch {out['throughput_batch']}" if stats else ""))
    rep.stage_finished(stage, out)
    return out


def paired_speedup(ctx: RunContext) -> dict[str, Any] | None:
    """Time the run's checkpoints (baseline → each step's result) in interleaved rounds; the ``speedup`` record.

    None when there is nothing to compare (fewer than two checkpoints) or timing is switched off.
    Logs the headline, its split by cause, and a warning with the reason when it is unreliable.
    """
    from workbench.core.measure.comparison import speedup_sentence
    from workbench.core.measure.runtimes import OrtRuntime, TorchRuntime

    bench = ctx.recipe.bench
    if len(ctx.checkpoints) < 2 or not bench.enabled or not bench.paired:
        return None
    rep = ctx.reporter
    stage = "paired timing"
    rep.stage_started(stage)
    # Auto threads are chosen again here: the load may have changed since the run started, and all
    # contestants share whatever is chosen, so the ratio stays fair (the choice is recorded with it).
    threads = choose_threads(bench.threads) if bench.threads == 0 else (
        ctx.threads or choose_threads(bench.threads, probe_s=0.0))
    contestants: list[Contestant] = []
    memory_formats: list[nn.Module] = []
    try:
        for cp in ctx.checkpoints:
            if cp.onnx_path is not None:
                rt: Any = OrtRuntime(cp.onnx_path, threads=threads.threads)
            else:
                assert cp.module is not None
                use_plan = cp.precision_plan
                rt = TorchRuntime(cp.module, device=ctx.plan.device if use_plan else "cpu",
                                  autocast_dtype=ctx.plan.autocast_dtype if use_plan else None,
                                  channels_last=ctx.plan.channels_last and use_plan)
                if rt.channels_last:
                    memory_formats.append(cp.module)
            contestants.append(Contestant(cp.step, cp.label, rt))
        rep.log(f"paired timing: {' → '.join(c.label for c in contestants)} in {bench.rounds} interleaved "
                f"rounds at batch {', '.join(map(str, bench.batch_sizes))}, {threads.threads} thread(s)")
        from workbench.core.measure.timing import fixed_threads

        with fixed_threads(threads.threads):
            dynamic = any(getattr(cp, "dynamic", False) for cp in ctx.checkpoints)
            stream = (lambda b: real_batches(ctx.data.eval, b)) if dynamic else None
            if dynamic:
                rep.log(f"paired timing: {', '.join(cp.step for cp in ctx.checkpoints if cp.dynamic)} depends on "
                        f"its input, so every model is timed on the same {STREAM_SAMPLES} real eval samples per call")
            timing = time_paired(contestants, ctx.input_shape, bench.batch_sizes, threads=threads,
                                 rounds=bench.rounds, iters=bench.iters, warmup=bench.warmup,
                                 max_time_s=bench.max_time_s, cancel=ctx.cancel, reporter=rep,
                                 seed=ctx.recipe.train.seed, stream=stream,
                                 make_batch=None if dynamic else token_batches(ctx))
    finally:
        for c in contestants:
            c.runtime.close()
        for m in memory_formats:  # saved weights and later stages expect the default layout
            m.to(memory_format=torch.contiguous_format)
    result = timing.to_dict()
    rep.log(f"speedup: {speedup_sentence(result)}")
    if not timing.reliable:
        rep.log(f"speedup measurement unreliable: {timing.reason}", "warning")
    rep.stage_finished(stage, {"reliable": timing.reliable})
    return result
