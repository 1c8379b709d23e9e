"""Paired timing, the contention detector, thread choice, like-with-like comparisons."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workbench.core.measure import paired
from workbench.core.measure.comparison import compare_measurements, compare_run_to_baseline, compare_runs
from workbench.core.measure.paired import (
    BLOCK_MS,
    BatchTiming,
    ContentionMonitor,
    Contestant,
    CpuLoad,
    PairedTiming,
    ThreadChoice,
    choose_threads,
    median_ci95,
    reliability_problems,
    time_paired,
)
from workbench.core.store import RunStore
from workbench.recipe import QuantizeSection
from workbench.techniques import run_recipe

from ..helpers import tiny_recipe


def _spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


class SpinRuntime:
    """A 'model' that takes a known wall time per call (busy-waiting, like a compute kernel)."""

    def __init__(self, ms: float) -> None:
        self.ms = ms
        self.closed = False

    def timed_call(self, batch: Any) -> tuple[Any, None]:
        per_sample = self.ms * max(1, len(batch)) ** 0.5
        return (lambda: _spin(per_sample)), None

    def close(self) -> None:
        self.closed = True


QUIET = ThreadChoice(1, 2, 0.0, auto=True)


def test_median_ci95_uses_exact_order_statistics() -> None:
    values = [float(v) for v in range(1, 11)]  # n = 10: the interval is [x_2, x_9]
    assert median_ci95(values) == (5.5, 2.0, 9.0)
    assert median_ci95([3.0, 1.0, 2.0, 5.0, 4.0]) == (3.0, 1.0, 5.0)  # n = 5: the full range (94 % coverage)
    assert median_ci95([7.0]) == (7.0, 7.0, 7.0)
    lo_hi_30 = median_ci95([float(v) for v in range(30)])
    assert lo_hi_30[1:] == (9.0, 20.0)  # n = 30: P(B <= 9) = 2.1 % <= 2.5 % < P(B <= 10) = 4.9 %
    with pytest.raises(ValueError):
        median_ci95([])


def test_paired_rounds_give_the_ratio_its_interval_and_the_split_by_cause() -> None:
    slow, middle, fast = SpinRuntime(0.4), SpinRuntime(0.2), SpinRuntime(0.1)  # short: rarely preempted
    contestants = [Contestant("baseline", "torch eager fp32", slow),
                   Contestant("runtime switch", "onnxruntime fp32", middle),
                   Contestant("quantize", "onnxruntime static INT8", fast)]
    timing = time_paired(contestants, (4,), [1, 4], threads=QUIET, rounds=6, iters=60, warmup=1, max_time_s=5.0,
                         settle_s=0.0)
    d = timing.to_dict()
    assert d["paired"] is True and d["rounds"] >= 6  # at least the rounds asked for; more while the CI is wide
    assert all(6 <= n <= 60 for n in d["rounds_by_batch"].values())
    assert set(d["latency"]) == {"1", "4"} and set(d["throughput"]) == {"4"}  # throughput only for batch > 1
    lat = d["latency"]["1"]
    assert 2.5 < lat["ratio"] < 6.0  # 0.4 ms against 0.1 ms (block medians shrug off a preempted call)
    assert lat["ci95"][0] <= lat["ratio"] <= lat["ci95"][1]
    assert [s["name"] for s in d["steps"]] == ["runtime switch", "quantize"]
    assert d["steps"][0]["detail"] == "torch eager fp32 → onnxruntime fp32"
    assert 1.3 < d["steps"][0]["ratio"] < 3.0 and 1.3 < d["steps"][1]["ratio"] < 3.0
    assert [m["label"] for m in d["models"]] == ["torch eager fp32", "onnxruntime fp32", "onnxruntime static INT8"]
    # A block lasts about BLOCK_MS (never fewer than iters / rounds calls): the faster the call, the more calls.
    calls = d["calls_per_block"]["1"]
    assert 10 <= calls[0] < calls[1] < calls[2]
    for n, block_ms in zip(calls, (0.4, 0.2, 0.1), strict=True):
        assert 0.5 * BLOCK_MS <= n * block_ms <= 3 * BLOCK_MS, calls
    for key in ("reliable", "reason", "threads", "contention"):
        assert key in d
    json.dumps(d)  # the run summary stores it as JSON


def test_paired_timing_keeps_within_its_time_budget_and_needs_two_models() -> None:
    contestants = [Contestant("baseline", "slow", SpinRuntime(20.0)), Contestant("x", "fast", SpinRuntime(10.0))]
    t0 = time.perf_counter()
    timing = time_paired(contestants, (1,), [1], threads=QUIET, rounds=5, iters=100, warmup=0, max_time_s=0.5,
                         settle_s=0.0)
    slow_calls, fast_calls = timing.batches[0].calls_per_block
    assert slow_calls <= 2 and fast_calls <= 5  # cut from 20 calls a block to what fits in 0.5 s (50 ms a block)
    assert time.perf_counter() - t0 < 2.0
    assert 5 <= timing.rounds <= 60
    with pytest.raises(ValueError):
        time_paired(contestants[:1], (1,), [1], threads=QUIET)


def _fake_counters(monkeypatch: pytest.MonkeyPatch, busy: list[float], own: list[float], wall: list[float]) -> None:
    monkeypatch.setattr(paired, "_system_busy_s", lambda: busy.pop(0))
    monkeypatch.setattr(paired, "_own_cpu_s", lambda _proc: own.pop(0))
    monkeypatch.setattr(paired.time, "perf_counter", lambda: wall.pop(0))


def test_contention_arithmetic_separates_own_cpu_from_others(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 s of wall time; the machine was busy 3.0 CPU-s, of which this process used 1.9: others used 0.55 cores.
    _fake_counters(monkeypatch, busy=[100.0, 103.0], own=[10.0, 11.9], wall=[50.0, 52.0])
    with ContentionMonitor() as mon:
        pass
    assert mon.load is not None
    assert mon.load.own_cores == pytest.approx(0.95)
    assert mon.load.others_cores == pytest.approx(0.55)
    assert mon.load.contended


def test_quiet_counters_are_not_contended(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_counters(monkeypatch, busy=[100.0, 102.1], own=[10.0, 11.95], wall=[50.0, 51.0])
    with ContentionMonitor() as mon:
        pass
    assert mon.load is not None and mon.load.others_cores == pytest.approx(0.15)
    assert not mon.load.contended


@pytest.fixture
def busy_process() -> Iterator[subprocess.Popen[bytes]]:
    """A synthetic competitor: one process spinning on a core."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)  # let it start spinning
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_busy_process_is_detected_and_makes_the_timing_unreliable(busy_process: Any) -> None:
    with ContentionMonitor() as mon:
        time.sleep(1.0)
    assert mon.load is not None
    assert mon.load.others_cores > 0.5, mon.load  # one spinning process is about one core
    timing = time_paired([Contestant("baseline", "a", SpinRuntime(4.0)), Contestant("x", "b", SpinRuntime(2.0))],
                         (1,), [1], threads=QUIET, rounds=5, iters=50, warmup=0, settle_s=0.0)  # ~0.6 s
    assert not timing.reliable
    assert "other processes used" in timing.reason
    assert timing.to_dict()["contention"]["contended"] is True


