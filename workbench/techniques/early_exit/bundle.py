"""Early exits outside PyTorch: ONNX segments, a small numpy/onnxruntime runner, and its parity check.

Each segment but the last is exported with its exit head (outputs ``features`` for the next segment
and ``logits``); the last segment outputs the model's logits. ``predict_early_exit`` (numpy and
onnxruntime only) runs them batch-wise and drops samples from the batch once they exit; the
bundle's ``predict_early_exit.py`` is written from this very function's source, so the parity check
here tests the code that ships.
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.core.onnx_export import tmp_path_for
from workbench.errors import WorkbenchError

__all__ = ["export_segments", "predict_early_exit", "verify_segments", "write_early_exit_bundle"]


class _SegmentWithHead(nn.Module):
    def __init__(self, segment: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.segment, self.head = segment, head

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.segment(h)
        return out, self.head(out)


def export_segments(model: Any, input_shape: Sequence[int], out_dir: Path, opset: int = 18) -> list[Path]:
    """``segment_0.onnx`` … ``segment_N.onnx`` with a dynamic batch axis; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    reg_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    old = reg_log.level
    reg_log.setLevel(logging.ERROR)
    paths = []
    try:
        with torch.no_grad():
            h = torch.randn((2, *input_shape))
            for i, seg in enumerate(model.segments):
                last = i == len(model.segments) - 1
                module = seg if last else _SegmentWithHead(seg, model.heads[i])
                path = out_dir / f"segment_{i}.onnx"
                tmp = tmp_path_for(path)
                batch = torch.export.Dim("batch", min=1)
                try:
                    torch.onnx.export(module, (h,), str(tmp), input_names=["input"],
                                      output_names=["logits"] if last else ["features", "logits"],
                                      opset_version=opset, dynamo=True, dynamic_shapes=({0: batch},),
                                      external_data=False, verbose=False)  # one self-contained file per segment
                    tmp.replace(path)
                except Exception as exc:
                    raise WorkbenchError(f"early exits: ONNX export of segment {i} failed: "
                                         f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}"
                                         ) from exc
                finally:
                    tmp.unlink(missing_ok=True)
                paths.append(path)
                if not last:
                    h = seg(h)
    finally:
        reg_log.setLevel(old)
    return paths


def predict_early_exit(sessions: list, x: np.ndarray, threshold: float, rule: str = "max_prob"):  # noqa: ANN201
    """Run ONNX segments with early exits on a batch ``x``: (logits, exit index per sample).

    Needs only numpy and onnxruntime sessions (``segment_0`` … ``segment_N``). A sample leaves at the
    first head whose confidence (max softmax probability, or 1 − normalised entropy) reaches
    ``threshold``; the samples still running form a smaller batch for the next segment.
    """
    def confidence(logits):  # noqa: ANN001, ANN202
        z = logits - logits.max(axis=-1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
        if rule == "entropy":
            ent = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=-1)
            return 1.0 - ent / np.log(p.shape[-1])
        return p.max(axis=-1)

    n = x.shape[0]
    out = None
    exits = np.full(n, len(sessions) - 1)
    alive = np.arange(n)
    h = x.astype(np.float32)
    for k, sess in enumerate(sessions[:-1]):
        h, logits = sess.run(["features", "logits"], {"input": h})
        if out is None:
            out = np.empty((n, logits.shape[-1]), dtype=np.float32)
        done = confidence(logits) >= threshold
        out[alive[done]] = logits[done]
        exits[alive[done]] = k
        alive, h = alive[~done], h[~done]
        if alive.size == 0:
            return out, exits
    final = sessions[-1].run(["logits"], {"input": h})[0]
    if out is None:
        return final, exits
    out[alive] = final
    return out, exits


_RUNNER_HEAD = '''"""Early-exit inference with onnxruntime: python predict_early_exit.py inputs.npy

Loads segment_*.onnx and thresholds.json from this folder, runs the batch in inputs.npy (float32,
shaped like the model's input with a batch axis first) and prints the predicted class and the exit
each sample left at. Needs numpy and onnxruntime only. Written by Acceleration Workbench.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


'''
_RUNNER_MAIN = '''

def load(folder=Path(__file__).resolve().parent):  # noqa: ANN001, ANN201
    cfg = json.loads((folder / "thresholds.json").read_text())
    sessions = [ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
                for name in cfg["segments"]]
    return sessions, cfg


if __name__ == "__main__":
    sessions, cfg = load()
    x = np.load(sys.argv[1], allow_pickle=False)
    logits, exits = predict_early_exit(sessions, x, cfg["threshold"], cfg["rule"])
    for i, (c, e) in enumerate(zip(logits.argmax(axis=-1), exits)):
        print(f"sample {i}: class {c}, exit {e}")
'''


def runner_source() -> str:
    """The bundle's ``predict_early_exit.py``: the very function the parity check ran, plus a main."""
    return _RUNNER_HEAD + inspect.getsource(predict_early_exit) + _RUNNER_MAIN


def verify_segments(paths: Sequence[Path], model: Any, batches: Sequence[np.ndarray], threshold: float,
                    rule: str) -> dict[str, Any]:
    """Run the ONNX segments with ``predict_early_exit`` next to the PyTorch model on real batches."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in paths]
    max_abs = 0.0
    same_exit = same_class = total = 0
    model.eval()
    with torch.no_grad():
        for x in batches:
            ref_logits, ref_exits = model.infer(torch.from_numpy(x), threshold)
            logits, exits = predict_early_exit(sessions, x, threshold, rule)
            max_abs = max(max_abs, float(np.abs(ref_logits.numpy() - logits).max()))
            same_exit += int((ref_exits.numpy() == exits).sum())
            same_class += int((ref_logits.numpy().argmax(-1) == logits.argmax(-1)).sum())
            total += len(x)
    if total == 0:
        raise WorkbenchError("early exits: the parity check needs at least one batch")
    return {"samples": total, "max_abs_err": max_abs, "exit_agreement": same_exit / total,
            "top1_agreement": same_class / total}


def write_early_exit_bundle(target: Path, segment_paths: Sequence[Path], config: dict[str, Any],
                            parity: dict[str, Any], force: bool) -> Path:
    """Segments, thresholds.json, predict_early_exit.py and parity.json, moved into place whole."""
    if target.exists() and not force:
        raise WorkbenchError(f"{target}: already exists; set early_exit.force = true to replace it, or choose "
                             "another early_exit.bundle_dir")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for p in segment_paths:
            shutil.copy2(p, staging / p.name)
        (staging / "thresholds.json").write_text(json.dumps({**config, "segments": [p.name for p in segment_paths]},
                                                            indent=2))
        (staging / "predict_early_exit.py").write_text(runner_source())
        (staging / "parity.json").write_text(json.dumps(parity, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
