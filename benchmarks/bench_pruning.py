"""Pruning benchmark: latency and accuracy of mobilenet and resnet before and after 50% pruning.

For each model: train on the default shapes dataset, then from the same trained weights
(a) structured 50% channel pruning (DepGraph) + fine-tuning and (b) unstructured 50% magnitude
pruning (global L1) + fine-tuning with masks, made permanent. All variants are timed side by side
in interleaved rounds (round r times every variant once), so machine noise hits them alike; the
table reports the median p50 over rounds. Goal: structured ≥ 1.6x faster at ≤ 1.5 points lost;
unstructured is measured to show it is *not* faster.

    .venv/bin/python benchmarks/bench_pruning.py [--models mobilenet,resnet] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("WORKBENCH_HOME", os.path.join(tempfile.gettempdir(), "workbench-bench"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from workbench.engine.bench import bench_torch  # noqa: E402
from workbench.engine.data import build_loader, load_dataset  # noqa: E402
from workbench.engine.events import CancelToken, Reporter  # noqa: E402
from workbench.engine.models import build_zoo_model, summarize  # noqa: E402
from workbench.engine.precision import PrecisionPlan  # noqa: E402
from workbench.engine.prune import (  # noqa: E402
    make_permanent,
    prune_structured,
    prune_unstructured,
    sparsity_rows,
    unstructured_targets,
)
from workbench.engine.telemetry import device_description  # noqa: E402
from workbench.engine.train import evaluate, train  # noqa: E402
from workbench.recipe import BatchingSection, DataSection, LoaderSection, TrainSection  # noqa: E402


class _Quiet(Reporter):
    def log(self, message: str, level: str = "info") -> None:
        if level != "info":
            print(f"  [{level}] {message}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet,resnet")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--samples-per-class", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--iters", type=int, default=20, help="timed calls per round and batch size")
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch, 2 rounds")
    args = ap.parse_args()
    if args.quick:
        args.samples_per_class, args.epochs, args.finetune_epochs, args.rounds, args.iters = 20, 1, 1, 2, 5
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    load = os.getloadavg()
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"machine: {device_description()}; {platform.platform()}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
          f"on {os.cpu_count()} cores")

    plan = PrecisionPlan(torch.device("cpu"))
    data = load_dataset(DataSection(samples_per_class=args.samples_per_class, augment=True))
    shape = tuple(data.input_shape)
    loader_cfg = LoaderSection()
    batching = BatchingSection(batch_size=64)
    train_cfg = TrainSection(epochs=args.epochs, lr=3e-3, schedule="onecycle")
    eval_loader = build_loader(data.eval, 256, loader_cfg, train=False)
    rep, cancel = _Quiet(), CancelToken()
    print(f"data: {data.source_desc}; {args.epochs} training epochs, {args.finetune_epochs} fine-tuning epochs, "
          f"ratio {args.ratio}")

    def fit(module: nn.Module, epochs: int, lr: float, stage: str) -> None:
        loader = build_loader(data.train, batching.batch_size, loader_cfg, train=True, seed=0)
        train(module, loader, eval_loader, train_cfg, batching, plan, rep, cancel, stage=stage, epochs=epochs, lr=lr)

    rows: list[dict[str, object]] = []
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
        variants = {"unpruned": base, f"structured {args.ratio:.0%} + FT": structured,
                    f"unstructured {args.ratio:.0%} + FT": unstructured}
        timings: dict[str, dict[int, list[float]]] = {v: {b: [] for b in batch_sizes} for v in variants}
        for _ in range(args.rounds):
            for label, module in variants.items():
                for st in bench_torch(module, shape, batch_sizes, warmup=3, iters=args.iters, max_time_s=30.0):
                    timings[label][st.batch_size].append(st.p50_ms)
        ref = variants["unpruned"]
        ref_acc = evaluate(ref, eval_loader, plan)["accuracy"]
        ref_ms = {b: statistics.median(timings["unpruned"][b]) for b in batch_sizes}
        for label, module in variants.items():
            s = summarize(module, shape)
            acc = evaluate(module, eval_loader, plan)["accuracy"]
            ms = {b: statistics.median(timings[label][b]) for b in batch_sizes}
            row: dict[str, object] = {"model": name, "variant": label, "params": s.params, "macs": s.macs,
                                      "size_mb": s.size_bytes / 1e6, "acc": acc, "dacc": (acc - ref_acc) * 100}
            if label.startswith("unstructured"):
                row["variant"] = f"{label} ({sparsity['pruned_layers_sparsity']:.0%} zeros)"
            for b in batch_sizes:
                row[f"ms{b}"] = ms[b]
                row[f"x{b}"] = ref_ms[b] / ms[b]
            rows.append(row)
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    head = ["Model", "Variant", "Params", "MACs (M)", "Size (MB)", "Eval acc", "Δ acc (pts)"]
    for b in batch_sizes:
        head += [f"p50 @ b{b} (ms)", f"speedup @ b{b}"]
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        cells = [str(r["model"]), str(r["variant"]), f"{r['params']:,}", f"{(r['macs'] or 0) / 1e6:.1f}",
                 f"{r['size_mb']:.2f}", f"{r['acc']:.2%}", f"{r['dacc']:+.2f}"]
        for b in batch_sizes:
            cells += [f"{r[f'ms{b}']:.2f}", f"{r[f'x{b}']:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    load = os.getloadavg()
    print(f"\nmedian p50 over {args.rounds} interleaved rounds x {args.iters} calls; load average at end "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


if __name__ == "__main__":
    main()