def _timing(blocks: list[list[float]], threads: ThreadChoice, others: float = 0.0) -> PairedTiming:
    load = CpuLoad(1.0, 1.0, others, 2)
    t = PairedTiming([("baseline", "a"), ("x", "b")], len(blocks[0]), threads, [BatchTiming(1, blocks, [1, 1], load)],
                     load)
    t.problems = reliability_problems(t)
    return t


def test_wide_interval_and_oversubscribed_threads_are_unreliable() -> None:
    steady = _timing([[10.0] * 10, [2.0, 2.1, 1.9, 2.0, 2.0, 2.05, 1.95, 2.0, 2.0, 2.0]], QUIET)
    assert steady.reliable, steady.reason
    noisy = _timing([[10.0] * 10, [2.0, 4.0, 1.0, 2.0, 6.0, 1.2, 2.0, 3.0, 1.0, 2.0]], QUIET)
    assert not noisy.reliable and "wider than ±15%" in noisy.reason
    crowded = _timing([[10.0] * 10, [2.0] * 10], ThreadChoice(2, 2, 1.4, auto=False), others=1.4)
    assert "2 threads on about 0.6 free core(s)" in crowded.reason


def test_auto_threads_leave_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paired, "usable_cores", lambda: 2)

    def probe(others: float) -> Any:
        return lambda _s: CpuLoad(0.3, 0.0, others, 2)

    assert choose_threads(0, probe=probe(0.05)).threads == 2
    assert choose_threads(0, probe=probe(1.3)).threads == 1  # two busy competitors on 2 cores
    assert choose_threads(0, probe=probe(3.0)).threads == 1  # never fewer than one
    fixed = choose_threads(4, probe=probe(1.3))
    assert fixed.threads == 4 and not fixed.auto and "bench.threads" in fixed.reason


# ------------------------------------------------------------------------------------- like with like


def _m(**kw: Any) -> dict[str, Any]:
    return kw


