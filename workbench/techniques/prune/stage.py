"""The ``[prune]`` stage: measure → prune → measure → fine-tune → measure; replaces ``ctx.module``."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from workbench.core.pipeline import RunContext, Stage, split_loader
from workbench.core.precision import PrecisionPlan, prepare_module, unwrap
from workbench.errors import WorkbenchError
from workbench.techniques.prune.structured import prune_structured
from workbench.techniques.prune.unstructured import (
    UNSTRUCTURED_NOTE,
    dense_copy,
    has_pruning_leftovers,
    make_permanent,
    prune_unstructured,
    sparsity_rows,
    unstructured_targets,
)


def _plain(plan: PrecisionPlan) -> PrecisionPlan:
    """The plan without torch.compile: fine-tuning a model that is still being reshaped or masked."""
    return dataclasses.replace(plan, compile=False)


def _train_batches(ctx: RunContext, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:

    out = []
    for i, (x, y) in enumerate(split_loader(ctx, train=True)):
        if i >= n:
            break
        out.append((x, y))
    return out


def _finetune(ctx: RunContext, module: nn.Module, teacher: nn.Module | None, epochs: int, stage: str) -> Any:
    """Fine-tune ``module`` with the recipe's optimizer at ``prune.finetune_lr``; KD from ``teacher`` if given."""
    from workbench.core.train import train

    cfg = ctx.recipe.prune
    assert cfg is not None
    loss_fn = None
    if teacher is not None:
        from workbench.core.kd import TeacherLogits, make_kd_loss_fn

        cache = not ctx.recipe.data.augment
        loss_fn = make_kd_loss_fn(TeacherLogits(teacher, cache=cache), cfg.finetune_temperature,
                                  cfg.finetune_alpha, ctx.recipe.train.label_smoothing)
    return train(module, split_loader(ctx, train=True), ctx.val_loader, ctx.recipe.train, ctx.recipe.batching,
                 _plain(ctx.plan), ctx.reporter, ctx.cancel, stage=stage, epochs=epochs, lr=cfg.finetune_lr,
                 loss_fn=loss_fn)


