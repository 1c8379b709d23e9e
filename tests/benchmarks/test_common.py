"""The benchmark scripts' shared helpers: tables, alternation, descendant-aware contention, the AMP adapter."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from torch import nn

from workbench.core.measure.paired import (
    BLOCK_MS,
    BatchTiming,
    ContentionMonitor,
    Contestant,
    CpuLoad,
    PairedTiming,
    ThreadChoice,
    time_paired,
)

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402
from bench_amp import TrainStepContestant  # noqa: E402

QUIET = CpuLoad(10.0, 1.0, 0.05, 2)
BUSY = CpuLoad(10.0, 1.0, 1.2, 2)


def test_markdown_table_aligns_escapes_and_rejects_ragged_rows() -> None:
    text = _common.markdown_table(["A", "B"], [["x|y", 1.5]], "lr")
    assert text.splitlines() == ["| A | B |", "|---|---:|", "| x\\|y | 1.5 |"]
    with pytest.raises(ValueError, match="2 cells"):
        _common.markdown_table(["A", "B"], [["only one"]])


def test_configurations_alternate_direction_every_repetition() -> None:
    assert list(_common.alternating_order(3, 3)) == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0),
                                                     (2, 0), (2, 1), (2, 2)]


def test_alternated_ratio_reports_median_range_and_why_it_is_unreliable() -> None:
    steady = _common.AlternatedRatio([1.9, 1.8, 2.0], [QUIET] * 6)
    assert (steady.median, steady.low, steady.high) == (1.9, 1.8, 2.0)
    assert steady.problems() == []
    assert steady.cell() == "1.90x (range 1.80x–2.00x, 3 reps)"
    wide = _common.AlternatedRatio([1.0, 1.5, 2.0], [QUIET] * 6)
    assert wide.problems() == ["range 1.00–2.00x is wider than ±15% of 1.50x"]
    loaded = _common.AlternatedRatio([1.9, 1.8, 2.0], [QUIET, BUSY])
    assert loaded.others_cores == 1.2 and "other processes used up to 1.20 CPU cores" in loaded.problems()[0]
    assert "only 2 repetition(s)" in _common.AlternatedRatio([1.9, 2.0], [QUIET]).problems()[0]


def test_paired_ratio_cells_come_from_the_per_round_ratios() -> None:
    blocks = [[10.0, 10.0, 10.0, 10.0, 10.0], [5.0, 4.0, 5.0, 2.5, 5.0], [2.0, 2.0, 2.0, 2.0, 2.0]]
    timing = PairedTiming([("baseline", "a"), ("x", "b"), ("y", "c")], 5, ThreadChoice(1, 2, 0.0, auto=True),
                          [BatchTiming(1, blocks, [1, 1, 1], QUIET)], QUIET)
    entry = _common.ratio_entry(timing, 1, 0, 1)  # per round 2, 2.5, 2, 4, 2: median 2, 5 rounds: full range
    assert entry == {"ratio": 2.0, "ci95": [2.0, 4.0]}
    assert _common.fmt_ratio_ci(entry) == "2.00x (95 % CI 2.00x–4.00x)"
    assert _common.ratio_entry(timing, 1, 1, 2)["ratio"] == 2.5
    lines = _common.paired_lines(timing)
    assert lines[-1].endswith(": yes") and "1 intra-op thread(s) for torch" in lines[1]
    assert lines[-2].endswith(": b @ b1  ")  # 2.00–4.00x reaches beyond ±15 % of 2.00x; c is exact


def test_contention_line_names_the_verdict() -> None:
    assert _common.contention_line(QUIET).endswith(": reliable")
    assert "UNRELIABLE" in _common.contention_line(BUSY) and "others used 1.20 of 2 cores" in _common.contention_line(
        BUSY)


def test_command_line_is_a_shell_line_with_the_named_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    line = _common.command_line(["benchmarks/bench_x.py", "--models", "a b"], env=("QT_QPA_PLATFORM", "NOT_SET_X"))
    assert line.startswith("QT_QPA_PLATFORM=offscreen ")
    assert line.endswith("benchmarks/bench_x.py --models 'a b'")
    assert "NOT_SET_X" not in line


def test_cpu_line_lists_the_bf16_and_int8_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "_lscpu_flags", lambda: {"avx2", "avx512_bf16"})
    line = _common.cpu_line()
    assert line.startswith(f"CPU: {_common.cpu_model()}")
    assert "lscpu flags: avx2 yes" in line and "avx512_bf16 yes" in line
    assert "avx512_vnni no" in line and "amx_int8 no" in line


_GRANDPARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", '''
import sys, time
end = time.perf_counter() + 0.8
while time.perf_counter() < end:
    pass
sys.stdin.read()  # stay alive (idle) until the test closes stdin
'''], stdin=sys.stdin)
child.wait()
"""


def test_descendants_cpu_counts_as_ours_not_as_competition() -> None:
    """A grandchild (like a DataLoader worker under a forkserver) spins: the tree monitor books it as ours."""
    with ContentionMonitor() as plain, _common.TreeContentionMonitor(interval_s=0.05) as tree:
        proc = subprocess.Popen([sys.executable, "-c", _GRANDPARENT], stdin=subprocess.PIPE)
        time.sleep(1.5)  # the grandchild spins for 0.8 s of wall time, then idles
        descendants = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
    try:
        spent = sum(p.cpu_times().user + p.cpu_times().system for p in descendants)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    assert plain.load is not None and tree.load is not None
    assert len(descendants) == 2 and spent > 0.2  # the grandchild got real CPU time
    booked = tree.load.own_cores * tree.load.wall_s - plain.load.own_cores * plain.load.wall_s
    assert booked == pytest.approx(spent, abs=0.1)
    assert tree.load.others_cores < plain.load.others_cores


def test_training_step_contestant_trains_and_times_paired() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    fp32 = TrainStepContestant(model, None, warmup=1)
    before = model[1].weight.detach().clone()
    step, sync = fp32.timed_call(np.ones((4, 3, 2, 2), dtype=np.float32))
    losses = [step() for _ in range(20)]
    assert sync is None and losses[-1] < losses[0]  # one fixed batch: the loss must fall
    assert not torch.equal(before, model[1].weight)
    bf16 = TrainStepContestant(nn.Sequential(nn.Flatten(), nn.Linear(12, 10)), torch.bfloat16, warmup=1)
    timing = time_paired([Contestant("baseline", "fp32", fp32), Contestant("bf16 autocast", "bf16", bf16)],
                         (3, 2, 2), [4], threads=ThreadChoice(1, 2, 0.0, auto=True), rounds=5, iters=10,
                         warmup=1, settle_s=0.0)
    calls = timing.to_dict()["calls_per_block"]["4"]
    assert all(n >= 2 for n in calls)  # iters / rounds at least; more while a block is shorter than BLOCK_MS
    for n, blocks in zip(calls, timing.batches[0].blocks_ms, strict=True):
        assert n == 2 or n * min(blocks) <= 3 * BLOCK_MS  # not more calls than BLOCK_MS asks for
    assert timing.against_first()["bf16 autocast"]["4"]["ratio"] > 0
    fp32.close()
    with pytest.raises(RuntimeError, match="closed"):
        fp32.timed_call(np.ones((4, 3, 2, 2), dtype=np.float32))
