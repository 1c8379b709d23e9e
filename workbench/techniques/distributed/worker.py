"""One rank of a data-parallel run: ``python -m workbench.techniques.distributed.worker RECIPE [--run-id ID]``.

Started by ``torch.distributed.run`` (which sets RANK, WORLD_SIZE, MASTER_ADDR …). Every rank joins
the process group, loads the same data and the same seeded model, and trains its shard with DDP.
Rank 0 alone runs the whole recipe into the store (training, evaluation, benchmarks, stages,
artifacts); the other ranks only train and exit. A rank that fails writes its one-line reason to
``ERRORS/rank<N>.error`` so the launcher can name it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

import torch

from workbench.core.events import CancelToken, Reporter
from workbench.core.measure.paired import usable_cores
from workbench.core.pipeline import load_for_training, train_with_hooks
from workbench.core.store import RunStore
from workbench.errors import WorkbenchError
from workbench.recipe import load_recipe


def _die_with_launcher() -> None:
    """Linux: this rank gets SIGTERM when its launcher dies, so no rank outlives its run."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _backend(choice: str) -> str:
    if choice != "auto":
        return choice
    return "nccl" if torch.cuda.is_available() else "gloo"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="workbench-ddp-worker")
    p.add_argument("recipe")
    p.add_argument("--run-id", type=int, default=None, help="record into this run (made by the launcher)")
    p.add_argument("--errors", default="", help="folder for rank<N>.error files")
    p.add_argument("--store", default=None, help="runs database (default: the one under WORKBENCH_HOME)")
    args = p.parse_args(argv)
    _die_with_launcher()
    rank = int(os.environ.get("RANK", "0"))
    errors = Path(args.errors) if args.errors else None
    import torch.distributed as dist

    try:
        recipe = load_recipe(args.recipe)
        d = recipe.distributed
        if d is None:
            raise WorkbenchError(f"{args.recipe}: has no [distributed] section")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = d.threads_per_process or max(1, usable_cores() // local_world)
        torch.set_num_threads(threads)
        recipe.bench.threads = threads  # every timing on rank 0 uses this rank's share of the cores
        backend = _backend(d.backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        if rank == 0 and recipe.data.source == "default":  # one rank generates the built-in data, the rest wait
            from workbench.core.data import ensure_default_dataset

            ensure_default_dataset(recipe.data.samples_per_class)
        dist.barrier()
        if rank == 0:
            from workbench.core.pipeline import run_recipe
            from workbench.techniques import stages

            outcome = run_recipe(recipe, store=RunStore(args.store), reporter=Reporter(), stages=stages(), run_id=args.run_id)
            if outcome.status != "completed":
                raise WorkbenchError(outcome.error or outcome.status)
        else:
            from workbench.techniques.distributed.stage import STAGE

            with RunStore(args.store) as store:
                ctx = load_for_training(recipe, store, Reporter(), CancelToken())
            if recipe.train.epochs > 0:
                train_with_hooks(ctx, [STAGE])
        return 0
    except BaseException as exc:
        if errors is not None:
            errors.mkdir(parents=True, exist_ok=True)
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            (errors / f"rank{rank}.error").write_text(f"{text if isinstance(exc, WorkbenchError) else type(exc).__name__ + ': ' + text}\n",
                                                      encoding="utf-8")
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        print(f"rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
