"""Deployment bundle: one folder a user can copy to a server and run without Workbench.

Contents::

    model.onnx            the deployed model (quantized when a quantize stage ran, else fp32)
    model_fp32.onnx       the float ONNX export, when the deployed model is quantized
    model.pt2             torch.export archive (when requested)
    weights.safetensors   float weights (when requested)
    recipe.toml           the recipe that produced it (re-run with `workbench run recipe.toml`)
    metrics.json          accuracy, latency, throughput, size, parity, environment
    preprocess.json       input name/shape, class names, scale/mean/std, image size (read by predict.py)
    README.md             model card: inputs, outputs, preprocessing, how it was optimized
    predict.py            minimal onnxruntime inference on an .npy or image file

The whole folder is built under a temporary sibling name and renamed into place (each file is
complete before the folder appears), and an existing bundle is only replaced with ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.fileio import atomic_write_text
from workbench.errors import WorkbenchError

__all__ = ["BundleInfo", "check_bundle_target", "read_bundle", "render_model_card", "resolve_bundle_dir",
           "write_bundle"]


@dataclass
class BundleInfo:
    """What predict.py and the model card need to know about the model's inputs and outputs."""

    name: str
    input_name: str = "input"
    output_name: str = "logits"
    input_shape: list[int] = field(default_factory=list)  # one sample, no batch dim
    class_names: list[str] = field(default_factory=list)
    data_kind: str = "image"  # image | tabular | tensor
    preprocess: dict[str, Any] = field(default_factory=dict)  # scale, mean, std (from the data source)
    image_size: int = 32
    optimization: list[str] = field(default_factory=list)
    ort_threads: int = 0
    ort_optimization: str = "all"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_bundle_dir(text: str | Path) -> Path:
    """``export.bundle_dir`` as an absolute path; relative paths are relative to the current directory."""
    p = Path(text).expanduser()
    return p if p.is_absolute() else Path.cwd() / p


def check_bundle_target(path: Path, force: bool) -> None:
    """Refuse, before any work, a bundle folder that cannot be written or would replace one without ``force``."""
    from workbench.errors import short

    where = f"export.bundle_dir = {short(path)}"
    if path.exists() and not path.is_dir():
        raise WorkbenchError(f"{where}: is an existing file, not a folder; choose a folder path")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise WorkbenchError(f"{where}: the folder already exists and is not empty; to overwrite it set "
                             "export.force = true in the recipe or pass --force")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise WorkbenchError(f"{where}: {short(ancestor)} is a file, not a folder; choose a path inside a folder")
    try:
        tempfile.TemporaryDirectory(prefix=".wb-write-check-", dir=ancestor).cleanup()
    except OSError as exc:
        raise WorkbenchError(f"{where}: cannot write there ({exc.strerror or type(exc).__name__}); choose a "
                             "folder you can write to") from None


