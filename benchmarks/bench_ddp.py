"""Data-parallel training on this machine: 1 process x 2 threads against 2 processes x 1 thread.

The same recipe (the quickstart CNN on the built-in data, same global batch 64) runs through the real
pipeline both ways: plainly, and as a ``[distributed]`` run that ``torch.distributed.run`` starts
with 2 gloo ranks of batch 32 each. The figure is training samples per second (steady state; for
DDP, rank 0's rate times the ranks, which all step together). The two configurations cannot share
one process, so they are alternated (A B, B A, A B) and the ratio is the median with its range.

No gain is expected on a 2-core machine: two processes split the same two cores and add the gradient
exchange on top. DDP pays off with several GPUs or machines; this benchmark records what it costs
where it cannot help.

    .venv/bin/python benchmarks/bench_ddp.py
    .venv/bin/python benchmarks/bench_ddp.py --quick     # smoke: tiny data, short runs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("WORKBENCH_HOME", os.path.join(tempfile.gettempdir(), "workbench-bench"))

from _common import ALTERNATED_NOTE, AlternatedRatio, alternating_order, markdown_table, print_header  # noqa: E402

from workbench.core.measure.paired import ContentionMonitor  # noqa: E402
from workbench.core.store import RunStore  # noqa: E402
from workbench.recipe import DistributedSection, Recipe  # noqa: E402
from workbench.techniques import run_recipe  # noqa: E402


def _recipe(ddp: bool, args: argparse.Namespace) -> Recipe:
    r = Recipe(name="bench-ddp" if ddp else "bench-single")
    r.model.zoo = "small_cnn"
    r.data.samples_per_class = args.samples_per_class
    r.train.epochs = args.epochs
    r.bench.enabled = False  # training speed only
    r.bench.threads = 2
    r.batching.batch_size = 32 if ddp else 64
    if ddp:
        r.distributed = DistributedSection(nproc_per_node=2, threads_per_process=1)
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--samples-per-class", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples_per_class, args.epochs = 30, 1
    print_header("Data-parallel training: 1 process x 2 threads vs 2 processes x 1 thread, alternated"
                 + (" (QUICK smoke run: not a result)" if args.quick else ""),
                 argv=None if argv is None else [sys.argv[0], *argv])
    rates: dict[int, list[float]] = {0: [], 1: []}
    accs: dict[int, list[float]] = {0: [], 1: []}
    loads = []
    with RunStore() as store:
        for _rep, cfg in alternating_order(2, args.repetitions):
            with ContentionMonitor(include_children=True) as mon:
                out = run_recipe(_recipe(cfg == 1, args), store=store)
            if out.status != "completed":
                print(f"run {out.run_id} {out.status}: {out.error}")
                return 1
            loads.append(mon.load)
            sps = (out.summary["distributed"]["global_train_samples_per_s"] if cfg == 1
                   else out.summary["train"]["train_samples_per_s"])
            rates[cfg].append(sps)
            accs[cfg].append(out.summary["final"]["accuracy"])
    ratio = AlternatedRatio([b / a for a, b in zip(rates[0], rates[1], strict=True)], loads)
    rows = [["1 process x 2 threads (batch 64)", f"{sorted(rates[0])[len(rates[0]) // 2]:,.0f}",
             f"{sum(accs[0]) / len(accs[0]):.2%}", "1.00x (reference)"],
            ["2 processes x 1 thread (gloo, batch 32 each = 64 global)", f"{sorted(rates[1])[len(rates[1]) // 2]:,.0f}",
             f"{sum(accs[1]) / len(accs[1]):.2%}", ratio.cell()]]
    print(markdown_table(["Configuration", "Training samples/s (median)", "Eval accuracy (mean)", "Ratio"], rows))
    print(f"\n{ALTERNATED_NOTE}")
    problems = ratio.problems()
    print(f"Reliable: {'yes' if not problems else 'NO: ' + '; '.join(problems)}")
    print("\nExpected on 2 cores: no gain (the ranks share the same cores and add the gradient exchange).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
