"""Max-batch finder: double, then binary-search the largest training batch that fits.

On CUDA a batch "fits" when a real forward+backward step does not raise out-of-memory (the peak
is read from the allocator). On CPU nothing raises before the OS kills the process, so a batch
fits when its measured footprint stays under a memory budget: parameters, gradients and optimizer
state, plus the activations autograd really saved for that batch (counted with saved-tensor hooks).
The result is reported with a safety margin; it is never applied silently.

The search runs the caller's model in train mode on zero/random input, which would move its
BatchNorm statistics and leave it in train mode with gradients set: a pretrained model's baseline
would then be measured on corrupted statistics. ``find_max_batch`` therefore restores every buffer,
gradient and training flag it touched before returning (or raising). No copy of the model is made:
on CUDA a copy would occupy the very memory being measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import torch
from torch import nn

from workbench.core.events import CancelToken, Reporter
from workbench.core.precision import PrecisionPlan

MAX_SEARCH_BATCH = 65536


@dataclass
class MaxBatchResult:
    max_batch: int
    suggested_batch: int
    budget_bytes: int
    device: str
    tried: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _state_bytes(module: nn.Module) -> int:
    """Params + grads + two Adam moments: what any training step holds besides activations."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return 4 * params + buffers


def _cpu_step_bytes(module: nn.Module, input_shape: tuple[int, ...], batch: int, plan: PrecisionPlan) -> int:
    """Bytes one training step needs at this batch, measured from the tensors autograd saved."""
    saved = 0
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            saved += t.untyped_storage().nbytes()
        return t

    x = plan.to_input(torch.zeros((batch, *input_shape)))
    module.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), plan.autocast():
        out = module(x)
        out_bytes = out.numel() * out.element_size()
    del out
    input_bytes = x.numel() * x.element_size()
    return _state_bytes(module) + saved + 2 * input_bytes + 2 * out_bytes


def _cuda_step_bytes(module: nn.Module, input_shape: tuple[int, ...], batch: int, plan: PrecisionPlan) -> int | None:
    """Peak bytes of a real step on CUDA, or None on out-of-memory."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(plan.device)
    try:
        x = plan.to_input(torch.randn((batch, *input_shape)))
        module.train()
        with plan.autocast():
            out = module(x)
        out.float().sum().backward()
        module.zero_grad(set_to_none=True)
        torch.cuda.synchronize(plan.device)
        return int(torch.cuda.max_memory_allocated(plan.device))
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        # Freed by reference counting; no gc.collect() here: this runs on GUI job threads, where a
        # collection can free the GUI thread's Qt objects (deadlocks, crashes).
        x = out = None  # noqa: F841 - drop the batch before empty_cache() returns its memory
        module.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


@contextlib.contextmanager
def preserved_state(module: nn.Module) -> Iterator[None]:
    """Restore ``module``'s buffers, gradients and per-submodule training flags on exit.

    Parameters are not saved: the search runs no optimizer step, so it never changes them. Buffers
    (BatchNorm running statistics, counters) are copied to the CPU so the copy does not take device
    memory from the search. Gradients are set aside (``None`` during the search, so each step is
    measured from the same empty state) and put back afterwards.
    """
    modes = [(m, m.training) for m in module.modules()]
    buffers = {name: b.detach().to("cpu", copy=True) for name, b in module.named_buffers()}
    grads = {name: p.grad for name, p in module.named_parameters()}
    for p in module.parameters():
        p.grad = None
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in module.named_buffers():
                saved = buffers.get(name)
                if saved is not None and saved.shape == b.shape:
                    b.copy_(saved)
        for name, p in module.named_parameters():
            p.grad = grads.get(name)
        for m, training in modes:
            m.training = training


def find_max_batch(
    module: nn.Module,
    input_shape: tuple[int, ...],
    plan: PrecisionPlan,
    *,
    budget_bytes: int = 0,
    safety_margin: float = 0.1,
    start: int = 1,
    limit: int = MAX_SEARCH_BATCH,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> MaxBatchResult:
    """Largest batch whose training step fits; ``suggested_batch`` keeps ``safety_margin`` headroom.

    ``module`` comes back as it went in: buffers, gradients and training flags (``preserved_state``).
    """
    with preserved_state(module):
        return _find_max_batch(module, input_shape, plan, budget_bytes=budget_bytes, safety_margin=safety_margin,
                               start=start, limit=limit, reporter=reporter, cancel=cancel)


def _find_max_batch(
    module: nn.Module,
    input_shape: tuple[int, ...],
    plan: PrecisionPlan,
    *,
    budget_bytes: int = 0,
    safety_margin: float = 0.1,
    start: int = 1,
    limit: int = MAX_SEARCH_BATCH,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> MaxBatchResult:
    """The search itself; it moves BatchNorm statistics and training flags (the caller restores them)."""
    reporter = reporter or Reporter()
    on_cuda = plan.device.type == "cuda"
    if on_cuda:
        total = torch.cuda.get_device_properties(plan.device).total_memory
        budget = budget_bytes or total
    else:
        budget = budget_bytes or int(psutil.virtual_memory().available * 0.5)
    tried: list[dict[str, Any]] = []

    def measure(batch: int) -> int | None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        if on_cuda:
            used = _cuda_step_bytes(module, input_shape, batch, plan)
        else:
            used = _cpu_step_bytes(module, input_shape, batch, plan)
        fits = used is not None and used <= budget
        tried.append({"batch": batch, "bytes": used, "fits": fits})
        reporter.log(f"max-batch: batch {batch}: {'fits' if fits else 'does not fit'}"
                     + (f" ({used / 2**20:.1f} MiB)" if used else " (out of memory)"))
        return used if fits else None

    fits: Callable[[int], bool] = lambda b: measure(b) is not None  # noqa: E731
    reporter.stage_started("max_batch")
    lo = 0
    hi = max(1, start)
    while hi <= limit and fits(hi):
        lo = hi
        reporter.progress(len(tried), None, f"max-batch: {lo} fits, trying {hi * 2}")
        hi *= 2
    if lo == 0:
        result = MaxBatchResult(0, 0, budget, str(plan.device), tried)
        reporter.log(f"max-batch: even batch {hi} does not fit in {budget / 2**30:.2f} GiB", "warning")
        reporter.stage_finished("max_batch", result.to_dict())
        return result
    hi = min(hi, limit + 1)
    while hi - lo > max(1, lo // 32):  # binary search to ~3% precision
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    suggested = max(1, int(lo * (1.0 - safety_margin)))
    result = MaxBatchResult(lo, suggested, budget, str(plan.device), tried)
    reporter.log(f"max-batch: largest fitting batch {lo}; suggested {suggested} "
                 f"({safety_margin:.0%} safety margin). Not applied: set batching.batch_size to use it.")
    reporter.stage_finished("max_batch", result.to_dict())
    module.zero_grad(set_to_none=True)
    return result