def write_bundle(target: str | Path, files: dict[str, Path], info: BundleInfo, *, recipe_text: str,
                 metrics: dict[str, Any], force: bool = False) -> Path:
    """Assemble the bundle in a temp sibling folder, then rename it to ``target`` in one step.

    ``files`` maps names inside the bundle to source files (copied). With ``force`` an existing
    folder is moved aside first and deleted only after the new bundle is in place.
    """
    target = resolve_bundle_dir(target)
    check_bundle_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for name, src in files.items():
            shutil.copyfile(src, staging / name)
        atomic_write_text(staging / "recipe.toml", recipe_text)
        atomic_write_text(staging / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
        atomic_write_text(staging / "preprocess.json", json.dumps(info.to_dict(), indent=2) + "\n")
        atomic_write_text(staging / "README.md", render_model_card(info, metrics, sorted([*files, "predict.py"])))
        atomic_write_text(staging / "predict.py", PREDICT_PY)
        _make_shareable(staging)
        old: Path | None = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _make_shareable(folder: Path) -> None:
    """Temp files/folders are created private (0600/0700); a bundle is for sharing: use the umask."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


def read_bundle(path: str | Path) -> dict[str, Any]:
    """A bundle's metrics and preprocessing (for GUI panels and `workbench show`-style views)."""
    p = Path(path)
    try:
        return {"path": str(p), "metrics": json.loads((p / "metrics.json").read_text(encoding="utf-8")),
                "preprocess": json.loads((p / "preprocess.json").read_text(encoding="utf-8")),
                "files": sorted(f.name for f in p.iterdir() if f.is_file())}
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkbenchError(f"{p}: not a readable Workbench bundle ({exc})") from None


def _fmt(v: Any, kind: str = "") -> str:
    if v is None:
        return "—"
    if kind == "pct":
        return f"{v * 100:.2f} %"
    if kind == "mb":
        return f"{v / 1e6:.2f} MB"
    if kind == "ms":
        return f"{v:.3f} ms"
    if isinstance(v, float):
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    return str(v)


def render_model_card(info: BundleInfo, metrics: dict[str, Any], files: list[str]) -> str:
    """A short README.md: what goes in, what comes out, how to preprocess, how it was made, how it scores."""
    d = metrics.get("deployed") or {}
    b = metrics.get("baseline") or {}
    env = metrics.get("environment") or {}
    pre = info.preprocess or {}
    shape = ", ".join(str(s) for s in info.input_shape)
    lines = [f"# {info.name}", "", "Deployment bundle written by Acceleration Workbench.", "", "## Input",
             f"- `{info.input_name}`: float32, shape `[batch, {shape}]` (batch is dynamic)."]
    if info.data_kind == "image":
        lines += [f"- Images: RGB, centre square crop resized to {info.image_size}x{info.image_size} (bilinear), "
                  "channels first (C, H, W).",
                  f"- Preprocessing: `x = (pixels * {pre.get('scale', 1.0):.6g} - mean) / std` with "
                  f"mean = {pre.get('mean', [0.0])}, std = {pre.get('std', [1.0])} per channel "
                  "(pixels are 0-255 uint8)."]
    else:
        lines += [f"- Preprocessing: `x = (x * {pre.get('scale', 1.0):.6g} - mean) / std` per feature "
                  "(values in preprocess.json)."]
    lines += ["", "## Output", f"- `{info.output_name}`: float32 `[batch, {len(info.class_names) or 'classes'}]` "
              "unnormalised scores; apply softmax for probabilities, argmax for the class."]
    if info.class_names:
        lines.append(f"- Classes (index order): {', '.join(info.class_names)}")
    lines += ["", "## How it was optimized"] + [f"- {s}" for s in info.optimization]
    lines += ["", "## Measured", "", "| | Baseline (torch fp32) | This model |", "|---|---:|---:|",
              f"| Eval accuracy | {_fmt(b.get('accuracy'), 'pct')} | {_fmt(d.get('accuracy'), 'pct')} |",
              f"| Latency p50 (batch {d.get('latency_batch', '?')}) | {_fmt(b.get('latency_ms_p50'), 'ms')} | "
              f"{_fmt(d.get('latency_ms_p50'), 'ms')} |",
              f"| Throughput (samples/s) | {_fmt(b.get('throughput'))} | {_fmt(d.get('throughput'))} |",
              f"| Size | {_fmt(b.get('size_bytes'), 'mb')} | {_fmt(d.get('size_bytes'), 'mb')} |", "",
              f"Measured with {d.get('runtime', 'onnxruntime')} on {env.get('device') or env.get('platform', '?')}, "
              f"torch {env.get('torch', '?')}, onnxruntime {env.get('onnxruntime', '?')}. Latency depends on the "
              "machine: re-measure on yours (`workbench bench model.onnx`). Details in metrics.json.", "",
              "## Run it", "", "```", "pip install onnxruntime numpy pillow",
              "python predict.py image.png          # or an .npy array: [N, ...] or one sample",
              "```", "", "Raw .npy inputs are preprocessed like the training data; pass `--preprocessed` when the "
              "array is already normalised.", "", "## Files", *[f"- `{f}`" for f in files],
              "- `recipe.toml`, `metrics.json`, `preprocess.json`, `README.md`", ""]
    return "\n".join(lines)


PREDICT_PY = r'''"""Run the bundled model with onnxruntime on an .npy array or an image file.

    python predict.py INPUT [--model model.onnx] [--top 3] [--preprocessed] [--threads N]

Prints one JSON object per sample: the top classes with probabilities. Needs numpy and
onnxruntime (and Pillow for images). Preprocessing values come from preprocess.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_input(path: Path, info: dict, preprocessed: bool) -> np.ndarray:
    shape = list(info["input_shape"])
    pre = info.get("preprocess") or {}
    if path.suffix.lower() == ".npy":
        x = np.load(path, allow_pickle=False)
    else:
        from PIL import Image

        size = int(info.get("image_size", shape[-1]))
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        w, h = rgb.size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, box=box)
        x = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
        if shape and shape[0] == 1:
            x = x.mean(axis=0, keepdims=True)
    if x.ndim == len(shape):
        x = x[None]
    x = x.astype(np.float32)
    if not preprocessed:
        scale = float(pre.get("scale", 1.0))
        mean = np.asarray(pre.get("mean", [0.0]), dtype=np.float32)
        std = np.asarray(pre.get("std", [1.0]), dtype=np.float32)
        if x.ndim == 4:  # per channel
            mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
        x = (x * scale - mean) / std
    if list(x.shape[1:]) != shape:
        raise SystemExit(f"error: input shape {list(x.shape)} does not fit the model's [batch, {shape}]")
    return np.ascontiguousarray(x, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help=".npy array or image file")
    parser.add_argument("--model", type=Path, default=HERE / "model.onnx")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--preprocessed", action="store_true", help="the .npy is already normalised")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    info = json.loads((HERE / "preprocess.json").read_text(encoding="utf-8"))
    x = load_input(args.input, info, args.preprocessed)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads or int(info.get("ort_threads", 0))
    providers = [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]
    session = ort.InferenceSession(str(args.model), so, providers=providers)
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    names = info.get("class_names") or []
    for row in probs:
        top = np.argsort(-row)[: args.top]
        print(json.dumps({"top": [{"class": int(i), "name": names[i] if i < len(names) else str(i),
                                   "probability": round(float(row[i]), 6)} for i in top]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
