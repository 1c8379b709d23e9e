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
    FP32_TOLERANCE,
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
    "run_export_stage",
    "torch_predict_fn",
    "verify_onnx",
]


# ------------------------------------------------------------------------------------- parity


# ------------------------------------------------------------------------------------- exports


def export_pt2(module: nn.Module, input_shape: Sequence[int], path: str | Path) -> Path:
    """A ``torch.export`` archive with a dynamic batch axis (example batch 2: size 1 would specialise)."""
    out = Path(path)
    tmp = tmp_path_for(out)
    was_training = module.training
    module.eval()
    try:
        example = torch.randn((2, *input_shape))
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


def _previous_after(ctx: Any) -> dict[str, Any] | None:
    return ctx.stages[-1].get("after") if ctx.stages else ctx.baseline


def run_export_stage(ctx: Any) -> dict[str, Any]:
    """The ``export`` stage: export + verify requested formats, pick the deployed ONNX, write the bundle."""
    from workbench.core.pipeline import environment
    from workbench.recipe import dumps_recipe
    from workbench.techniques.export import bundle as bundle_mod

    sec = ctx.recipe.export
    rep = ctx.reporter
    target = bundle_mod.resolve_bundle_dir(sec.bundle_dir) if sec.bundle_dir else None
    if target is not None:
        bundle_mod.check_bundle_target(target, sec.force)  # fail before any work
    formats = list(dict.fromkeys(sec.formats))
    if target is not None and "onnx" not in formats:
        formats.insert(0, "onnx")
        rep.log("export: bundle needs an ONNX model for predict.py; adding format 'onnx'")
    before = _previous_after(ctx)
    record: dict[str, Any] = {"name": "export", "before": before, "formats": {}}
    exported: dict[str, ExportedFile] = {}
    out_dir = ctx.artifacts / "export"
    batches = eval_input_batches(ctx.eval_loader, sec.parity_batches)
    if ctx.module is not None:
        exported = export_model(ctx.module, ctx.input_shape, out_dir, formats, batches=batches,
                                eval_loader=ctx.eval_loader, opset=sec.opset, threads=sec.ort_threads,
                                optimization=sec.ort_optimization, reporter=rep, cancel=ctx.cancel,
                                model_name=ctx.summary.get("model", {}).get("name") or ctx.recipe.model.label)
        for fmt, ef in exported.items():
            record["formats"][fmt] = ef.to_dict()
            ctx.store.add_artifact(ctx.run_id, fmt, ef.path, {"parity": ef.parity.to_dict(), "accuracy": ef.accuracy})
            if not ef.ok:
                rep.log(f"export {fmt}: parity max abs error {ef.parity.max_abs_err:.2e} exceeds "
                        f"{FP32_TOLERANCE:g}", "warning")
    else:
        skipped = [f for f in formats if f != "onnx"]
        if skipped:
            rep.log(f"export: the model is an ONNX file; {', '.join(skipped)} need a PyTorch model (skipped)",
                    "warning")
    quant = next((s for s in reversed(ctx.stages) if s.get("name") == "quantize" and s.get("onnx_path")), None)
    if ctx.onnx_path is not None:
        deployed = Path(ctx.onnx_path)
    elif "onnx" in exported:
        deployed = exported["onnx"].path
    else:
        deployed = None
    after: dict[str, Any] | None = None
    if deployed is not None:
        if quant is not None and Path(quant["onnx_path"]) == deployed and quant.get("after"):
            after = quant["after"]  # the same file was measured by the quantize stage
        else:
            after = ctx.measure("export", onnx_path=deployed)
        ctx.onnx_path = deployed
        last = ctx.last_checkpoint
        if last is not None and last.runtime_kind == "torch":
            ctx.add_checkpoint("runtime switch", "onnxruntime fp32 (exported)", onnx_path=deployed)
    else:
        after = before
    record["after"] = after
    record["deployed"] = str(deployed) if deployed else None
    onnx_parity = exported["onnx"].parity.to_dict() if "onnx" in exported else None
    record["parity"] = quant.get("parity") if quant is not None else onnx_parity
    if target is not None and deployed is not None:
        files: dict[str, Path] = {"model.onnx": deployed}
        if quant is not None and "onnx" in exported:
            files["model_fp32.onnx"] = exported["onnx"].path
        if "pt2" in exported:
            files["model.pt2"] = exported["pt2"].path
        if "safetensors" in exported:
            files["weights.safetensors"] = exported["safetensors"].path
        metrics = {
            "run_id": ctx.run_id,
            "name": ctx.recipe.name,
            "model": ctx.summary.get("model", {}).get("name") or ctx.recipe.model.label,
            "deployed": after,
            "baseline": ctx.baseline,
            "parity": {"export": onnx_parity, "quantized_vs_fp32": quant.get("parity") if quant else None},
            "formats": {k: v.to_dict() | {"path": files_name(files, v.path)} for k, v in exported.items()},
            "quantization": {k: quant.get(k) for k in ("method", "note", "accuracy_drop_points", "speedup_vs_float")}
            if quant else None,
            "environment": {**environment(), **ctx.summary.get("environment", {})},
        }
        info = bundle_mod.BundleInfo(
            name=ctx.recipe.name,
            input_name="input",
            output_name="logits",
            input_shape=[int(d) for d in ctx.input_shape],
            class_names=list(getattr(ctx.data, "class_names", []) or []),
            data_kind=str(getattr(ctx.data, "kind", "image")),
            preprocess=dict(getattr(ctx.data, "preprocess", {}) or {}),
            image_size=int(ctx.recipe.data.image_size),
            optimization=_optimization_story(ctx, quant),
            ort_threads=sec.ort_threads,
            ort_optimization=sec.ort_optimization,
        )
        path = bundle_mod.write_bundle(target, files, info, recipe_text=dumps_recipe(ctx.recipe), metrics=metrics,
                                       force=sec.force)
        record["bundle"] = str(path)
        ctx.store.add_artifact(ctx.run_id, "bundle", path, {"model": "model.onnx"})
        rep.log(f"bundle written to {path}")
    return record


