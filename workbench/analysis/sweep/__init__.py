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

from workbench.analysis.sweep.batch_grid import batch_sweep, precision_plan
from workbench.analysis.sweep.loader_grid import loader_configs, loader_sweep
from workbench.analysis.sweep.run import LOADER_CAVEAT, SweepOutcome, run_sweep
from workbench.analysis.sweep.spec import (
    PRECISIONS,
    BatchPoint,
    LoaderConfig,
    LoaderPoint,
    SweepSpec,
    best_within_budget,
)

__all__ = ["LOADER_CAVEAT", "PRECISIONS", "BatchPoint", "LoaderConfig", "LoaderPoint", "SweepOutcome", "SweepSpec", "batch_sweep",
           "best_within_budget", "loader_configs", "loader_sweep", "precision_plan", "run_sweep"]