def test_latency_only_at_the_same_batch_and_throughput_only_with_the_same_threads() -> None:
    base = _m(bench=[{"batch_size": 1, "p50_ms": 4.0, "throughput": 250.0},
                     {"batch_size": 64, "p50_ms": 64.0, "throughput": 1000.0}], threads=2, accuracy=0.9)
    cand = _m(bench=[{"batch_size": 1, "p50_ms": 1.0, "throughput": 1000.0},
                     {"batch_size": 64, "p50_ms": 16.0, "throughput": 4000.0}], threads=2, accuracy=0.89)
    c = compare_measurements(base, cand)
    assert c["latency"] == {"batch": 1, "ratio": 4.0, "comparable": True}
    assert c["throughput"] == {"batch": 64, "ratio": 4.0, "comparable": True}
    assert c["accuracy_delta_pts"] == pytest.approx(-1.0)

    at_8 = _m(bench=[{"batch_size": 8, "p50_ms": 2.0, "throughput": 4000.0}], threads=2)
    c = compare_measurements(base, at_8)
    assert c["latency"]["comparable"] is False
    assert c["latency"]["reason"] == "not comparable: latency measured at batch 1, 64 vs 8"
    assert c["throughput"]["comparable"] is False

    other_threads = {**cand, "threads": 1}
    c = compare_measurements(base, other_threads)
    assert c["latency"]["comparable"] is True
    assert c["throughput"] == {"comparable": False, "reason": "not comparable: throughput measured with 2 vs 1 threads"}


def test_run_comparisons_say_whether_they_are_paired() -> None:
    base = _m(latency_ms_p50=4.0, latency_batch=1)
    final = _m(latency_ms_p50=0.5, latency_batch=1)
    sequential = compare_run_to_baseline({"baseline": base, "final": final})
    assert sequential is not None
    assert sequential["paired"] is False and "not interleaved" in sequential["caveat"]
    assert sequential["latency"]["ratio"] == 8.0
    speedup = {"paired": True, "reliable": True, "reason": "", "rounds": 10,
               "latency": {"1": {"ratio": 5.5, "ci95": [5.2, 5.8]}}, "throughput": {}, "steps": []}
    paired_cmp = compare_run_to_baseline({"baseline": base, "final": final, "speedup": speedup})
    assert paired_cmp is not None
    assert paired_cmp["paired"] is True and paired_cmp["latency"]["ratio"] == 5.5 and paired_cmp["caveat"] == ""
    across = compare_runs(base, final)
    assert across["paired"] is False and "separate runs at different times" in across["caveat"]


# ------------------------------------------------------------------------------------------ pipeline


def test_static_int8_run_records_the_paired_speedup_split_by_cause(tmp_path: Path) -> None:
    r = tiny_recipe("paired-int8", threads=1, rounds=5)
    r.quantize = QuantizeSection(method="static", calibration_samples=32)
    with RunStore(tmp_path / "runs.sqlite") as store:
        out = run_recipe(r, store=store)
        assert out.status == "completed", out.error
        sp = out.summary["speedup"]
        assert sp["paired"] is True and isinstance(sp["reliable"], bool)
        assert set(sp["latency"]) == {"1", "8"}
        assert [s["name"] for s in sp["steps"]] == ["runtime switch", "quantize"]
        assert sp["steps"][0]["detail"] == "torch eager fp32 → onnxruntime fp32"
        assert sp["steps"][1]["detail"] == "onnxruntime fp32 → onnxruntime static INT8"
        assert sp["threads"]["threads"] == 1
        if not sp["reliable"]:
            assert sp["reason"]
        # Every timing records its thread count and the competition it saw.
        assert out.summary["baseline"]["threads"] == 1 and "contention" in out.summary["baseline"]
        assert out.summary["environment"]["threads"]["threads"] == 1
        stored = store.get_run(out.run_id)
        assert stored is not None and stored.summary["speedup"]["steps"] == sp["steps"]


def test_a_run_without_stages_has_no_speedup_record(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.sqlite") as store:
        out = run_recipe(tiny_recipe("plain", threads=1), store=store)
    assert out.status == "completed" and "speedup" not in out.summary


class NoisyRuntime(SpinRuntime):
    """A model whose call time jumps between 0.1 and 0.3 ms at random: a wide interval at first."""

    def __init__(self, seed: int) -> None:
        super().__init__(0.1)
        self.rng = __import__("random").Random(seed)

    def timed_call(self, batch: Any) -> tuple[Any, None]:
        return (lambda: _spin(self.rng.choice((0.1, 0.3)))), None


def test_rounds_continue_while_the_interval_is_wide_and_stop_when_it_is_tight() -> None:
    steady = time_paired([Contestant("baseline", "a", SpinRuntime(0.4)), Contestant("x", "b", SpinRuntime(0.1))],
                         (1,), [1], threads=QUIET, rounds=8, iters=24, warmup=0, settle_s=0.0, max_time_s=5.0)
    assert steady.rounds == 8  # tight from the start: no extra rounds
    noisy = time_paired([Contestant("baseline", "a", NoisyRuntime(1)), Contestant("x", "b", NoisyRuntime(2))],
                        (1,), [1], threads=QUIET, rounds=8, iters=8, warmup=0, settle_s=0.0, max_time_s=5.0,
                        max_rounds=40)
    assert noisy.rounds > 8 and noisy.rounds <= 40
