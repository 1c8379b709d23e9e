"""Distillation benchmark: teacher vs student alone vs distilled student, and the share of the gap closed.

Runs the real ``[distill]`` stage through the pipeline (``run_recipe``) for each seed: the teacher
(ResNet-20 by default) is trained first on the same data, then the student (quarter-width small
CNN) is trained alone (control) and with the teacher, from the same initial weights, seed, epochs
and batches. ``gap_closed = (distilled − alone) / (teacher − alone)``; goal ≥ 50%.

Default setting: few labels (100 samples/class, 70% held out, so 30 labelled training images per
class and 700 eval images), 15 epochs for both teacher and student, T = 2, alpha = 0.5. On the
built-in shapes set with 200 samples/class the student alone is already 93–97%, so there is no gap
to close; with few labels the student alone drops to ~55–70% and the teacher to ~76–93%. Measured
on this set (1 thread), distillation is roughly neutral at T ≤ 2 (median gap closed −5% over seeds
0,1,2 with these defaults) and hurts at T ≥ 4; it does not reach the 50% goal. Note: repeated runs with the same seed give
different accuracies (training is not bit-reproducible across processes here), so use several seeds.

    .venv/bin/python benchmarks/bench_distill.py [--seeds 0,1,2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("WORKBENCH_HOME", tempfile.mkdtemp(prefix="workbench-bench-distill-"))

import torch  # noqa: E402

from workbench.engine.pipeline import run_recipe  # noqa: E402
from workbench.engine.store import RunStore  # noqa: E402
from workbench.engine.telemetry import device_description  # noqa: E402
from workbench.recipe import DistillSection, Recipe  # noqa: E402


def make_recipe(args: argparse.Namespace, seed: int) -> Recipe:
    r = Recipe(name=f"bench-distill-seed{seed}")
    r.model.zoo = args.student
    r.model.width = args.student_width
    r.data.samples_per_class = args.samples_per_class
    r.data.eval_fraction = args.eval_fraction
    r.data.augment = False  # deterministic inputs: teacher logits are cached after epoch 1
    r.train.epochs = args.epochs
    r.train.seed = seed
    r.batching.batch_size = 64
    r.bench.batch_sizes = [1, 64]
    r.bench.iters = args.iters
    r.bench.threads = args.threads
    r.distill = DistillSection(teacher=f"zoo:{args.teacher}", teacher_epochs=args.teacher_epochs,
                               temperature=args.temperature, alpha=args.alpha, control=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet")
    ap.add_argument("--student", default="small_cnn")
    ap.add_argument("--student-width", type=float, default=0.25)
    ap.add_argument("--samples-per-class", type=int, default=100)
    ap.add_argument("--eval-fraction", type=float, default=0.7,
                    help="share of each class held out for evaluation (the rest is the labelled training set)")
    ap.add_argument("--epochs", type=int, default=15, help="student epochs (alone and distilled)")
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch")
    args = ap.parse_args()
    if args.quick:
        args.samples_per_class, args.epochs, args.teacher_epochs, args.iters = 20, 1, 1, 5
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"machine: {device_description()}; {platform.platform()}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
          f"on {os.cpu_count()} cores")
    print(f"teacher zoo:{args.teacher} ({args.teacher_epochs} epochs), student zoo:{args.student} width "
          f"{args.student_width:g} ({args.epochs} epochs), T={args.temperature:g}, alpha={args.alpha:g}, "
          f"{args.samples_per_class} samples/class, eval fraction {args.eval_fraction:g}, augment off")

    rows = []
    with RunStore() as store:
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            outcome = run_recipe(make_recipe(args, seed), store=store)
            if outcome.status != "completed":
                raise SystemExit(f"seed {seed}: run failed: {outcome.error}")
            stage = outcome.summary["stages"][0]
            rows.append((seed, stage))
            print(f"seed {seed}: done in {time.perf_counter() - t0:.0f} s (run {outcome.run_id})", file=sys.stderr)

    head = ["Seed", "Model", "Params", "Eval acc", "p50 @ b1 (ms)", "Throughput @ b64 (samples/s)", "Gap closed"]
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    gaps = []
    for seed, st in rows:
        gc = st.get("gap_closed")
        if gc is not None:
            gaps.append(gc)
        for label, key in (("teacher", "teacher"), ("student alone", "student_alone"), ("student distilled", "after")):
            m = st[key]
            cells = [str(seed), f"{label} ({st['teacher_description'] if key == 'teacher' else args.student})",
                     f"{m['params']:,}", f"{m['accuracy']:.2%}", f"{m.get('latency_ms_p50') or 0:.2f}",
                     f"{m.get('throughput') or 0:,.0f}",
                     ("—" if gc is None else f"{gc:.0%}") if key == "after" else ""]
            print("| " + " | ".join(cells) + " |")
    if gaps:
        print(f"\ngap closed: median {statistics.median(gaps):.0%} over {len(gaps)} seed(s)")
    cache = rows[-1][1]["teacher_cache"]
    print(f"teacher-logit cache (last seed): {cache['hits']} hits / {cache['misses']} misses")
    load = os.getloadavg()
    print(f"load average at end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


if __name__ == "__main__":
    main()
