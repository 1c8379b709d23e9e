"""ONNX export and parity checks: the pieces quantization and export both stand on.

Every exported or converted model checks itself before anyone relies on it: the file is loaded back
and run on real eval batches next to the reference (max absolute and relative error, top-1
agreement). Files are written to a temp name and renamed into place, so a crash never leaves half a
model that a later run would pick up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.core.events import CancelToken
from workbench.core.models.loaders import read_onnx
from workbench.errors import WorkbenchError

__all__ = [
    "FP32_TOLERANCE",
    "ParityReport",
    "cosine_per_sample",
    "eval_input_batches",
    "export_onnx",
    "ort_predict_fn",
    "parity",
    "tmp_path_for",
    "torch_predict_fn",
    "verify_onnx",
]


#: fp32 exports must reproduce PyTorch within this absolute error (plus the same relative to max |logit|).
FP32_TOLERANCE = 1e-4


@dataclass
class ParityReport:
    """How closely a candidate reproduces the reference on the same inputs.

    ``max_rel_err`` is the max absolute error divided by the largest reference magnitude (an
    elementwise ratio explodes on logits near zero and says nothing). ``top1_agreement`` is the
    fraction of samples whose argmax class matches: meaningful for classifiers only. For models
    without labels (embeddings, hidden states) ``cosine_min`` / ``cosine_mean`` compare each sample's
    output (flattened; a sentence embedding is already pooled) with the reference's.
    """

    max_abs_err: float
    max_rel_err: float
    mean_abs_err: float
    top1_agreement: float
    samples: int
    cosine_min: float = 1.0
    cosine_mean: float = 1.0

    def ok(self, atol: float = FP32_TOLERANCE) -> bool:
        """Within ``atol`` absolute, or ``atol`` relative to the largest logit (large-logit models)."""
        return self.max_abs_err <= atol or self.max_rel_err <= atol

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cosine_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample's flattened output in ``a`` and ``b`` (1.0 where both are zero)."""
    x = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    y = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    dot = (x * y).sum(1)
    both_zero = (nx == 0) & (ny == 0)
    cos = dot / np.maximum(nx * ny, 1e-300)
    return np.where(both_zero, 1.0, np.clip(cos, -1.0, 1.0))


def parity(reference: Callable[[Any], np.ndarray], candidate: Callable[[Any], np.ndarray],
           batches: Iterable[Any]) -> ParityReport:
    """Run both predict functions on each batch (an array, or a dict of named arrays) and compare outputs."""
    max_abs = max_ref = sum_abs = 0.0
    count = agree = samples = 0
    cosines: list[np.ndarray] = []
    for x in batches:
        a = np.asarray(reference(x), dtype=np.float64)
        b = np.asarray(candidate(x), dtype=np.float64)
        if a.shape != b.shape:
            raise WorkbenchError(f"parity check: output shapes differ, reference {list(a.shape)} vs {list(b.shape)}")
        diff = np.abs(a - b)
        max_abs = max(max_abs, float(diff.max(initial=0.0)))
        max_ref = max(max_ref, float(np.abs(a).max(initial=0.0)))
        sum_abs += float(diff.sum())
        count += diff.size
        agree += int((a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)).sum())
        cosines.append(cosine_per_sample(a, b))
        samples += len(a)
    if samples == 0:
        raise WorkbenchError("parity check needs at least one batch of inputs")
    cos = np.concatenate(cosines)
    return ParityReport(max_abs, max_abs / max_ref if max_ref > 0 else max_abs, sum_abs / max(1, count),
                        agree / samples, samples, float(cos.min()), float(cos.mean()))


def torch_predict_fn(module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """numpy -> numpy logits for a CPU torch module in eval mode (no autocast: the fp32 reference)."""
    from workbench.core.measure.runtimes import first_tensor

    with contextlib.suppress(NotImplementedError):  # ExportedProgram.module() is frozen: refuses .eval()
        module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        a = np.asarray(x)  # integer inputs (token ids) stay integers; anything else is fed as float32
        a = np.ascontiguousarray(a, dtype=None if a.dtype.kind in "biu" else np.float32)
        with torch.inference_mode():
            return first_tensor(module(torch.from_numpy(a))).float().numpy()

    return run


def ort_predict_fn(runtime: Any) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: runtime.predict(x)


def eval_input_batches(loader: Iterable[Any], max_batches: int) -> list[np.ndarray]:
    """The first ``max_batches`` eval batches' inputs as numpy arrays (real data for parity): float32,
    or int64 for integer inputs (token ids must not become floats)."""
    out: list[np.ndarray] = []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        x = torch.as_tensor(batch[0] if isinstance(batch, list | tuple) else batch)
        out.append(x.long().numpy() if not x.is_floating_point() and x.dtype != torch.bool else x.float().numpy())
    return out


def tmp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def export_onnx(module: nn.Module, input_shape: Sequence[int], path: str | Path, opset: int = 18) -> Path:
    """ONNX via ``torch.onnx.export(dynamo=True)``: input ``input``, output ``logits``, dynamic batch.

    Delegates to ``runtimes.export_onnx_for_bench`` (the one exporter the whole app uses) and
    writes through a temp file + rename so readers never see a half-written model.
    """
    out = Path(path)
    tmp = tmp_path_for(out)
    try:
        from workbench.core.measure.runtimes import export_onnx_for_bench

        export_onnx_for_bench(module, input_shape, tmp, opset=opset)
        data = tmp.with_name(tmp.name + ".data")
        if data.exists():  # large models: external data must keep the name the graph refers to
            data.unlink()
            raise WorkbenchError(f"{out.name}: model too large for a single ONNX file; external data is not "
                                 "supported by the bundle yet")
        _strip_debug_metadata(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


#: Per-node metadata the dynamo exporter writes that deployment does not need: Python stack traces
#: (they leak local source paths and are most of a small model's file size) and FX node dumps. The
#: module scopes (``name_scopes``, ``class_hierarchy``, ``namespace``) stay: quantize.exclude uses them.
_DEBUG_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


def _strip_debug_metadata(path: Path) -> None:
    import onnx

    model = read_onnx(path, external_data=True)
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if p.key not in _DEBUG_METADATA]
        if len(keep) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
    onnx.save(model, str(path))


def verify_onnx(path: Path, reference: Callable[[np.ndarray], np.ndarray], batches: Sequence[np.ndarray],
                eval_loader: Iterable[Any] | None = None, *, threads: int = 0, optimization: str = "all",
                cancel: CancelToken | None = None) -> tuple[ParityReport, float | None]:
    """Parity of an ONNX file against ``reference`` and (with a loader) its eval accuracy under onnxruntime."""
    from workbench.core.measure.runtimes import OrtRuntime, evaluate_runtime

    rt = OrtRuntime(path, threads=threads, optimization=optimization)
    try:
        report = parity(reference, ort_predict_fn(rt), batches)
        acc = evaluate_runtime(rt, eval_loader, cancel) if eval_loader is not None else None
    finally:
        rt.close()
    return report, acc
