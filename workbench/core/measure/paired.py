"""Paired before/after timing: the models of one run timed in interleaved rounds, in one process.

A speedup read from two separate measurements is at the mercy of whatever else the machine did in
between: on a 2-core laptop with two busy processes, a small CNN's batch-1 latency went from 1.5 ms
to 120 ms and a stored "speedup" read 265x. Here every model of a run (the baseline, each stage's
result, the unoptimized model on the final runtime) is timed round by round, A B C … then … C B A,
on the same input, thread count and runtime settings. Each round yields one ratio per pair; the
speedup is the median of those ratios with a distribution-free 95 % confidence interval, so a
disturbance hits both sides of a ratio alike instead of one side only.

Contention is measured, not guessed: during the timing, CPU time used by other processes (system
busy time minus this process's) is divided by wall time. If others used more than a quarter of a
core, if the timing used more threads than there were free cores, or if a speedup's interval is
wider than ±15 % of it, the result is marked unreliable with the reason.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from workbench.core.events import CancelToken, Reporter
from workbench.core.measure.timing import time_one_call_ns
from workbench.core.telemetry import paused_for_timing

__all__ = [
    "CONTENTION_LIMIT_CORES",
    "CI_LIMIT",
    "Contestant",
    "ContentionMonitor",
    "CpuLoad",
    "ThreadChoice",
    "choose_threads",
    "median_ci95",
    "time_paired",
    "usable_cores",
]

#: Other processes using more than this many cores on average make a timing unreliable.
CONTENTION_LIMIT_CORES = 0.25
#: A speedup whose 95 % interval reaches further than this fraction from it is unreliable.
CI_LIMIT = 0.15
#: Fewer rounds than this and the interval says too little (5 rounds: 94 % coverage at best).
MIN_ROUNDS = 5
#: Rounds keep coming until the interval is tight enough, up to this many (and the time budget).
MAX_ROUNDS = 60
#: Untimed rounds first: a fresh thread pool and cold caches make the first rounds slow.
WARMUP_ROUNDS = 2
#: Shorter spans than this are not judged on their own: the CPU counters tick every 10 ms.
MIN_LOAD_SPAN_S = 0.5


# ----------------------------------------------------------------------------------------- statistics


def median_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """Median and a distribution-free 95 % CI of it, from order statistics (exact binomial).

    The interval is ``[x_(k), x_(n+1-k)]`` with the largest ``k`` for which
    ``P(Binomial(n, 1/2) <= k-1) <= 2.5 %``. Below 6 values no such ``k`` exists and the interval is
    the full range (coverage ``1 - 2/2^n``: 94 % for 5 rounds). Returns ``(median, lo, hi)``.
    """
    x = sorted(float(v) for v in values)
    n = len(x)
    if n == 0:
        raise ValueError("median_ci95 needs at least one value")
    med = float(np.median(x))
    k, cdf = 1, 0.0
    for j in range(n + 1):
        cdf += math.comb(n, j) / 2.0**n
        if cdf > 0.025:
            break
        k = j + 1
    k = min(k, (n + 1) // 2)
    return med, x[k - 1], x[n - k]


# ----------------------------------------------------------------------------------------- contention


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS/Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _system_busy_s() -> float:
    """Seconds of CPU time the whole machine spent busy (all CPUs summed), including steal time.

    Steal is time a hypervisor gave to other machines: on a cloud VM that is competition too.
    On Linux, guest time is already inside user/nice, so it is not added again.
    """
    t = psutil.cpu_times()
    return sum(float(getattr(t, name, 0.0)) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def _own_cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


@dataclass
class CpuLoad:
    """What the CPU did during a measured span: our share, everyone else's, and the machine's size."""

    wall_s: float
    own_cores: float  # this process's CPU time / wall time (all its threads)
    others_cores: float  # other processes' CPU time / wall time, in cores
    machine_cores: int  # CPUs the system counters cover

    @property
    def contended(self) -> bool:
        return self.others_cores > CONTENTION_LIMIT_CORES

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 4), "own_cores": round(self.own_cores, 3),
                "others_cores": round(self.others_cores, 3), "machine_cores": self.machine_cores,
                "contended": self.contended}


class ContentionMonitor:
    """Measures how much CPU other processes took while a block ran (a context manager).

    Without ``include_children`` it reads two counters at entry and exit (the system's busy time and
    this process's CPU time), so it costs nothing while the block runs. With ``include_children``
    (a block that starts DataLoader workers, which are children or, through a forkserver,
    grandchildren) a small thread samples the descendants' CPU time every ``interval_s`` so their
    work counts as ours, not as competition; what a worker spends between its last sample and its
    exit is missed (at most ``interval_s`` per worker). ``load`` is set on exit; ``snapshot()`` gives
    the load so far while still inside the block.
    """

    def __init__(self, include_children: bool = False, interval_s: float = 0.2) -> None:
        self._proc = psutil.Process()
        self.load: CpuLoad | None = None
        self._t0 = self._busy0 = self._own0 = 0.0
        self.include_children = include_children
        self.interval_s = interval_s
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample_children(self, initial: bool = False) -> None:
        try:
            children = self._proc.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            try:
                key = (child.pid, child.create_time())
                cpu = _own_cpu_s(child)
            except psutil.Error:  # exited meanwhile
                continue
            self._first.setdefault(key, cpu if initial else 0.0)
            self._last[key] = cpu

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample_children()

    def __enter__(self) -> ContentionMonitor:
        if self.include_children:
            self._sample_children(initial=True)
            self._thread = threading.Thread(target=self._sample_loop, name="contention-monitor", daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        self._busy0 = _system_busy_s()
        self._own0 = _own_cpu_s(self._proc)
        return self

    def snapshot(self) -> CpuLoad:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        busy = _system_busy_s() - self._busy0
        own = max(_own_cpu_s(self._proc) - self._own0, 0.0)
        own += sum(max(self._last[k] - self._first[k], 0.0) for k in self._last)
        # Counters tick at 10 ms: tiny negative differences are rounding, not negative load.
        return CpuLoad(wall, own / wall, max(busy - own, 0.0) / wall, psutil.cpu_count() or 1)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._sample_children()
        self.load = self.snapshot()


#: The idle window that measures other processes' load before a run chooses its threads: the CPU counters
#: tick every 10 ms, so 0.2 s on 2 cores is 40 ticks, fine enough to tell a quarter of a core apart.
PROBE_S = 0.2


def measure_others_load(seconds: float = PROBE_S) -> CpuLoad:
    """Other processes' CPU use over a short idle window of ours (used before choosing threads)."""
    with ContentionMonitor() as mon:
        time.sleep(seconds)
    assert mon.load is not None
    return mon.load


@dataclass
class ThreadChoice:
    """The intra-op thread count a run uses, and why."""

    threads: int
    cores: int
    others_cores: float
    auto: bool

    @property
    def free_cores(self) -> float:
        return max(self.cores - self.others_cores, 0.0)

    @property
    def reason(self) -> str:
        if not self.auto:
            return f"{self.threads} thread(s) as set in bench.threads"
        return (f"{self.threads} thread(s): {self.cores} usable core(s), other processes using "
                f"{self.others_cores:.2f} of them")

    def to_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "cores": self.cores, "others_cores": round(self.others_cores, 3),
                "auto": self.auto, "reason": self.reason}


