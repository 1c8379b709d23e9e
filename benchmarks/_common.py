"""What every benchmark prints beside its table, in one place: the machine, the command, the contention.

A ratio means little without the conditions it was measured in: the exact command, the CPU (model
and the instructions that decide bf16/INT8 speed: AVX-512 BF16, VNNI, AMX), the thread count, and
how much CPU other processes took meanwhile. The scripts in this folder print those lines from here.

Two kinds of ratio are reported:

- **paired** (``engine.paired.time_paired``): the contestants share one process and are timed in
  interleaved rounds; the ratio is the median of per-round ratios with a 95 % CI.
- **alternated**: configurations that cannot share a process's rounds (DataLoader worker
  processes, GUI vs headless) run one after another in the order A B, B A, A B, … (at least three
  repetitions each); each repetition gives one ratio, reported as the median with its range.
  ``TreeContentionMonitor`` counts this process's descendants (loader workers) as ours, not as
  competition.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` without an installed package
    sys.path.insert(0, str(ROOT))

from workbench.core.measure.paired import (  # noqa: E402
    CI_LIMIT,
    CONTENTION_LIMIT_CORES,
    ContentionMonitor,
    CpuLoad,
    PairedTiming,
    ThreadChoice,
    median_ci95,
)

#: The CPU flags that decide how fast bf16 and INT8 run on x86 (lscpu / /proc/cpuinfo spelling).
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
#: Fewer repetitions than this and an alternated ratio has no range worth the name.
MIN_REPETITIONS = 3

# ------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _lscpu_flags() -> set[str] | None:
    if shutil.which("lscpu") is None:
        return None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        if line.startswith("Flags:"):
            return set(line.split(":", 1)[1].split())
    return None


def cpu_flags() -> tuple[set[str], str]:
    """CPU flags and where they came from (``lscpu``, ``/proc/cpuinfo``, or nowhere)."""
    flags = _lscpu_flags()
    if flags is not None:
        return flags, "lscpu"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags") and ":" in line:
                return set(line.split(":", 1)[1].split()), "/proc/cpuinfo"
    except OSError:
        pass
    return set(), "unavailable"


def cpu_line() -> str:
    """``CPU: AMD EPYC, 2 logical CPUs (2 usable); lscpu flags: avx512_bf16 yes, …, amx_int8 no``."""
    flags, source = cpu_flags()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs ({usable} usable by this process)"
    if not flags:
        return text + "; CPU flags unavailable (no lscpu, no /proc/cpuinfo)"
    return text + f"; {source} flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in RELEVANT_FLAGS)


def software_line() -> str:
    """Python, torch and onnxruntime versions and the OS."""
    import torch

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:  # pragma: no cover - a project dependency
        ort = "not installed"
    return (f"Software: Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {ort}; "
            f"{platform.system()} {platform.release()}")


def command_line(argv: Sequence[str] | None = None, env: Sequence[str] = ()) -> str:
    """The exact command that produced the output, as a shell line (``env`` names variables to show)."""
    args = list(sys.argv if argv is None else argv)
    script = os.path.relpath(os.path.abspath(args[0])) if args else "?"
    python = os.path.relpath(sys.executable)
    if python.startswith(".."):  # outside the working directory: the absolute path says more
        python = sys.executable
    prefix = [f"{name}={shlex.quote(os.environ[name])}" for name in env if name in os.environ]
    return " ".join([*prefix, python, script, *map(shlex.quote, args[1:])])


def header_lines(title: str, argv: Sequence[str] | None = None, env: Sequence[str] = ()) -> list[str]:
    """Title, command, CPU and software lines that open every benchmark's output."""
    return [f"## {title}", "", f"Command: `{command_line(argv, env)}`  ", f"{cpu_line()}  ", software_line(), ""]


def print_header(title: str, argv: Sequence[str] | None = None, env: Sequence[str] = ()) -> None:
    print("\n".join(header_lines(title, argv, env)), flush=True)


def threads_line(choice: ThreadChoice | int, runtimes: str = "torch") -> str:
    """``Threads: 2 intra-op thread(s) for torch (2 thread(s): 2 usable core(s), …)``: how many, and why."""
    if isinstance(choice, int):
        return f"Threads: {choice} intra-op thread(s) for {runtimes}"
    return f"Threads: {choice.threads} intra-op thread(s) for {runtimes} ({choice.reason})"


# ----------------------------------------------------------------------------------------- contention


def contention_line(load: CpuLoad, what: str = "while timing") -> str:
    """``Contention while timing: others used 0.05 of 2 cores (this process 1.98): reliable``."""
    ok = load.others_cores <= CONTENTION_LIMIT_CORES
    verdict = "reliable" if ok else f"UNRELIABLE (others above {CONTENTION_LIMIT_CORES} cores)"
    return (f"Contention {what}: others used {load.others_cores:.2f} of {load.machine_cores} cores, this process "
            f"{load.own_cores:.2f}, over {load.wall_s:.1f} s: {verdict}")


def wide_intervals(timing: PairedTiming) -> list[str]:
    """Every ratio against the first contestant whose 95 % CI reaches beyond ±15 % of it (``label @ bN``)."""
    out = []
    for i, by_batch in enumerate(timing.against_first().values(), start=1):
        for b, e in by_batch.items():
            med, (lo, hi) = e["ratio"], e["ci95"]
            if med > 0 and (med - lo > CI_LIMIT * med or hi - med > CI_LIMIT * med):
                out.append(f"{timing.contestants[i][1]} @ b{b}")
    return out


