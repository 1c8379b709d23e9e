"""AMP benchmark: bf16 autocast vs fp32 TRAINING throughput on CPU, paired, for the CNN and Transformer zoo models.

Each precision trains its own copy of the model (same initial weights) on one fixed synthetic batch.
``TrainStepContestant`` adapts a training step to the paired timing's runtime interface: its
``timed_call(batch)`` returns a callable that does one optimizer step (forward, loss, backward,
AdamW step). ``engine.paired.time_paired`` then times fp32 and bf16 steps in interleaved rounds in
one process, so machine noise hits both alike; the speedup is the median of the per-round ratios
(fp32 step time / bf16 step time = bf16 samples/s / fp32 samples/s) with its 95 % CI.

    .venv/bin/python benchmarks/bench_amp.py                      # full: small_cnn, resnet, transformer
    .venv/bin/python benchmarks/bench_amp.py --quick              # smoke: small_cnn, batch 16, 5 short rounds
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from _common import fmt_ratio_ci, markdown_table, paired_lines, print_header
from torch import nn

from workbench.core.measure.paired import Contestant, choose_threads, time_paired
from workbench.core.measure.timing import fixed_threads
from workbench.core.models import build_zoo_model
from workbench.core.precision import bf16_supported_on_cpu

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


class TrainStepContestant:
    """A model + optimizer whose timed call is ONE training step on a fixed batch (a paired-timing runtime).

    ``timed_call(batch)`` stages ``batch`` as the input (labels are drawn once, seeded) and returns
    ``(step, None)``: CPU work is synchronous, so no device sync is needed. Every call updates the
    weights, as real training does; ``min_warmup`` steps run untimed first (allocator, autocast caches).
    """

    def __init__(self, model: nn.Module, autocast_dtype: torch.dtype | None, warmup: int, seed: int = 0) -> None:
        self.model = model.train()
        self.autocast_dtype = autocast_dtype
        self.min_warmup = warmup
        self.seed = seed
        self.optimizer: torch.optim.Optimizer | None = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.loss_fn = nn.CrossEntropyLoss()

    def timed_call(self, batch: np.ndarray) -> tuple[Callable[[], Any], None]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        y = torch.randint(0, NUM_CLASSES, (x.shape[0],), generator=torch.Generator().manual_seed(self.seed))
        model, loss_fn, opt, dtype = self.model, self.loss_fn, self.optimizer, self.autocast_dtype
        if opt is None:
            raise RuntimeError("this training contestant is closed")

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            amp = torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext()
            with amp:
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return float(loss.detach())  # a real scalar: the step is finished when the call returns

        return step, None

    def close(self) -> None:
        self.optimizer = None  # drop the AdamW state (two tensors per parameter)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", default="small_cnn,resnet,transformer")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds (at least 5)")
    ap.add_argument("--steps", type=int, default=60, help="timed steps per precision, split over the rounds")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per precision first")
    ap.add_argument("--max-time", type=float, default=120.0, help="time budget for all rounds of one model (s)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = auto: free cores)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small_cnn, batch 16, 5 short rounds")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.batch_size, args.rounds, args.steps, args.warmup, args.max_time = \
            "small_cnn", 16, 5, 10, 1, 5.0
    print_header("AMP: bf16 autocast vs fp32 training throughput, paired"
                 + (" (QUICK smoke run: not a result)" if args.quick else ""),
                 argv=None if argv is None else [sys.argv[0], *argv])
    print(f"Native bf16 on this CPU (torch's check): {bf16_supported_on_cpu()}; AdamW, batch {args.batch_size}, "
          f"input {'x'.join(map(str, INPUT_SHAPE))}, one fixed batch per precision\n")

    rows, notes = [], []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_zoo_model(name, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE)
        params = sum(p.numel() for p in model.parameters())
        choice = choose_threads(args.threads)
        contestants = [
            Contestant("baseline", "fp32", TrainStepContestant(copy.deepcopy(model), None, args.warmup)),
            Contestant("bf16 autocast", "bf16 autocast",
                       TrainStepContestant(copy.deepcopy(model), torch.bfloat16, args.warmup)),
        ]
        try:
            with fixed_threads(choice.threads):
                timing = time_paired(contestants, INPUT_SHAPE, [args.batch_size], threads=choice,
                                     rounds=args.rounds, iters=args.steps, warmup=args.warmup,
                                     max_time_s=args.max_time)
        finally:
            for c in contestants:
                c.runtime.close()
        d = timing.to_dict()
        b = str(args.batch_size)
        fp32_ms, bf16_ms = (m["p50_ms"][b] for m in d["models"])
        rows.append([name, f"{params:,}", f"{args.batch_size / fp32_ms * 1e3:,.0f}",
                     f"{args.batch_size / bf16_ms * 1e3:,.0f}",
                     fmt_ratio_ci(timing.against_first()["bf16 autocast"][b]),
                     "yes" if timing.reliable else "NO"])
        notes.append((name, paired_lines(timing)))
    print(markdown_table(["Model", "Params", "fp32 samples/s", "bf16 samples/s", "bf16 / fp32, paired", "Reliable"],
                         rows, "lrrrrl"))
    print("\nsamples/s: batch / median over rounds of each block's median step time; bf16 / fp32: median of the "
          "per-round ratios (fp32 step time / bf16 step time) with its distribution-free 95 % CI.\n")
    for name, lines in notes:
        print(f"{name}:  \n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