def choose_threads(requested: int = 0, probe_s: float = PROBE_S,
                   probe: Callable[[float], CpuLoad] = measure_others_load) -> ThreadChoice:
    """``requested`` threads, or (0 = auto) one per core that other processes leave free.

    A busy core turns torch's intra-op barriers into milliseconds of waiting, so auto never uses a
    core that others keep busy: a core counts as free while others use less than a quarter of it.
    """
    cores = usable_cores()
    if requested > 0:
        return ThreadChoice(requested, cores, probe(probe_s).others_cores if probe_s > 0 else 0.0, auto=False)
    others = probe(probe_s).others_cores if probe_s > 0 else 0.0
    free = cores - others
    threads = max(1, min(cores, math.floor(free + CONTENTION_LIMIT_CORES)))
    return ThreadChoice(threads, cores, others, auto=True)


# ------------------------------------------------------------------------------------------ paired timing


@dataclass
class Contestant:
    """One model in a paired timing: the step that produced it, a label, and a runtime to call.

    ``runtime`` offers ``timed_call(batch) -> (fn, sync)`` (see ``engine.runtimes``), optionally
    ``min_warmup`` (compiled runtimes). The first contestant is the baseline, the last the final
    model; each later one is the result of the step named ``step``.
    """

    step: str
    label: str
    runtime: Any


