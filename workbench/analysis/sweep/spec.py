"""What a sweep measures (``SweepSpec``) and the plain records of its points."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from workbench.analysis.pareto import metric_value as _value
from workbench.core.budget import over_budget
from workbench.errors import WorkbenchError

PRECISIONS = ("fp32", "bf16", "fp16")


AUTOCAST = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}


#: Data sources decoded from files per sample: the only ones where ``data.cache`` changes anything.
CACHEABLE_SOURCES = ("default", "image_folder")


P = TypeVar("P")


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
