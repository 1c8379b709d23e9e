"""Quantization benchmark: one CNN and the transformer, six inference pipelines, all in one run.

For each model: eval accuracy, size and latency (batch 1 and 64) for torch eager fp32, torch bf16
autocast, torch.compile, onnxruntime fp32, onnxruntime dynamic INT8 and onnxruntime static INT8
(QDQ, per-channel, MinMax on 256 train samples), with speed ratios against torch eager fp32
measured in the same process, back to back, with the same thread count.

    python benchmarks/bench_quantization.py            # full: trains both models (minutes)
    python benchmarks/bench_quantization.py --quick    # smoke: tiny data, 1 epoch, few iterations
    python benchmarks/bench_quantization.py --weights small_cnn=a.safetensors,transformer=b.safetensors

Goals (issue #5): best CNN pipeline >= 3x faster than torch eager fp32 at <= 1 point accuracy loss;
transformer INT8 >= 2.5x. Prints a Markdown table, the exact command and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.engine.bench import bench_torch  # noqa: E402
from workbench.engine.data import build_loader, load_dataset  # noqa: E402
from workbench.engine.events import CancelToken, Reporter  # noqa: E402
from workbench.engine.export import export_onnx  # noqa: E402
from workbench.engine.models import build_zoo_model, load_weights  # noqa: E402
from workbench.engine.pipeline import evaluate_runtime  # noqa: E402
from workbench.engine.precision import resolve_precision  # noqa: E402
from workbench.engine.quantize import calibration_batches, cpu_has_vnni, quantize_onnx  # noqa: E402
from workbench.engine.runtimes import OrtRuntime, TorchRuntime, bench_runtime  # noqa: E402
from workbench.engine.telemetry import device_description  # noqa: E402
from workbench.engine.train import evaluate, train  # noqa: E402
from workbench.recipe import Recipe  # noqa: E402

MODELS = ("small_cnn", "transformer")


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
    print(f"# trained {name}: {recipe.train.epochs} epochs in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return model.eval()


def _torch_accuracy(model: torch.nn.Module, loader: Any, autocast: torch.dtype | None = None) -> float:
    correct = total = 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
        for x, y in loader:
            correct += int((model(x).float().argmax(1) == y).sum())
            total += len(y)
    return correct / max(1, total)


def _row(label: str, acc: float, size: int, stats: list[Any]) -> dict[str, Any]:
    by_b = {s.batch_size: s for s in stats}
    return {"pipeline": label, "accuracy": acc, "size": size,
            "b1": by_b[1].p50_ms if 1 in by_b else None, "b64": by_b[64].p50_ms if 64 in by_b else None}


def bench_model(name: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    recipe = Recipe()
    recipe.data.samples_per_class = 40 if args.quick else 500
    recipe.train.epochs = 1 if args.quick else args.epochs
    data = load_dataset(recipe.data)
    model = _train(name, recipe, data, args.weight_map.get(name))
    loader = build_loader(data.eval, 256, recipe.loader, train=False)
    timing = dict(warmup=args.warmup, iters=args.iters, max_time_s=args.max_time, threads=args.threads)
    sizes = [1, 64]
    shape = data.input_shape
    rows = []
    fp32_size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    plan = resolve_precision(recipe.precision)
    rows.append(_row("torch eager fp32", evaluate(model, loader, plan)["accuracy"], fp32_size,
                     bench_torch(model, shape, sizes, **timing)))
    rows.append(_row("torch bf16 autocast", _torch_accuracy(model, loader, torch.bfloat16), fp32_size,
                     bench_torch(model, shape, sizes, autocast=torch.bfloat16, **timing)))
    try:
        rt = TorchRuntime(model, compile=True)
        stats = bench_runtime(rt, shape, sizes, **timing)
        rows.append(_row("torch.compile", evaluate_runtime(rt, loader), fp32_size, stats))
        rt.close()
    except Exception as exc:  # no compiler etc.: say so in the table instead of dying
        rows.append({"pipeline": f"torch.compile (failed: {str(exc).splitlines()[0][:60]})", "accuracy": None,
                     "size": None, "b1": None, "b64": None})
    fp32 = export_onnx(model, shape, workdir / f"{name}.onnx")
    calib = calibration_batches(data.train, data.eval, 256)
    files = {"onnxruntime fp32": fp32,
             "onnxruntime dynamic INT8": quantize_onnx(fp32, workdir / f"{name}-dyn.onnx", method="dynamic").path,
             "onnxruntime static INT8 (QDQ)": quantize_onnx(fp32, workdir / f"{name}-static.onnx", method="static",
                                                            batches=calib, per_channel=True).path}
    for label, path in files.items():
        rt = OrtRuntime(path, threads=args.threads)
        try:
            rows.append(_row(label, evaluate_runtime(rt, loader), path.stat().st_size,
                             bench_runtime(rt, shape, sizes, **timing)))
        finally:
            rt.close()
    return rows


def _fmt_table(name: str, rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    out = [f"### {name}", "",
           "| Pipeline | Accuracy | Δ pts | Size (MB) | p50 b1 (ms) | × vs eager b1 | p50 b64 (ms) | × vs eager b64 |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        acc = f"{r['accuracy'] * 100:.2f} %" if r["accuracy"] is not None else "—"
        delta = f"{(r['accuracy'] - base['accuracy']) * 100:+.2f}" if r["accuracy"] is not None else "—"
        size = f"{r['size'] / 1e6:.3f}" if r["size"] else "—"
        cells = [r["pipeline"], acc, delta, size]
        for key in ("b1", "b64"):
            v = r[key]
            cells += [f"{v:.3f}" if v else "—", f"{base[key] / v:.2f}x" if v and base[key] else "—"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny data, 1 epoch, few iterations")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch/ORT intra-op threads (0 = all cores)")
    p.add_argument("--max-time", type=float, default=20.0, help="cap per timed case (s)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--weights", default="", help="name=file.safetensors,... to skip training")
    args = p.parse_args(argv)
    args.iters = args.iters or (5 if args.quick else 100)
    args.weight_map = dict(kv.split("=", 1) for kv in args.weights.split(",") if kv)
    os.environ.setdefault("WORKBENCH_HOME", str(Path(tempfile.gettempdir()) / "workbench-bench"))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`\n")
    print(f"Machine: {device_description()}, {platform.processor() or platform.machine()}, VNNI: {cpu_has_vnni()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"onnxruntime {__import__('onnxruntime').__version__}, Python {platform.python_version()}; "
          f"load average at start: {', '.join(f'{v:.2f}' for v in load) if load else 'n/a'}\n")
    with tempfile.TemporaryDirectory(prefix="wb-qbench-") as tmp:
        for name in args.models.split(","):
            rows = bench_model(name, args, Path(tmp))
            print(_fmt_table(name, rows) + "\n", flush=True)
    if load is not None:
        print(f"load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
