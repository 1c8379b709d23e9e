"""Honest timing: warm up, synchronise the device, fix the thread count, report median and spread.

A speedup is only meaningful as the ratio of two runs measured the same way, side by side. Every
number here comes from ``time_callable``: warm-up calls are excluded, the device is synchronised
around each timed call (so asynchronous CUDA work is counted), and the result
carries percentiles plus a confidence interval of the median so two runs can be compared fairly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psutil
import torch

from workbench.core.events import CancelToken, Reporter
from workbench.core.telemetry import paused_for_timing

__all__ = [
    "LatencyStats",
    "MemoryProbe",
    "bench_torch",
    "cuda_sync_for",
    "fixed_threads",
    "latency_stats",
    "stats_metrics",
    "time_callable",
    "time_one_call_ns",
    "timing_kwargs",
]


@dataclass
class LatencyStats:
    """Latency of one (runtime, batch size) case. Times in milliseconds per call (= per batch)."""

    batch_size: int
    iters: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    ci95_median_ms: tuple[float, float]
    throughput: float  # samples per second = batch_size / median seconds
    peak_mem_bytes: int | None = None
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, include_samples: bool = False) -> dict[str, Any]:
        """Plain JSON-able dict for the run store and reports (raw samples only on request)."""
        d = asdict(self)
        d["ci95_median_ms"] = list(self.ci95_median_ms)
        if not include_samples:
            d.pop("samples_ms")
        return d


def _median_ci95(sorted_ms: np.ndarray) -> tuple[float, float]:
    """Distribution-free 95% CI of the median from order statistics (binomial, normal approx.).

    Latencies are skewed (a few slow outliers), so a mean +- 1.96 sd interval would be wrong;
    the ranks n/2 -+ 1.96*sqrt(n)/2 bound the median without assuming any distribution.
    """
    n = len(sorted_ms)
    half_width = 1.96 * math.sqrt(n) / 2.0
    lo = max(int(math.floor(n / 2.0 - half_width)) - 1, 0)
    hi = min(int(math.ceil(n / 2.0 + half_width)), n - 1)
    return float(sorted_ms[lo]), float(sorted_ms[hi])


def latency_stats(
    samples_ms: Sequence[float], batch_size: int, peak_mem_bytes: int | None = None
) -> LatencyStats:
    """Summarise per-call latencies (ms) into a ``LatencyStats``."""
    if len(samples_ms) == 0:
        raise ValueError("latency_stats needs at least one sample")
    a = np.sort(np.asarray(samples_ms, dtype=np.float64))
    p50, p90, p95, p99 = (float(v) for v in np.percentile(a, [50, 90, 95, 99]))
    return LatencyStats(
        batch_size=batch_size,
        iters=len(a),
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=float(a.mean()),
        std_ms=float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        min_ms=float(a[0]),
        max_ms=float(a[-1]),
        ci95_median_ms=_median_ci95(a),
        throughput=batch_size / (p50 / 1e3) if p50 > 0 else math.inf,
        peak_mem_bytes=peak_mem_bytes,
        samples_ms=[float(v) for v in samples_ms],
    )


def time_callable(
    fn: Callable[[], Any],
    *,
    batch_size: int = 1,
    warmup: int = 5,
    iters: int = 50,
    min_time_s: float = 0.0,
    max_time_s: float = 10.0,
    sync: Callable[[], None] | None = None,
    cancel: CancelToken | None = None,
) -> LatencyStats:
    """Time ``fn()`` call by call and summarise.

    ``warmup`` calls run first and are discarded (lazy init, compile, allocator and cache warm-up).
    Then at least ``iters`` timed calls run and timing continues until ``min_time_s`` has passed;
    ``max_time_s`` caps the timed phase (not the warm-up), but at least 3 calls are always timed.
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after each timed call so queued
    device work is neither leaked into nor missing from a measurement. ``cancel`` is checked
    between calls and raises ``Cancelled``.
    """
    if iters < 1:
        raise ValueError("iters must be >= 1")
    for _ in range(max(warmup, 0)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        fn()
    if sync is not None:
        sync()

    min_ns = int(min_time_s * 1e9)
    max_ns = int(max_time_s * 1e9)
    samples_ns: list[int] = []
    perf = time.perf_counter_ns
    # The garbage collector stays as it is: gc.disable() is process-wide (it would switch collection off
    # for the GUI and every other job, and nests badly across threads), and gc.collect() on a job thread
    # can free Qt objects owned by the GUI thread. A collection during a call is rare; the median and the
    # percentiles show it for what it is.
    with paused_for_timing():  # the app's own telemetry thread must not take the cores being timed
        start = perf()
        while True:
            if cancel is not None:
                cancel.raise_if_cancelled()
            samples_ns.append(time_one_call_ns(fn, sync))
            t1 = perf()
            n = len(samples_ns)
            elapsed = t1 - start
            if n >= iters and elapsed >= min_ns:
                break
            if elapsed >= max_ns and n >= 3:
                break
    return latency_stats([s / 1e6 for s in samples_ns], batch_size)


def time_one_call_ns(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> int:
    """Wall time of one call in ns, with the device synchronised before and after (async CUDA work counts)."""
    if sync is not None:
        sync()
    t0 = time.perf_counter_ns()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter_ns() - t0


def timing_kwargs(bench: Any) -> dict[str, Any]:
    """Timing keyword arguments from a recipe ``BenchSection`` (duck-typed; no recipe import)."""
    return {
        "warmup": bench.warmup,
        "iters": bench.iters,
        "min_time_s": bench.min_time_s,
        "max_time_s": bench.max_time_s,
        "threads": bench.threads,
    }


@contextmanager
def fixed_threads(n: int) -> Iterator[int]:
    """Pin torch's intra-op thread count for the block (0 = leave as is); restores it after.

    Thread count changes latency more than many optimisations do, so every compared run must
    use the same one. Yields the thread count in effect.
    """
    old = torch.get_num_threads()
    if n > 0 and n != old:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def cuda_sync_for(device: torch.device | str) -> Callable[[], None] | None:
    """The synchronise function for ``device`` (CUDA kernels are async), or None for CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return None


