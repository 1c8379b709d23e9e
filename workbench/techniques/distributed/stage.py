"""The ``[distributed]`` stage: data-parallel training inside a ``torch.distributed.run`` launch.

It has no optimization step of its own; around the pipeline's training step it gives this rank its
shard of the training set (``DistributedSampler``) and wraps the model in ``DistributedDataParallel``
(gradients averaged across ranks every step), then unwraps it so rank 0 evaluates, benchmarks and
saves the plain model. Outside a launch (one process) it does not apply: the launcher starts one.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.core.data import build_loader
from workbench.core.pipeline import RunContext, Stage
from workbench.recipe import Recipe


def distributed_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when no process group is running."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _applies(recipe: Recipe) -> bool:
    return recipe.distributed is not None and distributed_world()[1] > 1


def _before_train(ctx: RunContext) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    rank, world = distributed_world()
    recipe = ctx.recipe
    b = recipe.batching
    sampler = DistributedSampler(ctx.data.train, num_replicas=world, rank=rank, shuffle=True, seed=recipe.train.seed,
                                 drop_last=recipe.loader.drop_last)
    ctx.train_loader = build_loader(ctx.data.train, b.batch_size, recipe.loader, train=True, seed=recipe.train.seed,
                                    sampler=sampler)
    device_ids = [ctx.plan.device.index or 0] if ctx.plan.device.type == "cuda" else None
    ctx.module = DistributedDataParallel(ctx.module, device_ids=device_ids)
    info: dict[str, Any] = {
        "world_size": world, "backend": dist.get_backend(), "per_rank_batch": b.batch_size,
        "global_batch": b.batch_size * world * b.grad_accum_steps, "lr": recipe.train.lr,
        "per_rank_samples": len(sampler), "threads_per_rank": torch.get_num_threads(),
    }
    ctx.summary["distributed"] = info
    ctx.reporter.log(f"distributed: {world} ranks ({info['backend']}), batch {b.batch_size} per rank = "
                     f"{info['global_batch']} global, lr {recipe.train.lr:g}, {info['per_rank_samples']} training "
                     f"samples per rank, {info['threads_per_rank']} thread(s) per rank")


def _after_train(ctx: RunContext) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(ctx.module, DistributedDataParallel):
        return
    ctx.module = ctx.module.module  # rank 0 evaluates and benchmarks the plain model, no collectives
    # Proof that the ranks trained one model: every rank's parameter checksum, gathered on all ranks.
    with torch.no_grad():
        mine = torch.tensor([float(sum(p.double().sum() for p in ctx.module.parameters()))], dtype=torch.float64)
    sums = [torch.zeros(1, dtype=torch.float64) for _ in range(distributed_world()[1])]
    dist.all_gather(sums, mine)
    values = [float(t.item()) for t in sums]
    info = ctx.summary.setdefault("distributed", {})
    info["parameter_checksums"] = values
    info["ranks_in_sync"] = max(values) - min(values) <= 1e-6 * max(1.0, abs(values[0]))
    sps = getattr(ctx.train_result, "train_samples_per_s", None)
    if sps:  # every rank trains an equal shard at the same pace (the slowest sets it: they sync each step)
        info["global_train_samples_per_s"] = sps * len(values)


STAGE = Stage("distributed", _applies, before_train=_before_train, after_train=_after_train)