def _epochs_per_step(total: int, steps: int) -> list[int]:
    """Split fine-tuning epochs across iterative steps (remainder to the last step)."""
    base = [total // steps] * steps
    base[-1] += total - sum(base)
    return base


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def run_prune_stage(ctx: RunContext) -> dict[str, Any]:
    """The ``[prune]`` stage: measure → prune → measure → fine-tune → measure; replaces ``ctx.module``."""
    cfg = ctx.recipe.prune
    assert cfg is not None
    rep = ctx.reporter
    if ctx.module is None:
        raise WorkbenchError("[prune] needs a PyTorch model; model.source = 'onnx' cannot be pruned")
    if ctx.recipe.distill is not None:
        raise WorkbenchError("[prune] and [distill] in one recipe: use prune.finetune_distill = true to fine-tune "
                             "the pruned model from the unpruned one, or prune a distilled run (model.weights = 'run:ID')")
    if not ctx.loaded.trainable and cfg.finetune_epochs > 0:
        raise WorkbenchError(f"model.source = {ctx.recipe.model.source!r} cannot be fine-tuned after pruning; "
                             "set prune.finetune_epochs = 0")
    original = unwrap(ctx.module)
    before = ctx.measure("prune-before", module=ctx.module)
    work = copy.deepcopy(original)
    teacher = ctx.module if cfg.finetune_distill else None
    epochs = _epochs_per_step(cfg.finetune_epochs, cfg.steps)
    results: list[Any] = []
    input_shape = ctx.input_shape

    def between(i: int) -> None:  # fine-tune between iterative steps (not after the last one)
        ctx.cancel.raise_if_cancelled()
        if i < cfg.steps - 1 and epochs[i] > 0:
            results.append(_finetune(ctx, work, teacher, epochs[i], f"prune:finetune{i + 1}"))

    rep.log(f"prune: {cfg.method} {cfg.ratio:.0%} ({cfg.scope}, {cfg.steps} step(s)"
            + (f", importance {cfg.importance}" if cfg.method == "structured" else "") + ")")
    record: dict[str, Any] = {"name": "prune", "method": cfg.method, "ratio": cfg.ratio, "scope": cfg.scope,
                              "steps": cfg.steps, "skip_layers": list(cfg.skip_layers),
                              "finetune_epochs": cfg.finetune_epochs, "finetune_distill": cfg.finetune_distill}
    work.to(ctx.plan.device)
    if cfg.method == "structured":
        grads = _train_batches(ctx, 4) if cfg.importance == "taylor" else []
        per_layer = prune_structured(work, input_shape, ratio=cfg.ratio, importance=cfg.importance, scope=cfg.scope,
                                     skip_layers=cfg.skip_layers, steps=cfg.steps,
                                     round_to=cfg.round_to if cfg.round_to > 1 else None, grad_batches=grads,
                                     plan=ctx.plan, after_step=between)
        record["importance"] = cfg.importance
        record["round_to"] = cfg.round_to
        record["per_layer"] = [r for r in per_layer if r["out_before"] != r["out_after"] or r["in_before"] != r["in_after"]]
        after_prune = ctx.measure("prune-after_prune", module=work)
    else:
        targets = unstructured_targets(work, input_shape, cfg.skip_layers)
        prune_unstructured(work, targets, ratio=cfg.ratio, scope=cfg.scope, steps=cfg.steps, after_step=between)
        dense = dense_copy(original, work)  # measure what would be deployed: plain tensors, no mask hooks
        after_prune = ctx.measure("prune-after_prune", module=dense)
        del dense
    if epochs[-1] > 0:
        results.append(_finetune(ctx, work, teacher, epochs[-1], "prune:finetune"))
    if cfg.method == "unstructured":
        per_layer_rows, totals = sparsity_rows(work, targets)
        make_permanent(work)
        leftovers = has_pruning_leftovers(work)
        if leftovers:  # pragma: no cover - make_permanent removes them all
            raise WorkbenchError(f"pruning masks left on the model: {', '.join(leftovers[:3])}")
        record["per_layer"] = per_layer_rows
        record["sparsity"] = totals
    pruned = prepare_module(work, ctx.plan)
    after = (ctx.measure("prune-after", module=pruned, train_samples_per_s=results[-1].train_samples_per_s)
             if results else after_prune)
    if results:
        record["finetune"] = [r.to_dict() for r in results]
    record.update(before=before, after_prune=after_prune, after=after)
    speed = _ratio(before.get("latency_ms_p50"), after.get("latency_ms_p50"))
    tput = _ratio(after.get("throughput"), before.get("throughput"))
    record["speedup_latency"] = speed
    record["speedup_throughput"] = tput
    acc_drop = (before["accuracy"] - after["accuracy"]) * 100
    lat = (f"latency p50 {before.get('latency_ms_p50') or 0:.3f} → {after.get('latency_ms_p50') or 0:.3f} ms "
           f"({speed or 0:.2f}x), throughput {tput or 0:.2f}x" if speed else "latency not measured (bench off)")
    if cfg.method == "structured":
        record["note"] = (f"structured pruning removed {1 - after['params'] / before['params']:.0%} of parameters and "
                          f"{1 - (after.get('macs') or 0) / max(1, before.get('macs') or 1):.0%} of MACs; {lat}; "
                          f"accuracy {-acc_drop:+.2f} points")
    else:
        s = record["sparsity"]["pruned_layers_sparsity"]
        record["note"] = (f"{UNSTRUCTURED_NOTE}. Measured at {s:.1%} sparsity: {lat}; size "
                          f"{before['size_bytes'] / 1e6:.2f} → {after['size_bytes'] / 1e6:.2f} MB; "
                          f"accuracy {-acc_drop:+.2f} points")
    rep.log(f"prune: {record['note']}", "warning" if cfg.method == "unstructured" else "info")
    ctx.module = pruned
    ctx.add_checkpoint("prune", f"torch eager {ctx.plan.label}, {cfg.ratio:.0%} {cfg.method} pruned", module=pruned)
    if results:
        ctx.train_result = results[-1]
    return record


STAGE = Stage("prune", lambda r: r.prune is not None, run_prune_stage)