@dataclass
class BatchTiming:
    batch: int
    blocks_ms: list[list[float]]  # per contestant: one block median per round
    calls_per_block: list[int]
    load: CpuLoad


@dataclass
class PairedTiming:
    """The paired result of one run: per batch size, every contestant's round medians and the ratios."""

    contestants: list[tuple[str, str]]  # (step, label)
    rounds: int
    threads: ThreadChoice
    batches: list[BatchTiming]
    load: CpuLoad
    problems: list[str] = field(default_factory=list)

    # -- ratios -------------------------------------------------------------------------------------
    def ratios(self, batch: BatchTiming, a: int, b: int) -> list[float]:
        """Per-round time ratios t_a / t_b (> 1: contestant b is faster)."""
        return [ta / tb for ta, tb in zip(batch.blocks_ms[a], batch.blocks_ms[b], strict=True) if tb > 0]

    def _ratio_entry(self, batch: BatchTiming, a: int, b: int) -> dict[str, Any]:
        med, lo, hi = median_ci95(self.ratios(batch, a, b))
        return {"ratio": med, "ci95": [lo, hi]}

    def against_first(self) -> dict[str, dict[str, Any]]:
        """Per contestant after the first, per batch size: its paired ratio against the first (> 1: faster)."""
        return {self.contestants[i][0]: {str(bt.batch): self._ratio_entry(bt, 0, i) for bt in self.batches}
                for i in range(1, len(self.contestants))}

    @property
    def reliable(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)

    def headline(self) -> dict[str, Any] | None:
        """The batch-size entry a one-line summary quotes: the smallest batch (latency)."""
        if not self.batches:
            return None
        b = min(self.batches, key=lambda t: t.batch)
        return {"batch": b.batch, **self._ratio_entry(b, 0, len(self.contestants) - 1)}

    def to_dict(self) -> dict[str, Any]:
        """The ``speedup`` object of a run summary (the CLI's ``--json`` contract)."""
        last = len(self.contestants) - 1
        latency: dict[str, Any] = {}
        throughput: dict[str, Any] = {}
        models = [{"step": s, "label": lab, "p50_ms": {}} for s, lab in self.contestants]
        for bt in self.batches:
            entry = self._ratio_entry(bt, 0, last)
            base_ms = float(np.median(bt.blocks_ms[0]))
            final_ms = float(np.median(bt.blocks_ms[last]))
            latency[str(bt.batch)] = {**entry, "baseline_ms": base_ms, "final_ms": final_ms}
            if bt.batch > 1:  # per-sample throughput at the same batch size: the same ratio, stated as such
                throughput[str(bt.batch)] = {**entry, "baseline_per_s": bt.batch / base_ms * 1e3,
                                             "final_per_s": bt.batch / final_ms * 1e3}
            for i, m in enumerate(models):
                m["p50_ms"][str(bt.batch)] = float(np.median(bt.blocks_ms[i]))
        steps = []
        head = min(self.batches, key=lambda t: t.batch) if self.batches else None
        for i in range(1, len(self.contestants)):
            by_batch = {str(bt.batch): self._ratio_entry(bt, i - 1, i) for bt in self.batches}
            step, label = self.contestants[i]
            entry: dict[str, Any] = {"name": step, "detail": f"{self.contestants[i - 1][1]} → {label}",
                                     "by_batch": by_batch}
            if head is not None:
                entry.update(batch=head.batch, **by_batch[str(head.batch)])
            steps.append(entry)
        return {
            "paired": True,
            "reliable": self.reliable,
            "reason": self.reason,
            "rounds": self.rounds,
            "threads": self.threads.to_dict(),
            "contention": self.load.to_dict(),
            "latency": latency,
            "throughput": throughput,
            "steps": steps,
            "models": models,
            "calls_per_block": {str(bt.batch): bt.calls_per_block for bt in self.batches},
            "rounds_by_batch": {str(bt.batch): len(bt.blocks_ms[0]) for bt in self.batches},
        }


