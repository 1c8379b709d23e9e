"""Early exits on the ResNet-style zoo model: accuracy, exits taken, compute and batch-1 latency, paired.

Runs the real pipeline (``workbench.techniques.run_recipe``) on the built-in data: train the ResNet,
attach exit heads after its first two stages, fine-tune jointly, choose the threshold on the
validation split within 1 point, then report on eval: accuracy, the share of samples leaving at each
exit, mean MACs per sample, and the mean / p95 batch-1 latency over real eval samples against the
full model, timed paired (both models on the same stream of samples, interleaved rounds).

    .venv/bin/python benchmarks/bench_early_exit.py
    .venv/bin/python benchmarks/bench_early_exit.py --quick     # smoke: tiny data, 1 epoch

Goal (issue #13): at least 1.5x lower mean batch-1 latency within 1 point of the full model's eval
accuracy. Anchors: BranchyNet 1.9x on ResNet-110/CIFAR-10 at -1.5 points; SDN > 50 % compute saved.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("WORKBENCH_HOME", os.path.join(tempfile.gettempdir(), "workbench-bench"))

from _common import markdown_table, print_header  # noqa: E402

from workbench.core.store import RunStore  # noqa: E402
from workbench.recipe import EarlyExitSection, Recipe  # noqa: E402
from workbench.techniques import run_recipe  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default="resnet")
    ap.add_argument("--samples-per-class", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--exit-epochs", type=int, default=3)
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--mode", default="joint", choices=["joint", "heads_only"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples_per_class, args.epochs, args.exit_epochs = 30, 1, 1
    print_header("Early exits: accuracy, exits, compute and batch-1 latency, paired"
                 + (" (QUICK smoke run: not a result)" if args.quick else ""),
                 argv=None if argv is None else [sys.argv[0], *argv])
    r = Recipe(name=f"bench-early-exit-{args.model}")
    r.model.zoo = args.model
    r.data.samples_per_class = args.samples_per_class
    r.train.epochs = args.epochs
    r.bench.batch_sizes = [1, 64]
    r.early_exit = EarlyExitSection(epochs=args.exit_epochs, max_drop=args.max_drop, mode=args.mode)
    with RunStore() as store:
        out = run_recipe(r, store=store)
    if out.status != "completed":
        print(f"run {out.run_id} {out.status}: {out.error}")
        return 1
    rec = next(s for s in out.summary["stages"] if s["name"] == "early_exit")
    ev, lat, val = rec["eval"], rec["latency"], rec["validation"]
    print(f"Run {out.run_id}: {args.model}, {args.epochs} epochs, exits after {', '.join(rec['exits'])}, "
          f"{args.mode} training {args.exit_epochs} epochs; threshold {rec['threshold']:.3f} ({rec['rule']}) chosen on "
          f"validation (accuracy {val['accuracy']:.2%} vs full {val['full_accuracy']:.2%}, budget {args.max_drop} pts)\n")
    p = lat["paired"]
    rows = [
        ["Eval accuracy", f"{ev['full_accuracy']:.2%}", f"{ev['accuracy']:.2%}",
         f"{(ev['accuracy'] - ev['full_accuracy']) * 100:+.2f} pts"],
        ["MACs per sample", f"{ev['full_macs']:,}", f"{ev['mean_macs']:,.0f}", f"{ev['macs_saved']:.0%} saved"],
        ["Batch-1 latency, mean (ms)", f"{lat['full']['mean_ms']:.3f}", f"{lat['early_exit']['mean_ms']:.3f}",
         f"**{p['ratio']:.2f}x** (95 % CI {p['ci95'][0]:.2f}–{p['ci95'][1]:.2f}x, paired on {lat['samples']} samples)"],
        ["Batch-1 latency, p95 (ms)", f"{lat['full']['p95_ms']:.3f}", f"{lat['early_exit']['p95_ms']:.3f}", ""],
        ["Samples leaving at each exit", "100 % at the end", " · ".join(f"{s:.0%}" for s in ev["exit_shares"]), ""],
    ]
    print(markdown_table(["On the eval split", "Full model", "With early exits", "Change"], rows))
    print(f"\nThreads: {lat['threads']['reason']}; reliable: {'yes' if lat['reliable'] else 'NO: ' + lat['reason']}")
    parity = rec["bundle"]["parity"]
    print(f"ONNX segments + runner vs PyTorch: top-1 agreement {parity['top1_agreement']:.1%}, exits agree "
          f"{parity['exit_agreement']:.1%}, max |Δlogit| {parity['max_abs_err']:.2e}")
    within = (ev["full_accuracy"] - ev["accuracy"]) * 100 <= args.max_drop + 1e-9
    print(f"\nGoal (>= 1.5x mean batch-1 latency within {args.max_drop} pt): "
          f"{'met' if p['ratio'] >= 1.5 and within else 'NOT met'} ({p['ratio']:.2f}x, "
          f"{(ev['accuracy'] - ev['full_accuracy']) * 100:+.2f} pts on eval)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
