"""Timing harness: statistics on a known sleep, warm-up exclusion, cancellation, thread pinning."""

from __future__ import annotations

import gc
import time

import pytest
import torch

from workbench.core.events import CancelToken, RecordingReporter
from workbench.core.measure.timing import (
    LatencyStats,
    bench_torch,
    fixed_threads,
    latency_stats,
    time_callable,
)
from workbench.errors import Cancelled

SLEEP_S = 0.004


def _sleeper(seconds: float = SLEEP_S):
    def fn() -> None:
        time.sleep(seconds)

    return fn


def test_sleep_stats_are_sane() -> None:
    s = time_callable(_sleeper(), batch_size=8, warmup=2, iters=40)
    assert isinstance(s, LatencyStats)
    assert s.iters >= 40
    # sleep() overshoots by scheduler slack, never undershoots
    assert SLEEP_S * 1e3 <= s.p50_ms < SLEEP_S * 1e3 * 1.5 + 1.0
    assert s.min_ms <= s.p50_ms <= s.p90_ms <= s.p95_ms <= s.p99_ms <= s.max_ms
    lo, hi = s.ci95_median_ms
    assert lo <= s.p50_ms <= hi
    assert s.throughput == pytest.approx(8 / (s.p50_ms / 1e3))
    d = s.to_dict()
    assert "samples_ms" not in d and d["batch_size"] == 8 and len(d["ci95_median_ms"]) == 2
    assert len(s.to_dict(include_samples=True)["samples_ms"]) == s.iters


def test_warmup_is_excluded() -> None:
    calls = {"n": 0}

    def slow_then_fast() -> None:
        calls["n"] += 1
        time.sleep(0.05 if calls["n"] <= 3 else 0.001)

    s = time_callable(slow_then_fast, warmup=3, iters=10)
    assert calls["n"] == 3 + s.iters
    assert s.max_ms < 50  # none of the 50 ms warm-up calls was timed


def test_min_time_extends_and_max_time_caps() -> None:
    s = time_callable(_sleeper(0.002), warmup=0, iters=3, min_time_s=0.1)
    assert s.iters > 10  # kept going past iters until 0.1 s had passed
    t0 = time.perf_counter()
    s = time_callable(_sleeper(0.02), warmup=0, iters=10_000, max_time_s=0.1)
    assert 3 <= s.iters < 20
    assert time.perf_counter() - t0 < 1.0


def test_sync_wraps_each_timed_call_and_gc_restored() -> None:
    order: list[str] = []
    s = time_callable(lambda: order.append("f"), warmup=1, iters=5, sync=lambda: order.append("s"))
    # warm-up "f", one sync after warm-up, then "s f s" per timed call
    assert order[:2] == ["f", "s"]
    assert order[2:] == ["s", "f", "s"] * s.iters
    assert gc.isenabled()
    # The collector is never switched off while timing (gc.disable() is process-wide: other threads too).
    seen: list[bool] = []
    time_callable(lambda: seen.append(gc.isenabled()), warmup=1, iters=5)
    assert seen and all(seen)


def test_cancel_stops_timing() -> None:
    token = CancelToken()
    calls = {"n": 0}

    def fn() -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            token.cancel()

    with pytest.raises(Cancelled):
        time_callable(fn, warmup=0, iters=1000, cancel=token)
    assert calls["n"] == 5
    assert gc.isenabled()


def test_median_ci_brackets_median_for_small_and_large_n() -> None:
    for n in (1, 3, 10, 101, 5000):
        data = [float(i) for i in range(n)]
        s = latency_stats(data, batch_size=1)
        lo, hi = s.ci95_median_ms
        assert lo <= s.p50_ms <= hi
    s = latency_stats([float(i) for i in range(1000)], 1)
    lo, hi = s.ci95_median_ms
    assert 460 <= lo < 500 < hi <= 540  # +-1.96*sqrt(n)/2 ~ 31 ranks


def test_fixed_threads_restores() -> None:
    before = torch.get_num_threads()
    with fixed_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with fixed_threads(0) as n:
        assert n == before


def _tiny_cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    )


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_bench_torch_cpu_restores_mode_and_reports(autocast: torch.dtype | None) -> None:
    m = _tiny_cnn().train()
    rep = RecordingReporter()
    out = bench_torch(
        m,
        (3, 16, 16),
        [1, 4],
        autocast=autocast,
        channels_last=True,
        warmup=1,
        iters=5,
        threads=1,
        reporter=rep,
    )
    assert [s.batch_size for s in out] == [1, 4]
    assert all(s.iters >= 5 and s.p50_ms > 0 for s in out)
    assert all(s.peak_mem_bytes is None or s.peak_mem_bytes >= 0 for s in out)
    assert m.training  # mode restored
    assert next(m.parameters()).is_contiguous()
    assert len(rep.of("metrics")) == 2 and rep.of("metrics")[0][0] == "benchmark"


def test_bench_torch_cancel() -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        bench_torch(_tiny_cnn(), (3, 8, 8), [1], warmup=0, iters=3, cancel=token)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_torch_cuda() -> None:
    m = _tiny_cnn()
    out = bench_torch(m, (3, 32, 32), [1, 32], device="cuda", autocast=torch.float16, warmup=3, iters=10)
    assert [s.batch_size for s in out] == [1, 32]
    assert all(s.peak_mem_bytes is not None and s.peak_mem_bytes > 0 for s in out)
    assert next(m.parameters()).device.type == "cpu"  # moved back
