"""Quantization benchmark: one CNN and the transformer, six inference pipelines timed paired in one process.

For each model: eval accuracy and size of torch eager fp32, torch bf16 autocast, torch.compile,
onnxruntime fp32, onnxruntime dynamic INT8 and onnxruntime static INT8 (QDQ, per-channel, MinMax on
256 train samples); then all six are timed together in interleaved rounds (``engine.paired``) at
batch 1 and 64, with the same input and thread count, and every speed ratio against torch eager
fp32 is the median of the per-round ratios with its 95 % CI. From the same rounds, the INT8 speedup
is split by cause: the runtime switch (torch eager fp32 → onnxruntime fp32) times the INT8 step
(onnxruntime fp32 → onnxruntime INT8).

    .venv/bin/python benchmarks/bench_quantization.py            # full: trains both models (minutes)
    .venv/bin/python benchmarks/bench_quantization.py --quick    # smoke: tiny data, 1 epoch, few rounds
    .venv/bin/python benchmarks/bench_quantization.py --weights small_cnn=a.safetensors,transformer=b.safetensors

Goals (issue #5): best CNN pipeline >= 3x faster than torch eager fp32 at <= 1 point accuracy loss;
transformer INT8 >= 2.5x.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("WORKBENCH_HOME", str(Path(tempfile.gettempdir()) / "workbench-bench"))

import torch  # noqa: E402
from _common import (  # noqa: E402
    fmt_ratio_ci,
    fmt_x,
    markdown_table,
    paired_lines,
    print_header,
    ratio_entry,
)

from workbench.core.data import build_loader, load_dataset  # noqa: E402
from workbench.core.events import CancelToken, Reporter  # noqa: E402
from workbench.core.measure.paired import Contestant, PairedTiming, choose_threads, time_paired  # noqa: E402
from workbench.core.measure.runtimes import (  # noqa: E402
    OrtRuntime,
    TorchRuntime,
    evaluate_runtime,  # noqa: E402
)
from workbench.core.measure.timing import fixed_threads  # noqa: E402
from workbench.core.models import build_zoo_model, load_weights  # noqa: E402
from workbench.core.onnx_export import export_onnx  # noqa: E402
from workbench.core.precision import resolve_precision  # noqa: E402
from workbench.core.train import train  # noqa: E402
from workbench.recipe import Recipe  # noqa: E402
from workbench.techniques.quantize.methods import calibration_batches, quantize_onnx  # noqa: E402

MODELS = ("small_cnn", "transformer")
BATCH_SIZES = (1, 64)
EAGER, ORT_FP32, ORT_DYN, ORT_STATIC = ("torch eager fp32", "onnxruntime fp32", "onnxruntime dynamic INT8",
                                        "onnxruntime static INT8 (QDQ)")


@dataclass
class Pipeline:
    """One row of the table: a runtime to time (None when it could not be built) and its accuracy/size."""

    label: str
    step: str
    runtime: Any
    accuracy: float | None
    size: int | None
    failure: str = ""


def _train(name: str, recipe: Recipe, data: Any, weights: str | None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_zoo_model(name, data.num_classes, data.input_shape)
    if weights:
        load_weights(model, weights)
        return model.eval()
    plan = resolve_precision(recipe.precision)
    tl = build_loader(data.train, recipe.batching.batch_size, recipe.loader, train=True)
    el = build_loader(data.eval, 256, recipe.loader, train=False)
    t = time.perf_counter()
    train(model, tl, el, recipe.train, recipe.batching, plan, Reporter(), CancelToken())
    print(f"# trained {name}: {recipe.train.epochs} epoch(s) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return model.eval()


def _compiled(model: torch.nn.Module, shape: tuple[int, ...]) -> tuple[TorchRuntime | None, str]:
    """torch.compile runtime, compiled for every timed batch size up front (a failure is a table row, not a crash)."""
    try:
        rt = TorchRuntime(model, compile=True)
        for b in BATCH_SIZES:
            rt.predict(torch.zeros((b, *shape)))
        return rt, ""
    except Exception as exc:  # no compiler, inductor error: say so in the table
        return None, str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__


def build_pipelines(name: str, model: torch.nn.Module, data: Any, args: argparse.Namespace, threads: int,
                    workdir: Path) -> list[Pipeline]:
    """The six pipelines with their eval accuracy and size; the first is the baseline of every ratio."""
    loader = build_loader(data.eval, 256, Recipe().loader, train=False)
    shape = tuple(data.input_shape)
    fp32_size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    out: list[Pipeline] = []

    def add(label: str, step: str, rt: Any, size: int | None) -> None:
        out.append(Pipeline(label, step, rt, evaluate_runtime(rt, loader), size))

    add(EAGER, "baseline", TorchRuntime(model), fp32_size)
    add("torch bf16 autocast", "bf16 autocast", TorchRuntime(model, autocast_dtype=torch.bfloat16), fp32_size)
    compiled, why = _compiled(model, shape)
    if compiled is not None:
        add("torch.compile", "torch.compile", compiled, fp32_size)
    else:
        out.append(Pipeline("torch.compile", "torch.compile", None, None, None, failure=why))
    fp32 = export_onnx(model, shape, workdir / f"{name}.onnx")
    calib = calibration_batches(data.train, data.eval, args.calibration_samples)
    files = {
        ORT_FP32: ("runtime switch", fp32),
        ORT_DYN: ("dynamic INT8", quantize_onnx(fp32, workdir / f"{name}-dyn.onnx", method="dynamic").path),
        ORT_STATIC: ("static INT8", quantize_onnx(fp32, workdir / f"{name}-static.onnx", method="static",
                                                  batches=calib, per_channel=True).path),
    }
    for label, (step, path) in files.items():
        add(label, step, OrtRuntime(path, threads=threads), path.stat().st_size)
    return out


def bench_model(name: str, args: argparse.Namespace, workdir: Path) -> None:
    recipe = Recipe()
    recipe.data.samples_per_class = 40 if args.quick else 500
    recipe.train.epochs = 1 if args.quick else args.epochs
    data = load_dataset(recipe.data)
    model = _train(name, recipe, data, args.weight_map.get(name))
    # Chosen just before timing (after training), so it reflects the load now; every pipeline uses it.
    choice = choose_threads(args.threads)
    with fixed_threads(choice.threads):  # inductor bakes the thread count into compiled code: fix it first
        pipelines = build_pipelines(name, model, data, args, choice.threads, workdir)
        timed = [p for p in pipelines if p.runtime is not None]
        try:
            timing = time_paired([Contestant(p.step, p.label, p.runtime) for p in timed], data.input_shape,
                                 list(BATCH_SIZES), threads=choice, rounds=args.rounds, iters=args.iters,
                                 warmup=args.warmup, max_time_s=args.max_time)
        finally:
            for p in timed:
                p.runtime.close()
    print(format_model(name, pipelines, timed, timing) + "\n", flush=True)


def format_model(name: str, pipelines: list[Pipeline], timed: list[Pipeline], timing: PairedTiming) -> str:
    index = {p.label: i for i, p in enumerate(timed)}
    models = timing.to_dict()["models"]
    base_acc = pipelines[0].accuracy
    rows = []
    for p in pipelines:
        acc = f"{p.accuracy * 100:.2f} %" if p.accuracy is not None else "—"
        delta = f"{(p.accuracy - base_acc) * 100:+.2f}" if p.accuracy is not None and base_acc is not None else "—"
        size = f"{p.size / 1e6:.3f}" if p.size else "—"
        label = p.label if not p.failure else f"{p.label} (failed: {p.failure})"
        cells = [label, acc, delta, size]
        for b in BATCH_SIZES:
            if p.label not in index:
                cells += ["—", "—"]
                continue
            i = index[p.label]
            ms = models[i]["p50_ms"][str(b)]
            cells += [f"{ms:.3f}", "1.00x (reference)" if i == 0 else fmt_ratio_ci(ratio_entry(timing, b, 0, i))]
        rows.append(cells)
    headers = ["Pipeline", "Accuracy", "Δ pts", "Size (MB)"]
    for b in BATCH_SIZES:
        headers += [f"p50 b{b} (ms)", f"× vs eager b{b}, paired"]
    out = [f"### {name}", "", markdown_table(headers, rows, "lrrrrrrr"), "",
           "p50: median over rounds of each block's median call time; × vs eager: median of the per-round "
           "ratios (eager time / pipeline time) with its distribution-free 95 % CI.", ""]
    out += split_lines(timing, index)
    out += [""] + paired_lines(timing, "torch and onnxruntime")
    return "\n".join(out)


def split_lines(timing: PairedTiming, index: dict[str, int]) -> list[str]:
    """The INT8 speedup split by cause, from the same rounds: runtime switch × INT8 step."""
    e, f = index[EAGER], index[ORT_FP32]
    rows = []
    for b in BATCH_SIZES:
        switch = ratio_entry(timing, b, e, f)
        for label in (ORT_DYN, ORT_STATIC):
            q = index[label]
            step = ratio_entry(timing, b, f, q)
            direct = ratio_entry(timing, b, e, q)
            rows.append([str(b), label.removeprefix("onnxruntime "), fmt_ratio_ci(switch), fmt_ratio_ci(step),
                         fmt_x(switch["ratio"] * step["ratio"]), fmt_ratio_ci(direct)])
    headers = ["Batch", "INT8 method", "runtime switch (eager → ORT fp32)", "INT8 step (ORT fp32 → ORT INT8)",
               "switch × step", "direct (eager → ORT INT8)"]
    return ["Split by cause (same rounds): runtime switch (torch eager fp32 → onnxruntime fp32) × INT8 step "
            "(onnxruntime fp32 → onnxruntime INT8). The product of the two medians is close to, not equal to, "
            "the median of the direct per-round ratio.", "", markdown_table(headers, rows, "rlllrl")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny data, 1 epoch, 5 short rounds")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 10; quick 5)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed calls per contestant and batch size, split over the rounds (default 100; quick 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per contestant first (default 10)")
    p.add_argument("--threads", type=int, default=0, help="torch/ORT intra-op threads (0 = auto: free cores)")
    p.add_argument("--max-time", type=float, default=None,
                   help="time budget per batch size for all rounds (s; default 60, quick 3)")
    p.add_argument("--calibration-samples", type=int, default=256)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--weights", default="", help="name=file.safetensors,... to skip training")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (5 if args.quick else 10)
    args.iters = args.iters or (10 if args.quick else 100)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 10)
    args.max_time = args.max_time or (3.0 if args.quick else 60.0)
    if args.quick:
        args.calibration_samples = min(args.calibration_samples, 64)
    args.weight_map = dict(kv.split("=", 1) for kv in args.weights.split(",") if kv)
    print_header("Quantization: six pipelines, paired" + (" (QUICK smoke run: not a result)" if args.quick else ""),
                 argv=None if argv is None else [sys.argv[0], *argv])
    with tempfile.TemporaryDirectory(prefix="wb-qbench-") as tmp:
        for name in args.models.split(","):
            bench_model(name, args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