def paired_lines(timing: PairedTiming, runtimes: str = "torch") -> list[str]:
    """The conditions of a paired timing: rounds, threads, contention per batch size, reliability with reason."""
    blocks = ", ".join(f"batch {bt.batch}: {bt.calls_per_block}" for bt in timing.batches)
    lines = [f"Paired: {len(timing.contestants)} contestants timed in {timing.rounds} interleaved rounds in one "
             f"process (A B C …, then … C B A); timed calls per block and contestant: {blocks}  ",
             threads_line(timing.threads, runtimes) + "  "]
    for bt in timing.batches:
        lines.append(contention_line(bt.load, f"at batch {bt.batch}") + "  ")
    wide = wide_intervals(timing)
    lines.append(f"Ratios with a 95 % CI wider than ±{CI_LIMIT:.0%}: {', '.join(wide) if wide else 'none'}  ")
    lines.append(f"Reliable (engine rule: contention, threads vs free cores, CI of first vs last): "
                 f"{'yes' if timing.reliable else 'NO: ' + timing.reason}")
    return lines


def TreeContentionMonitor(interval_s: float = 0.2) -> ContentionMonitor:  # noqa: N802 - reads as a class
    """The engine's monitor counting this process's descendants (loader workers, GUI children) as ours."""
    return ContentionMonitor(include_children=True, interval_s=interval_s)


# ------------------------------------------------------------------------------------ alternated runs


def alternating_order(configs: int, repetitions: int) -> Iterator[tuple[int, int]]:
    """(repetition, configuration) in the order A B C, C B A, A B C, …: drift hits every configuration alike."""
    for rep in range(repetitions):
        order = range(configs) if rep % 2 == 0 else range(configs - 1, -1, -1)
        for i in order:
            yield rep, i


@dataclass
class AlternatedRatio:
    """One configuration's ratio against the reference, one value per repetition."""

    values: list[float]
    loads: list[CpuLoad] = field(default_factory=list)  # both sides' loads of every repetition

    @property
    def median(self) -> float:
        return median_ci95(self.values)[0]

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def others_cores(self) -> float:
        """The worst competition seen in any measurement behind the ratio."""
        return max((ld.others_cores for ld in self.loads), default=0.0)

    def problems(self) -> list[str]:
        """Why the ratio should not be trusted: competition, too few repetitions, or a range wider than ±15 %."""
        out = []
        if len(self.values) < MIN_REPETITIONS:
            out.append(f"only {len(self.values)} repetition(s); at least {MIN_REPETITIONS} give a range")
        if self.others_cores > CONTENTION_LIMIT_CORES:
            out.append(f"other processes used up to {self.others_cores:.2f} CPU cores during a measurement "
                       f"(more than {CONTENTION_LIMIT_CORES})")
        med = self.median
        if med > 0 and (med - self.low > CI_LIMIT * med or self.high - med > CI_LIMIT * med):
            out.append(f"range {self.low:.2f}–{self.high:.2f}x is wider than ±{CI_LIMIT:.0%} of {med:.2f}x")
        return out

    def cell(self) -> str:
        """``1.87x (range 1.80–1.93, 3 reps)``."""
        return f"{fmt_x(self.median)} (range {fmt_x(self.low)}–{fmt_x(self.high)}, {len(self.values)} reps)"


ALTERNATED_NOTE = ("Alternated, NOT paired in-process: these configurations cannot share one process's interleaved "
                   "rounds, so they ran one after another in the order A B, B A, A B, … and each ratio is the "
                   "median over repetitions (one ratio per repetition, both sides measured back to back) with its "
                   "range. A change in machine load between the two sides of a repetition still moves it.")


# ------------------------------------------------------------------------------------------- tables


def fmt_x(ratio: float | None) -> str:
    """``3.52x`` (two decimals below 10, one above), ``—`` for nothing."""
    if ratio is None:
        return "—"
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def fmt_ratio_ci(entry: Mapping[str, Any] | None) -> str:
    """A paired entry ``{"ratio", "ci95": [lo, hi]}`` as ``3.52x (95 % CI 3.40–3.61)``."""
    if not entry:
        return "—"
    lo, hi = entry["ci95"]
    return f"{fmt_x(entry['ratio'])} (95 % CI {fmt_x(lo)}–{fmt_x(hi)})"


def ratio_entry(timing: PairedTiming, batch: int, a: int, b: int) -> dict[str, Any]:
    """Paired ratio t_a / t_b at ``batch`` (> 1: contestant ``b`` is faster) with its 95 % CI."""
    bt = next(t for t in timing.batches if t.batch == batch)
    med, lo, hi = median_ci95(timing.ratios(bt, a, b))
    return {"ratio": med, "ci95": [lo, hi]}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; ``align`` has one letter per column (``l``/``r``), left by default."""
    if any(len(r) != len(headers) for r in rows):
        raise ValueError(f"every row needs {len(headers)} cells")
    marks = [("---:" if (align[i:i + 1] == "r") else "---") for i in range(len(headers))]

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "|".join(marks) + "|", *(line(r) for r in rows)])
