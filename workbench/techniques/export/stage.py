"""The ``[export]`` stage: export + verify the requested formats, pick the deployed ONNX, write the bundle.

The *deployed* ONNX file is the quantized one when a quantize stage ran (its file is
``ctx.onnx_path``), else the fp32 export; it becomes ``ctx.onnx_path`` so the run's "final" figures
are the deployed model under onnxruntime, with ``size_bytes`` the file size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.core.onnx_export import FP32_TOLERANCE, eval_input_batches
from workbench.core.pipeline import Stage
from workbench.recipe import Recipe
from workbench.techniques.export import bundle as bundle_mod
from workbench.techniques.export.formats import ExportedFile, export_model


def _previous_after(ctx: Any) -> dict[str, Any] | None:
    return ctx.stages[-1].get("after") if ctx.stages else ctx.baseline


def run_export_stage(ctx: Any) -> dict[str, Any]:
    """The ``export`` stage: export + verify requested formats, pick the deployed ONNX, write the bundle."""
    from workbench.core.pipeline import environment
    from workbench.recipe import dumps_recipe

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
        method = quant.get("method") or q.method  # what ran ("auto" resolved to static or dynamic)
        detail = (f"{method} INT8" if method in ("dynamic", "static", "torch_dynamic") else method)
        if method == "static":
            detail += f" (QDQ, {q.calibration} calibration on {q.calibration_samples} samples, " \
                      f"{'per-channel' if q.per_channel else 'per-tensor'} weights)"
        kept = (quant.get("quantization") or {}).get("kept_float") or []
        if kept:
            detail += f"; kept float: {', '.join(k.get('module') or k['node'] for k in kept)}"
        lines.append(f"quantized with onnxruntime: {detail}")
    lines.append(f"exported to ONNX (opset {r.export.opset}) with torch.onnx.export(dynamo=True)")
    return lines


def _preflight(recipe: Recipe) -> None:
    """A bundle folder that cannot be written fails before any training or export work."""
    sec = recipe.export
    if sec is not None and sec.bundle_dir:
        bundle_mod.check_bundle_target(bundle_mod.resolve_bundle_dir(sec.bundle_dir), sec.force)


def _check_loaded(ctx: Any) -> None:
    """Token models: the bundle's predict.py reads images and tables, not token ids."""
    from workbench.errors import RecipeError

    if ctx.data.kind == "tokens" and ctx.recipe.export.bundle_dir:
        raise RecipeError(f"export.bundle_dir with token data ({ctx.recipe.data.path}): the bundle's predict.py "
                          "reads images and tables; leave bundle_dir empty and deploy export/model.onnx, which "
                          "takes the named token inputs")


STAGE = Stage("export", lambda r: r.export is not None, run_export_stage, preflight=_preflight, token_inputs=True,
              check_loaded=_check_loaded)