#: The shortest timed block per contestant and round (ms): long enough that its median is not one
#: timer tick or one preemption, short enough that 60 rounds of every contestant fit the time budget.
BLOCK_MS = 25.0
#: Pause before each block: long enough for the previous runtime's spinning worker threads (OpenMP in
#: torch, onnxruntime's pool) to go to sleep, so one runtime's threads do not steal cores from the next.
SETTLE_S = 0.01


def _block_median_ms(fn: Callable[[], Any], sync: Callable[[], None] | None, calls: int,
                     settle_s: float = 0.0) -> float:
    """Median of ``calls`` timed calls, after a settle pause and one untimed call (wakes the thread pool)."""
    if settle_s > 0:
        time.sleep(settle_s)
        fn()
    per = getattr(fn, "n", 1)  # a stream call covers ``n`` batches: report the time per batch
    return float(np.median([time_one_call_ns(fn, sync) / 1e6 / per for _ in range(calls)]))


def time_paired(
    contestants: Sequence[Contestant],
    input_shape: Sequence[int],
    batch_sizes: Sequence[int],
    *,
    threads: ThreadChoice,
    rounds: int = 10,
    iters: int = 50,
    warmup: int = 5,
    max_time_s: float = 10.0,
    cancel: CancelToken | None = None,
    reporter: Reporter | None = None,
    seed: int = 0,
    make_batch: Callable[[int], np.ndarray] | None = None,
    settle_s: float = SETTLE_S,
    stream: Callable[[int], Sequence[np.ndarray]] | None = None,
    max_rounds: int = MAX_ROUNDS,
) -> PairedTiming:
    """Time every contestant in interleaved rounds per batch size; see the module docstring.

    Each round runs a block of ``k`` calls per contestant (enough calls to last ``BLOCK_MS``, at least
    ``iters / rounds``, fewer when ``max_rounds × contestants`` blocks would outlast ``max_time_s`` per
    batch size, never under one) and keeps the block's median. Rounds alternate direction (A B C,
    C B A, …) so a slow drift in machine speed cancels out. Two untimed rounds come first (the first
    rounds of a fresh thread pool run slow). After ``rounds`` rounds, timing goes on until the 95 %
    interval of the first-vs-last ratio is within ±``CI_LIMIT`` of it, ``max_rounds`` are done, or
    ``max_time_s`` has passed: sub-millisecond calls on a small VM are noisy, and more rounds tighten
    the interval. The caller fixes the thread count (``threads``) for torch and builds onnxruntime
    sessions with the same count (and without spin-waiting pools, see ``OrtRuntime``) before calling.
    """
    if len(contestants) < 2:
        raise ValueError("paired timing needs a baseline and at least one other model")
    rounds = max(rounds, MIN_ROUNDS)
    max_rounds = max(max_rounds, rounds)
    rng = np.random.default_rng(seed)
    n = len(contestants)
    results: list[BatchTiming] = []
    total_steps = len(batch_sizes) * rounds
    with paused_for_timing(), ContentionMonitor() as whole:  # no telemetry ticks between the rounds
        for bi, b in enumerate(batch_sizes):
            if stream is not None:
                # Data-dependent models (early exits): each call runs a stream of different real batches,
                # and a call's time is divided by their number, so a block is a mean over many inputs.
                calls = [_stream_call(c.runtime, stream(b)) for c in contestants]
            else:
                batch = make_batch(b) if make_batch is not None else \
                    rng.standard_normal((b, *input_shape), dtype=np.float32)
                calls = [c.runtime.timed_call(batch) for c in contestants]
            for c, (fn, sync) in zip(contestants, calls, strict=True):
                for _ in range(max(warmup, int(getattr(c.runtime, "min_warmup", 0)), 1)):
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    fn()
                if sync is not None:
                    sync()
            # Estimate each model's call time to size blocks within the time budget.
            est_ms = [_block_median_ms(fn, sync, 3) * getattr(fn, "n", 1) for fn, sync in calls]  # per call
            # A block lasts at least BLOCK_MS (a median over a handful of sub-millisecond calls is mostly
            # scheduler noise), never fewer than iters / rounds calls, and fits the time budget.
            want = max(1, math.ceil(iters / rounds))
            budget_ms = max_time_s * 1e3 / (max_rounds * n)
            per_block = [max(1, min(max(want, math.ceil(BLOCK_MS / max(e, 1e-6))), int(budget_ms // max(e, 1e-6))))
                         for e in est_ms]

            def one_round(r: int, record: bool, blocks: list[list[float]], per_block: list[int] = per_block,
                          calls: list = calls) -> None:
                order = range(n) if r % 2 == 0 else range(n - 1, -1, -1)
                for i in order:
                    fn, sync = calls[i]
                    ms = _block_median_ms(fn, sync, per_block[i], settle_s)
                    if record:
                        blocks[i].append(ms)

            for r in range(WARMUP_ROUNDS):
                one_round(r, False, [])
            blocks: list[list[float]] = [[] for _ in range(n)]
            t0 = time.perf_counter()
            with ContentionMonitor() as mon:
                r = 0
                while True:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    if reporter is not None:
                        reporter.progress(bi * rounds + min(r, rounds - 1), total_steps,
                                          f"paired timing: batch {b}, round {r + 1}")
                    one_round(r, True, blocks)
                    r += 1
                    if r < rounds:
                        continue
                    if r >= max_rounds or time.perf_counter() - t0 >= max_time_s:
                        break
                    med, lo, hi = median_ci95([x / y for x, y in zip(blocks[0], blocks[-1], strict=True) if y > 0])
                    if med > 0 and med - lo <= CI_LIMIT * med and hi - med <= CI_LIMIT * med:
                        break
            assert mon.load is not None
            results.append(BatchTiming(b, blocks, per_block, mon.load))
    if reporter is not None:
        reporter.progress(total_steps, total_steps, "paired timing done")
    assert whole.load is not None
    used = max((len(bt.blocks_ms[0]) for bt in results), default=rounds)
    timing = PairedTiming([(c.step, c.label) for c in contestants], used, threads, results, whole.load)
    timing.problems = reliability_problems(timing)
    return timing


def _stream_call(runtime: Any, batches: Sequence[np.ndarray]) -> tuple[Callable[[], Any], None]:
    """One timed call over every batch of a stream; the block timer sees the mean time per batch."""
    if not batches:
        raise ValueError("a stream needs at least one batch")
    staged = [runtime.timed_call(b) for b in batches]
    syncs = [s for _, s in staged if s is not None]
    n = len(staged)

    def run_all() -> None:
        for fn, _ in staged:
            fn()
        for s in syncs[:1]:  # one device sync at the end covers queued work of every batch
            s()

    return _PerBatch(run_all, n), None


class _PerBatch:
    """A callable whose measured time the block timer divides by ``n`` (see ``_block_median_ms``)."""

    def __init__(self, fn: Callable[[], Any], n: int) -> None:
        self.fn, self.n = fn, n

    def __call__(self) -> Any:
        return self.fn()


def reliability_problems(timing: PairedTiming) -> list[str]:
    """Why a paired timing should not be trusted (empty when it can be)."""
    problems = []
    # The whole timing's load, or a batch size's where that span was long enough for the 10 ms CPU
    # counters to mean something (a 30 ms span reads 0 or 3 cores by chance).
    others = max([timing.load.others_cores,
                  *(bt.load.others_cores for bt in timing.batches if bt.load.wall_s >= MIN_LOAD_SPAN_S)])
    if others > CONTENTION_LIMIT_CORES:
        problems.append(f"other processes used {others:.2f} CPU cores on average while timing "
                        f"(more than {CONTENTION_LIMIT_CORES}); close them or re-run on a quiet machine")
    free = timing.threads.cores - others
    if timing.threads.threads > 1 and timing.threads.threads > max(free, 0.0) + 0.5:
        problems.append(f"{timing.threads.threads} threads on about {max(free, 0.0):.1f} free core(s): "
                        "threads waited for each other; set bench.threads lower or free the CPU")
    last = len(timing.contestants) - 1
    for bt in timing.batches:
        med, lo, hi = median_ci95(timing.ratios(bt, 0, last))
        if med > 0 and (med - lo > CI_LIMIT * med or hi - med > CI_LIMIT * med):
            problems.append(f"batch {bt.batch}: 95 % CI {lo:.2f}–{hi:.2f}x is wider than ±{CI_LIMIT:.0%} of "
                            f"{med:.2f}x")
    return problems
