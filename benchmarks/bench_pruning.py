"""Pruning benchmark: latency and accuracy of mobilenet and resnet before and after 50% pruning, paired.

For each model: train on the default shapes dataset, then from the same trained weights
(a) structured 50% channel pruning (DepGraph) + fine-tuning and (b) unstructured 50% magnitude
pruning (global L1) + fine-tuning with masks, made permanent. The three variants are then timed
together in interleaved rounds in one process (``engine.paired.time_paired``: same input, same
thread count), and each speedup is the median of the per-round ratios against the unpruned model
with its 95 % CI. Goal: structured >= 1.6x faster at <= 1.5 points lost; unstructured is measured
to show it is *not* faster (dense kernels multiply zeros as fast as any other number).

    .venv/bin/python benchmarks/bench_pruning.py                 # full (mobilenet and resnet)
    .venv/bin/python benchmarks/bench_pruning.py --quick         # smoke: tiny data, 1 epoch, 5 short rounds
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

os.environ.setdefault("WORKBENCH_HOME", os.path.join(tempfile.gettempdir(), "workbench-bench"))

import torch  # noqa: E402
from _common import fmt_ratio_ci, markdown_table, paired_lines, print_header  # noqa: E402
from torch import nn  # noqa: E402

from workbench.core.data import build_loader, load_dataset  # noqa: E402
from workbench.core.events import CancelToken, Reporter  # noqa: E402
from workbench.core.measure.paired import Contestant, choose_threads, time_paired  # noqa: E402
from workbench.core.measure.runtimes import TorchRuntime  # noqa: E402
from workbench.core.measure.timing import fixed_threads  # noqa: E402
from workbench.core.models import build_zoo_model, summarize  # noqa: E402
from workbench.core.precision import PrecisionPlan  # noqa: E402
from workbench.core.train import evaluate, train  # noqa: E402
from workbench.recipe import BatchingSection, DataSection, LoaderSection, TrainSection  # noqa: E402
from workbench.techniques.prune.structured import prune_structured  # noqa: E402
from workbench.techniques.prune.unstructured import (  # noqa: E402
    make_permanent,
    prune_unstructured,
    sparsity_rows,
    unstructured_targets,
)


class _Quiet(Reporter):
    def log(self, message: str, level: str = "info") -> None:
        if level != "info":
            print(f"  [{level}] {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", default="mobilenet,resnet")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--samples-per-class", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (at least 5)")
    ap.add_argument("--iters", type=int, default=100,
                    help="timed calls per variant and batch size, split over the rounds")
    ap.add_argument("--max-time", type=float, default=60.0, help="time budget per batch size for all rounds (s)")
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = auto: free cores)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch, 5 short rounds")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples_per_class, args.epochs, args.finetune_epochs = 20, 1, 1
        args.rounds, args.iters, args.max_time = 5, 10, 3.0
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print_header("Pruning: unpruned vs structured vs unstructured, paired"
                 + (" (QUICK smoke run: not a result)" if args.quick else ""),
                 argv=None if argv is None else [sys.argv[0], *argv])

    plan = PrecisionPlan(torch.device("cpu"))
    data = load_dataset(DataSection(samples_per_class=args.samples_per_class, augment=True))
    shape = tuple(data.input_shape)
    loader_cfg = LoaderSection()
    batching = BatchingSection(batch_size=64)
    train_cfg = TrainSection(epochs=args.epochs, lr=3e-3, schedule="onecycle")
    eval_loader = build_loader(data.eval, 256, loader_cfg, train=False)
    rep, cancel = _Quiet(), CancelToken()
    print(f"Data: {data.source_desc}; {args.epochs} training epochs, {args.finetune_epochs} fine-tuning epochs, "
          f"ratio {args.ratio}\n")

    def fit(module: nn.Module, epochs: int, lr: float, stage: str) -> None:
        loader = build_loader(data.train, batching.batch_size, loader_cfg, train=True, seed=0)
        train(module, loader, eval_loader, train_cfg, batching, plan, rep, cancel, stage=stage, epochs=epochs, lr=lr)

    for name in args.models.split(","):
        t0 = time.perf_counter()
        torch.manual_seed(0)
        base = build_zoo_model(name, data.num_classes, shape)
        fit(base, args.epochs, 3e-3, "train")
        structured = copy.deepcopy(base)
        prune_structured(structured, shape, ratio=args.ratio, importance="l2")
        fit(structured, args.finetune_epochs, 2e-3, "finetune")
        unstructured = copy.deepcopy(base)
        targets = unstructured_targets(unstructured, shape)
        prune_unstructured(unstructured, targets, ratio=args.ratio, scope="global")
        fit(unstructured, args.finetune_epochs, 1e-3, "finetune")
        _, sparsity = sparsity_rows(unstructured, targets)
        make_permanent(unstructured)
        variants = [("baseline", "unpruned", base),
                    ("structured", f"structured {args.ratio:.0%} + FT", structured),
                    ("unstructured", f"unstructured {args.ratio:.0%} + FT "
                                     f"({sparsity['pruned_layers_sparsity']:.0%} zeros)", unstructured)]
        accuracy = {label: evaluate(module, eval_loader, plan)["accuracy"] for _, label, module in variants}

        choice = choose_threads(args.threads)  # after training: the load now, shared by all three variants
        contestants = [Contestant(step, label, TorchRuntime(module)) for step, label, module in variants]
        try:
            with fixed_threads(choice.threads):
                timing = time_paired(contestants, shape, batch_sizes, threads=choice, rounds=args.rounds,
                                     iters=args.iters, warmup=5, max_time_s=args.max_time)
        finally:
            for c in contestants:
                c.runtime.close()
        d = timing.to_dict()
        vs_first = timing.against_first()
        ref_acc = accuracy["unpruned"]
        rows = []
        for i, (step, label, module) in enumerate(variants):
            s = summarize(module, shape)
            acc = accuracy[label]
            cells = [name, label, f"{s.params:,}", f"{(s.macs or 0) / 1e6:.1f}", f"{s.size_bytes / 1e6:.2f}",
                     f"{acc:.2%}", f"{(acc - ref_acc) * 100:+.2f}"]
            for b in batch_sizes:
                cells += [f"{d['models'][i]['p50_ms'][str(b)]:.2f}",
                          "1.00x (reference)" if i == 0 else fmt_ratio_ci(vs_first[step][str(b)])]
            rows.append(cells)
        head = ["Model", "Variant", "Params", "MACs (M)", "Size (MB)", "Eval acc", "Δ acc (pts)"]
        for b in batch_sizes:
            head += [f"p50 @ b{b} (ms)", f"speedup @ b{b}, paired"]
        print(f"### {name}\n")
        print(markdown_table(head, rows, "llrrrrr" + "rr" * len(batch_sizes)))
        print("\np50: median over rounds of each block's median call time; speedup: median of the per-round ratios "
              "(unpruned time / variant time) with its distribution-free 95 % CI.\n")
        print("\n".join(paired_lines(timing)) + "\n", flush=True)
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