class MemoryProbe:
    """Peak memory of a measured block: CUDA allocator peak on GPU, else RSS growth (approximate).

    CPU RSS growth is a lower bound of the working set (memory freed and reused between samples
    is invisible, and memory already resident before ``start`` is not counted); ``None`` if even
    that is unavailable.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._base: int | None = None
        self._max_rss: int | None = None
        try:
            self._proc: psutil.Process | None = psutil.Process()
        except Exception:  # pragma: no cover - psutil unavailable in odd sandboxes
            self._proc = None

    def _rss(self) -> int | None:
        if self._proc is None:
            return None
        try:
            return int(self._proc.memory_info().rss)
        except Exception:  # pragma: no cover
            return None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._base = self._rss()
        self._max_rss = self._base

    def mark(self) -> None:
        """Sample RSS now (call after warm-up and after timing)."""
        rss = self._rss()
        if rss is not None and (self._max_rss is None or rss > self._max_rss):
            self._max_rss = rss

    def peak_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        self.mark()
        if self._base is None or self._max_rss is None:
            return None
        return max(self._max_rss - self._base, 0)


def _param_device(module: torch.nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def bench_torch(
    module: torch.nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    autocast: torch.dtype | None = None,
    channels_last: bool = False,
    warmup: int = 5,
    iters: int = 50,
    min_time_s: float = 0.0,
    max_time_s: float = 10.0,
    threads: int = 0,
    cancel: CancelToken | None = None,
    reporter: Reporter | None = None,
    stage: str = "benchmark",
    seed: int = 0,
) -> list[LatencyStats]:
    """Inference latency of ``module`` on random input of ``(batch, *input_shape)`` per batch size.

    Runs under ``torch.inference_mode`` in eval mode, optionally under autocast (e.g.
    ``torch.bfloat16``) and channels_last. The module is moved to ``device`` (and to
    channels_last) in place for the measurement and put back afterwards, with its training flag.
    A CUDA out-of-memory at one batch size is logged and that size skipped, so the result may be
    shorter than ``batch_sizes``; each entry carries its ``batch_size``.
    """
    dev = torch.device(device)
    was_training = module.training
    orig_device = _param_device(module)
    sync = cuda_sync_for(dev)
    results: list[LatencyStats] = []
    gen = torch.Generator().manual_seed(seed)
    module.eval()
    try:
        module.to(dev)
        if channels_last:
            module.to(memory_format=torch.channels_last)
        amp = torch.autocast(device_type=dev.type, dtype=autocast) if autocast is not None else nullcontext()
        with fixed_threads(threads), torch.inference_mode():
            for i, b in enumerate(batch_sizes):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                if reporter is not None:
                    reporter.progress(i, len(batch_sizes), f"timing batch {b}")
                x = torch.randn((b, *input_shape), generator=gen).to(dev)
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)

                def call(x: torch.Tensor = x) -> Any:
                    with amp:
                        return module(x)

                probe = MemoryProbe(dev)
                try:
                    probe.start()
                    stats = time_callable(
                        call,
                        batch_size=b,
                        warmup=warmup,
                        iters=iters,
                        min_time_s=min_time_s,
                        max_time_s=max_time_s,
                        sync=sync,
                        cancel=cancel,
                    )
                    stats.peak_mem_bytes = probe.peak_bytes()
                except torch.cuda.OutOfMemoryError:
                    del x
                    torch.cuda.empty_cache()
                    if reporter is not None:
                        reporter.log(f"batch {b}: out of GPU memory, skipped", "warning")
                    continue
                results.append(stats)
                if reporter is not None:
                    reporter.metrics(stage, i, stats_metrics(stats))
        if reporter is not None:
            reporter.progress(len(batch_sizes), len(batch_sizes), "timing done")
    finally:
        if channels_last:
            module.to(memory_format=torch.contiguous_format)
        module.to(orig_device)
        module.train(was_training)
    return results


def stats_metrics(s: LatencyStats) -> dict[str, float]:
    """The numbers a live view plots for one timed case."""
    return {
        "batch_size": float(s.batch_size),
        "p50_ms": s.p50_ms,
        "p90_ms": s.p90_ms,
        "p99_ms": s.p99_ms,
        "throughput": s.throughput,
    }