def files_name(files: dict[str, Path], path: Path) -> str | None:
    """The name a source file has inside the bundle (None when it is not in it)."""
    return next((name for name, p in files.items() if Path(p) == Path(path)), None)


def _optimization_story(ctx: Any, quant: dict[str, Any] | None) -> list[str]:
    """Human lines for the model card: what was done to this model, in order."""
    lines = []
    r = ctx.recipe
    if r.train.epochs:
        lines.append(f"trained {r.train.epochs} epoch(s) ({r.train.optimizer}, lr {r.train.lr:g}, "
                     f"{r.precision.autocast if r.precision.autocast != 'none' else 'fp32'})")
    for s in ctx.stages:
        if s.get("name") in ("prune", "distill"):
            lines.append(f"{s['name']}: {s.get('note') or 'applied'}")
    if quant is not None:
        q = r.quantize
        detail = (f"{q.method} INT8" if q.method in ("dynamic", "static", "torch_dynamic") else q.method)
        if q.method == "static":
            detail += f" (QDQ, {q.calibration} calibration on {q.calibration_samples} samples, " \
                      f"{'per-channel' if q.per_channel else 'per-tensor'} weights)"
        kept = (quant.get("quantization") or {}).get("kept_float") or []
        if kept:
            detail += f"; kept float: {', '.join(k.get('module') or k['node'] for k in kept)}"
        lines.append(f"quantized with onnxruntime: {detail}")
    lines.append(f"exported to ONNX (opset {r.export.opset}) with torch.onnx.export(dynamo=True)")
    return lines


def _register() -> None:
    from workbench.core.pipeline import Stage, register_stage

    register_stage(Stage("export", applies=lambda r: r.export is not None, run=run_export_stage, order=40))


_register()
