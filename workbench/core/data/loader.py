"""DataLoader construction from a recipe's ``[loader]`` section, and a throughput probe for sweeps.

Rules encoded here (each one is a bug someone hit):
- worker processes start with ``spawn`` or ``forkserver``, never ``fork``: forking a process that
  runs Qt (or any) threads can deadlock. Forkserver preloads torch and our dataset module, so each
  worker starts in a fraction of a second instead of re-importing torch.
- ``prefetch_factor``/``persistent_workers``/the context only mean something with workers, and
  torch rejects some of them otherwise, so they are passed only when ``num_workers > 0``.
- ``pin_memory`` only helps copies to a CUDA device; without CUDA it is ignored (torch would warn).
- ``drop_last`` applies to training only (eval must see every sample), and never when it would
  leave an epoch with zero batches.
- shuffling uses a seeded generator, which also seeds each worker's torch RNG, so augmentation is
  reproducible for a given seed and worker count.
- a ``DataLoadError`` raised inside a worker arrives with the worker's whole traceback in its
  message; it is re-raised here as the original one-line error.
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from workbench.core.events import CancelToken
from workbench.errors import DataLoadError
from workbench.recipe import LoaderSection

_FORKSERVER_PRELOAD = ["torch", "workbench.core.data.sources"]


def _one_line(exc: DataLoadError) -> DataLoadError:
    """Recover the original message of a DataLoadError re-raised by DataLoader from a worker."""
    msg = str(exc)
    if "Original Traceback" not in msg:
        return exc
    for line in reversed(msg.strip().splitlines()):
        for prefix in ("workbench.errors.DataLoadError: ", "DataLoadError: "):
            if line.startswith(prefix):
                return DataLoadError(line[len(prefix) :])
    return DataLoadError(msg.strip().splitlines()[-1])


class _CleanIter:
    """Wraps a DataLoader iterator so worker-side DataLoadErrors surface as their one line."""

    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it

    def __iter__(self) -> _CleanIter:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._it)
        except DataLoadError as exc:
            raise _one_line(exc) from None

    def __len__(self) -> int:
        return len(self._it)  # type: ignore[arg-type]


class WorkbenchDataLoader(DataLoader):
    """A DataLoader whose iteration reports worker-side data errors as one line."""

    def __iter__(self) -> Any:  # type: ignore[override]
        return _CleanIter(super().__iter__())


def _mp_context(name: str) -> Any:
    methods = multiprocessing.get_all_start_methods()
    if name == "forkserver" and "forkserver" not in methods:
        name = "spawn"  # macOS/Windows without forkserver: spawn is the safe equivalent
    ctx = multiprocessing.get_context(name)
    if name == "forkserver":
        # Only takes effect before the fork server starts; harmless afterwards.
        ctx.set_forkserver_preload(_FORKSERVER_PRELOAD)
    return ctx


def _check_shared_cache(dataset: Dataset, num_workers: int) -> None:
    """With workers the image cache lives in shared memory (/dev/shm); drop it if that is too small."""
    need = getattr(dataset, "cache_nbytes_needed", 0) if getattr(dataset, "cache_enabled", False) else 0
    if not need or num_workers == 0:
        return
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return  # not Linux: shared memory is not a size-limited filesystem there
    if need > free // 2:
        reason = f"{need / 2**20:.0f} MiB cache exceeds half the free shared memory ({free / 2**20:.0f} MiB)"
        dataset.disable_cache(reason)  # type: ignore[attr-defined]
        warnings.warn(f"data cache disabled for worker processes: {reason}", RuntimeWarning, stacklevel=3)


def build_loader(
    dataset: Dataset, batch_size: int, loader: LoaderSection, train: bool, seed: int = 0, sampler: Any = None,
    length_aware: bool = False,
) -> DataLoader:
    """A DataLoader configured from the recipe, safe to use from a process running Qt threads.

    ``sampler`` (e.g. a ``DistributedSampler`` giving this process its shard) replaces shuffling.
    ``length_aware`` (token data only, ``batching.length_aware``): batches of similar lengths, each cut
    to its longest member (``tokens.LengthBatchSampler`` + ``tokens.trim_collate``).
    """
    from workbench.core.data.tokens import LengthBatchSampler, TokenDataset, trim_collate

    n = len(dataset)  # type: ignore[arg-type]
    workers = loader.num_workers
    drop_last = bool(train and loader.drop_last and n >= batch_size)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        _check_shared_cache(dataset, workers)
        kwargs.update(
            prefetch_factor=loader.prefetch_factor,
            persistent_workers=loader.persistent_workers,
            multiprocessing_context=_mp_context(loader.mp_context),
        )
    generator = torch.Generator()
    generator.manual_seed(seed)
    if length_aware and sampler is None and isinstance(dataset, TokenDataset):
        batches = LengthBatchSampler(dataset.lengths(), batch_size, shuffle=train, drop_last=drop_last, seed=seed)
        return WorkbenchDataLoader(dataset, batch_sampler=batches, collate_fn=trim_collate, num_workers=workers,
                                   pin_memory=bool(loader.pin_memory and torch.cuda.is_available()), **kwargs)
    return WorkbenchDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=bool(loader.pin_memory and torch.cuda.is_available()),
        drop_last=drop_last,
        generator=generator,
        **kwargs,
    )


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_len(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_len(next(iter(batch.values())))
    return 1


def measure_loader_throughput(
    loader: DataLoader, max_batches: int, cancel: CancelToken | None = None
) -> float:
    """Samples per second delivered by ``loader`` over up to ``max_batches`` batches.

    The first batch is a warm-up (worker start-up, first file opens) and is not timed unless it
    is the only one. Checks ``cancel`` every batch (raises ``Cancelled``).
    """
    if max_batches < 1:
        raise ValueError("max_batches must be >= 1")
    it = iter(loader)
    t0 = time.perf_counter()
    timed_samples = 0
    first_samples = 0
    t_first: float | None = None
    seen = 0
    try:
        for batch in it:
            if cancel is not None:
                cancel.raise_if_cancelled()
            k = _batch_len(batch)
            seen += 1
            if t_first is None:
                t_first = time.perf_counter()
                first_samples = k
            else:
                timed_samples += k
            if seen >= max_batches:
                break
    finally:
        del it
    t_end = time.perf_counter()
    if t_first is None:
        return 0.0
    if timed_samples == 0:
        dt = t_end - t0
        return first_samples / dt if dt > 0 else float("inf")
    dt = t_end - t_first
    return timed_samples / dt if dt > 0 else float("inf")
