"""Export a trained model (ONNX, torch.export ``.pt2``, safetensors), verify every file, build a bundle.

Every export checks itself before anyone relies on it: the file is loaded back and run on real
eval batches next to the PyTorch model (max absolute and relative error, top-1 agreement), and
the ONNX file's eval accuracy is measured under onnxruntime. Those numbers go into the stage
record, the run store and the bundle's ``metrics.json``.

Files are written to a temp name and renamed into place, so a crash never leaves half a model
that a later run would pick up. The deployment bundle (``bundle.write_bundle``) follows the same
rule for the whole folder and never replaces an existing bundle unless ``force`` is set.

Stage wiring: the ``export`` stage exports ``ctx.module`` (the float model, possibly pruned or
distilled). The *deployed* ONNX file is the quantized one when a quantize stage ran (its file is
``ctx.onnx_path``), else the fp32 export; it becomes ``ctx.onnx_path`` so the run's "final"
figures are the deployed model under onnxruntime, with ``size_bytes`` the file size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.core.events import CancelToken, Reporter
from workbench.core.models.loaders import load_export_archive
from workbench.core.onnx_export import (
    ParityReport,
    eval_input_batches,
    export_onnx,
    ort_predict_fn,
    parity,
    tmp_path_for,
    torch_predict_fn,
    verify_onnx,
)
from workbench.errors import WorkbenchError

__all__ = [
    "ExportedFile",
    "ParityReport",
    "eval_input_batches",
    "export_model",
    "export_onnx",
    "export_pt2",
    "export_safetensors",
    "ort_predict_fn",
    "parity",
    "torch_predict_fn",
    "verify_onnx",
]


# ------------------------------------------------------------------------------------- exports


def export_pt2(module: nn.Module, input_shape: Sequence[int], path: str | Path) -> Path:
    """A ``torch.export`` archive with a dynamic batch axis (example batch 2: size 1 would specialise)."""
    out = Path(path)
    tmp = tmp_path_for(out)
    was_training = module.training
    module.eval()
    try:
        token_example = getattr(module, "example_input", None)  # named token inputs: a stacked int64 batch
        example = token_example(2, int(input_shape[-1])) if callable(token_example) else torch.randn((2, *input_shape))
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(tmp))
        os.replace(tmp, out)
    except WorkbenchError:
        raise
    except Exception as exc:
        raise WorkbenchError(f"torch.export of {type(module).__name__} failed: "
                             f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}"
                             ) from exc
    finally:
        tmp.unlink(missing_ok=True)
        module.train(was_training)
    return out


def export_safetensors(module: nn.Module, path: str | Path, model_name: str = "") -> Path:
    """The state_dict as safetensors (no pickle: loading it cannot run code). Written atomically."""
    from workbench.core.models import save_weights

    out = Path(path)
    save_weights(module, out, model_name=model_name)
    return out


@dataclass
class ExportedFile:
    """One exported file and its self-check. ``accuracy`` is eval accuracy under onnxruntime (ONNX only)."""

    format: str
    path: Path
    size_bytes: int
    parity: ParityReport
    accuracy: float | None = None

    @property
    def ok(self) -> bool:
        return self.parity.ok()

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "path": str(self.path), "size_bytes": self.size_bytes,
                "parity": self.parity.to_dict(), "parity_ok": self.ok, "accuracy": self.accuracy}


def _verify_pt2(path: Path, reference: Callable[[np.ndarray], np.ndarray], batches: Sequence[np.ndarray]) -> ParityReport:
    from workbench.core.models.loaders import exported_module

    program = load_export_archive(path)  # our own file, but through the one safe door all the same
    return parity(reference, torch_predict_fn(exported_module(program, path)), batches)


def _verify_safetensors(module: nn.Module, path: Path, reference: Callable[[np.ndarray], np.ndarray],
                        batches: Sequence[np.ndarray]) -> ParityReport:
    """Load the file into a fresh copy of the architecture (weights zeroed first) and compare."""
    import copy

    from workbench.core.models import load_weights

    fresh = copy.deepcopy(module).cpu()
    with torch.no_grad():
        for t in fresh.state_dict().values():
            if t.is_floating_point():
                t.zero_()
    load_weights(fresh, path)
    return parity(reference, torch_predict_fn(fresh), batches)


def export_model(module: nn.Module, input_shape: Sequence[int], out_dir: str | Path, formats: Sequence[str], *,
                 batches: Sequence[np.ndarray], eval_loader: Iterable[Any] | None = None, opset: int = 18,
                 threads: int = 0, optimization: str = "all", stem: str = "model", model_name: str = "",
                 reporter: Reporter | None = None, cancel: CancelToken | None = None) -> dict[str, ExportedFile]:
    """Export ``module`` (moved to CPU, eval mode) in each format into ``out_dir`` and verify each file.

    ``batches`` are real eval inputs for parity; ``eval_loader`` (optional) gives the ONNX file's
    accuracy under onnxruntime with ``threads``/``optimization``. The module's device and
    training flag are restored afterwards.
    """
    from workbench.core.precision import unwrap

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = unwrap(module)
    params = list(module.parameters())
    device = params[0].device if params else torch.device("cpu")
    was_training = module.training
    module.cpu().eval()
    ref = torch_predict_fn(module)
    results: dict[str, ExportedFile] = {}
    try:
        for fmt in dict.fromkeys(formats):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if reporter is not None:
                reporter.log(f"export: {fmt}")
            if fmt == "onnx":
                path = export_onnx(module, input_shape, out_dir / f"{stem}.onnx", opset)
                rep, acc = verify_onnx(path, ref, batches, eval_loader, threads=threads, optimization=optimization,
                                       cancel=cancel)
                results[fmt] = ExportedFile(fmt, path, path.stat().st_size, rep, acc)
            elif fmt == "pt2":
                path = export_pt2(module, input_shape, out_dir / f"{stem}.pt2")
                results[fmt] = ExportedFile(fmt, path, path.stat().st_size, _verify_pt2(path, ref, batches))
            elif fmt == "safetensors":
                path = export_safetensors(module, out_dir / f"{stem}.safetensors", model_name=model_name)
                results[fmt] = ExportedFile(fmt, path, path.stat().st_size,
                                            _verify_safetensors(module, path, ref, batches))
            else:
                raise WorkbenchError(f"export format {fmt!r}: expected onnx, pt2 or safetensors")
            r = results[fmt]
            if reporter is not None:
                level = "info" if r.ok else "warning"
                reporter.log(f"export {fmt}: {r.path.name}, {r.size_bytes / 1e6:.2f} MB, parity max abs "
                             f"{r.parity.max_abs_err:.2e}, top-1 agreement {r.parity.top1_agreement:.4f}"
                             + (f", ORT accuracy {r.accuracy:.4f}" if r.accuracy is not None else ""), level)
    finally:
        module.to(device)
        module.train(was_training)
    return results


# ------------------------------------------------------------------------------------- stage


