"""Structured pruning with and without rounding channel counts, in static INT8 on onnxruntime, paired.

Why it exists: in the Accelerate search, pruned ResNets in INT8 were never faster than the unpruned
INT8 model. For each pruning ratio this builds the zoo model pruned with ``round_to`` 1 (exact ratio),
8 and 16 (channel counts kept at multiples), quantizes each to static INT8 (the same pipeline a run
uses: ``workbench.techniques.run_recipe`` with ``[prune]`` and ``[quantize]``, no fine-tuning: speed
only), then times every INT8 model and the unpruned INT8 model in interleaved rounds in one process.

    .venv/bin/python benchmarks/bench_prune_rounding.py                 # resnet and small_cnn
    .venv/bin/python benchmarks/bench_prune_rounding.py --models resnet --ratios 0.3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("WORKBENCH_HOME", tempfile.mkdtemp(prefix="workbench-bench-rounding-"))

from _common import fmt_ratio_ci, markdown_table, paired_lines, print_header, ratio_entry  # noqa: E402

from workbench.core.measure.paired import Contestant, choose_threads, time_paired  # noqa: E402
from workbench.core.measure.runtimes import OrtRuntime  # noqa: E402
from workbench.core.measure.timing import fixed_threads  # noqa: E402
from workbench.core.store import RunStore  # noqa: E402
from workbench.recipe import Recipe  # noqa: E402
from workbench.techniques import run_recipe  # noqa: E402
from workbench.techniques.prune.config import PruneSection  # noqa: E402
from workbench.techniques.quantize.config import QuantizeSection  # noqa: E402


def int8_model(model: str, ratio: float, round_to: int, store: RunStore) -> Path:
    """The static INT8 ONNX file of the zoo model pruned by ``ratio`` (0 = not pruned)."""
    r = Recipe(name=f"rounding-{model}-{ratio:g}-r{round_to}")
    r.model.zoo = model
    r.data.samples_per_class = 40
    r.train.epochs = 0
    if ratio:
        r.prune = PruneSection(method="structured", ratio=ratio, finetune_epochs=0, round_to=round_to)
    r.quantize = QuantizeSection(method="static")
    r.bench.enabled = False
    out = run_recipe(r, store=store)
    if out.status != "completed":
        raise SystemExit(f"{r.name}: {out.error}")
    return next(a.path for a in store.artifacts(out.run_id, "onnx") if a.path.name == "model-static.onnx")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", default="resnet,small_cnn")
    ap.add_argument("--ratios", default="0.3,0.5")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)
    print_header("Pruning with rounded channel counts, static INT8, paired",
                 argv=None if argv is None else [sys.argv[0], *argv])
    ratios = [float(x) for x in args.ratios.split(",")]
    with RunStore() as store:
        for model in args.models.split(","):
            files = [("not pruned", 0.0, 1, int8_model(model, 0.0, 1, store))]
            files += [(f"{ratio:.0%} pruned, round_to {rt}", ratio, rt, int8_model(model, ratio, rt, store))
                      for ratio in ratios for rt in (1, 8, 16)]
            choice = choose_threads(0)
            with fixed_threads(choice.threads):
                runtimes = [OrtRuntime(f, threads=choice.threads) for *_x, f in files]
                try:
                    timing = time_paired([Contestant(label, label, rt) for (label, *_y), rt in zip(files, runtimes, strict=True)],
                                         (3, 32, 32), [1], threads=choice, rounds=args.rounds, iters=200,
                                         warmup=5, max_time_s=30.0)
                finally:
                    for rt in runtimes:
                        rt.close()
            models = timing.to_dict()["models"]
            rows = []
            for i, (label, _ratio, _rt, path) in enumerate(files):
                rows.append([label, f"{path.stat().st_size / 1e3:.0f}", f"{models[i]['p50_ms']['1']:.3f}",
                             "1.00x (reference)" if i == 0 else fmt_ratio_ci(ratio_entry(timing, 1, 0, i))])
            print(f"\n### {model}\n")
            print(markdown_table(["Static INT8 model", "File (kB)", "p50 batch 1 (ms)",
                                  "Speed vs the unpruned INT8 model, paired"], rows, "lrrl"))
            print("\n" + "\n".join(paired_lines(timing, "onnxruntime")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
