"""The ``[quantize]`` stage: export the float model, quantize, measure both side by side."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.core.pipeline import Stage
from workbench.errors import WorkbenchError
from workbench.techniques.quantize.config import AUTO_REASONS, label
from workbench.techniques.quantize.methods import (
    calibration_batches,
    cpu_has_vnni,
    int8_speed_note,
    quantize_torch_dynamic,
    quantize_with_budget,
)


def _state_size(module: nn.Module) -> int:
    """Serialized size of a module's state (quantized Linear weights are packed, not parameters)."""

    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


def choose_method(requested: str, module: nn.Module | None, onnx_path: Path | None) -> tuple[str, str]:
    """The method to run and why: ``requested`` itself, or for ``auto`` static/dynamic by the model's layers."""
    if requested != "auto":
        return requested, ""
    if module is not None:
        conv = any(isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) for m in module.modules())
    else:
        from workbench.core.models.loaders import read_onnx

        graph = read_onnx(Path(onnx_path)).graph if onnx_path is not None else None
        conv = graph is not None and any(n.op_type in ("Conv", "QLinearConv", "ConvInteger") for n in graph.node)
    method = "static" if conv else "dynamic"
    return method, f"auto chose {method} INT8: {AUTO_REASONS[method]}"


def run_quantize_stage(ctx: Any) -> dict[str, Any]:
    """The ``quantize`` stage: export the float model, quantize, measure both side by side.

    ONNX methods set ``ctx.onnx_path`` to the quantized file (``ctx.module`` stays the float
    model, so a later export stage can still write pt2/safetensors); ``torch_dynamic`` leaves
    both alone and reports the quantized module's figures.
    """
    from workbench.core.measure.runtimes import OrtRuntime, evaluate_runtime
    from workbench.core.onnx_export import (
        eval_input_batches,
        export_onnx,
        ort_predict_fn,
        parity,
        torch_predict_fn,
    )
    from workbench.core.precision import unwrap
    from workbench.errors import RecipeError

    recipe, rep = ctx.recipe, ctx.reporter
    sec = recipe.quantize
    threads = recipe.export.ort_threads if recipe.export else recipe.bench.threads
    level = recipe.export.ort_optimization if recipe.export else "all"
    work = ctx.artifacts / "quantize"
    work.mkdir(parents=True, exist_ok=True)
    eval_batches = eval_input_batches(ctx.eval_loader, recipe.export.parity_batches if recipe.export else 4)
    method, why = choose_method(sec.method, unwrap(ctx.module) if ctx.module is not None else None, ctx.onnx_path)
    if why:
        rep.log(f"quantize: {why}")
        sec = sec.model_copy(update={"method": method})  # this run's choice; the recipe keeps "auto"
    record: dict[str, Any] = {"name": "quantize", "method": method, "baseline": ctx.baseline,
                              "cpu_vnni": cpu_has_vnni(), "technique_label": label(sec)}
    if why:
        record["method_requested"], record["method_reason"] = "auto", why

    if sec.method == "torch_dynamic":
        if ctx.module is None:
            raise RecipeError("quantize.method = 'torch_dynamic' needs a PyTorch model; for an ONNX model use "
                              "'dynamic' or 'static'")
        if ctx.plan.device.type != "cpu":
            raise RecipeError("quantize.method = 'torch_dynamic' runs on CPU only; set precision.device = 'cpu' "
                              "or use an onnxruntime method")
        float_module = unwrap(ctx.module)
        before = ctx.stages[-1]["after"] if ctx.stages and ctx.stages[-1].get("after") else ctx.baseline
        qmodule = quantize_torch_dynamic(float_module)
        after = ctx.measure("quantize", module=qmodule)
        after["size_bytes"] = _state_size(qmodule)
        after["runtime"] = "torch dynamic int8"
        record["parity"] = parity(torch_predict_fn(float_module.cpu()), torch_predict_fn(qmodule),
                                  eval_batches).to_dict()
        float_module.to(ctx.plan.device)
        notes = ["the INT8 PyTorch module lives in this run only; export stages write the float model"]
        ctx.add_checkpoint("quantize", "torch eager dynamic INT8", module=qmodule, precision_plan=False)
    else:
        if ctx.module is not None:
            opset = recipe.export.opset if recipe.export else 18
            float_path = export_onnx(unwrap(ctx.module), ctx.input_shape, work / "model-fp32.onnx", opset)
            unwrap(ctx.module).to(ctx.plan.device)
        elif ctx.onnx_path is not None:
            float_path = Path(ctx.onnx_path)
        else:  # pragma: no cover - the pipeline always loads one or the other
            raise WorkbenchError("quantize: no model to quantize")
        before = ctx.measure("quantize:fp32", onnx_path=float_path)
        before["size_bytes"] = _onnx_size(float_path)

        def evaluate(path: Path) -> float:
            """Accuracy on the validation split: the fallback chooses there, the record reports on eval."""
            rt = OrtRuntime(path, threads=threads, optimization=level)
            try:
                return evaluate_runtime(rt, ctx.val_loader, ctx.cancel)
            finally:
                rt.close()

        batches = None
        if sec.method == "static" or sec.max_accuracy_drop > 0:
            n = sec.calibration_samples if sec.method == "static" else min(64, sec.calibration_samples)
            rep.log(f"quantize: {n} calibration samples from the train split (eval transforms)")
            batches = calibration_batches(ctx.data.train, ctx.data.eval, n, seed=recipe.data.seed)
        ctx.cancel.raise_if_cancelled()
        float_val_accuracy = evaluate(float_path)
        out = quantize_with_budget(float_path, work / f"model-{sec.method}.onnx", method=sec.method,
                                   evaluate=evaluate, float_accuracy=float_val_accuracy,
                                   max_accuracy_drop=sec.max_accuracy_drop, per_channel=sec.per_channel,
                                   calibration=sec.calibration, batches=batches, preprocess=sec.preprocess,
                                   exclude_modules=sec.exclude, reporter=rep, cancel=ctx.cancel)
        after = ctx.measure("quantize", onnx_path=out.path)
        after["size_bytes"] = _onnx_size(out.path)
        ref_rt = OrtRuntime(float_path, threads=threads, optimization=level)
        q_rt = OrtRuntime(out.path, threads=threads, optimization=level)
        try:
            record["parity"] = parity(ort_predict_fn(ref_rt), ort_predict_fn(q_rt), eval_batches).to_dict()
        finally:
            ref_rt.close()
            q_rt.close()
        ctx.onnx_path = out.path
        ctx.store.add_artifact(ctx.run_id, "onnx", out.path, {"method": sec.method, "float": str(float_path)})
        last = ctx.last_checkpoint
        if last is not None and last.runtime_kind == "torch":
            # The runtime switch is its own cause: time the float model on onnxruntime as a step of its own.
            ctx.add_checkpoint("runtime switch", "onnxruntime fp32", onnx_path=float_path)
        kind = "fp16" if sec.method == "fp16" else f"{sec.method} INT8"
        ctx.add_checkpoint("quantize", f"onnxruntime {kind}", onnx_path=out.path)
        record.update(onnx_path=str(out.path), float_onnx_path=str(float_path), quantization=out.to_dict(),
                      selection={"split": "validation", "float_accuracy": float_val_accuracy,
                                 "quantized_accuracy": out.accuracy})
        notes = list(out.notes)
        if out.kept_float:
            record["kept_float"] = [k.get("module") or k["node"] for k in out.kept_float]
    record["before"], record["after"] = before, after
    if before.get("accuracy") is not None and after.get("accuracy") is not None:
        record["accuracy_drop_points"] = (before["accuracy"] - after["accuracy"]) * 100
    if before.get("size_bytes") and after.get("size_bytes"):
        record["size_ratio"] = after["size_bytes"] / before["size_bytes"]
    if before.get("latency_ms_p50") and after.get("latency_ms_p50"):
        record["speedup_vs_float"] = before["latency_ms_p50"] / after["latency_ms_p50"]
    if ctx.baseline and ctx.baseline.get("latency_ms_p50") and after.get("latency_ms_p50"):
        record["speedup_vs_baseline"] = ctx.baseline["latency_ms_p50"] / after["latency_ms_p50"]
    speed = int8_speed_note(before, after, sec.method)
    record["note"] = "; ".join(n for n in [speed, why, *notes] if n)
    if speed:
        rep.log(f"quantize: {speed}", "warning")
    return record


def _onnx_size(path: Path) -> int:
    from workbench.core.models.loaders import onnx_file_size

    return onnx_file_size(Path(path))


def _check_loaded(ctx: Any) -> None:
    """Token models: the accuracy-aware fallback's per-layer search takes single-input models only."""
    from workbench.errors import RecipeError

    sec = ctx.recipe.quantize
    if ctx.data.kind == "tokens" and sec.max_accuracy_drop > 0:
        raise RecipeError(f"quantize.max_accuracy_drop = {sec.max_accuracy_drop:g} with token data: the per-layer "
                          "sensitivity search takes single-input models; set it to 0 and keep layers float with "
                          "quantize.exclude")


STAGE = Stage("quantize", lambda r: r.quantize is not None, run_quantize_stage, token_inputs=True,
              check_loaded=_check_loaded)
