"""Pruning: structured channel pruning (torch-pruning DepGraph) and unstructured magnitude pruning.

Two techniques with very different payoffs, kept side by side so the difference is measured:

* **Structured** removes whole channels. torch-pruning's dependency graph (DepGraph) finds every
  layer coupled to a channel (the BN after a conv, the next conv's inputs, both sides of a residual
  add, a depthwise conv's groups, attention projections) and shrinks them together, so the result
  is an ordinary *smaller dense* model: fewer MACs, a smaller file and, measured, lower latency.
* **Unstructured** zeroes individual weights (``torch.nn.utils.prune``). Tensors keep their shape,
  so dense kernels do exactly the same work and dense files are just as big; the stage says so
  plainly and records the latency that proves it. Masks are made permanent (``prune.remove``)
  before anything is saved or exported: no ``weight_orig``/``weight_mask``, no pre-hooks.

Saving a structurally pruned model: the run stores an ordinary safetensors state_dict. Its
architecture is the recipe's ``[model]`` *plus the tensor shapes in the file*: ``load_pruned_weights``
builds the original model, shrinks each layer to the shapes it finds (``fit_to_state_dict``) and then
loads strictly. Weights-only files stay safe (no pickled modules) and need no extra metadata.

Public API (used by the pipeline stage, the CLI and, later, the GUI panel):
``prune_structured``, ``prune_unstructured``, ``make_permanent``, ``sparsity_rows``,
``classifier_layers``, ``resolve_skip_layers``, ``fit_to_state_dict``, ``load_pruned_weights``,
``run_prune_stage``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from workbench.core.models.locate import example_input, run_located
from workbench.core.models.resize import check_pruned_forward
from workbench.core.pipeline import RunContext, Stage, register_stage
from workbench.core.precision import PrecisionPlan, prepare_module, unwrap
from workbench.errors import WorkbenchError

#: Layer types whose weights unstructured pruning zeroes and whose shapes structured pruning changes.
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

UNSTRUCTURED_NOTE = (
    "zeroed weights do not speed up dense kernels or shrink dense files: unstructured pruning keeps every "
    "tensor's shape, so the dense model does the same work (see the measured latency); use structured "
    "pruning to make the model smaller and faster"
)


# --------------------------------------------------------------------------------------------- helpers


def classifier_layers(module: nn.Module, input_shape: Sequence[int]) -> list[nn.Module]:
    """The final classifier: the last Linear/Conv that runs in a forward pass (never pruned).

    Found by execution order rather than by name, so user models with any head name work.
    """
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, _a, _o: order.append(m)) for m in module.modules()
               if isinstance(m, WEIGHTED)]
    try:
        with torch.no_grad():
            was = module.training
            module.eval()
            try:
                run_located(module, lambda: module(example_input(module, input_shape)), "a forward pass")
            finally:
                module.train(was)
    finally:
        for h in handles:
            h.remove()
    return order[-1:]


def resolve_skip_layers(module: nn.Module, names: Iterable[str]) -> list[nn.Module]:
    """Map ``prune.skip_layers`` names to modules; an unknown name is a one-line error with suggestions."""
    table = dict(module.named_modules())
    out: list[nn.Module] = []
    for name in names:
        if name not in table:
            close = difflib.get_close_matches(name, [n for n in table if n], n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else \
                "; run `workbench sensitivity RECIPE` to list the prunable layer names"
            raise WorkbenchError(f"prune.skip_layers: no module named {name!r} in the model{hint}")
        out.append(table[name])
    return out


def layer_table(module: nn.Module) -> dict[str, dict[str, Any]]:
    """Channels and parameters of every weighted layer: the before/after columns of ``per_layer``."""
    rows: dict[str, dict[str, Any]] = {}
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            rows[name] = {"type": type(m).__name__, "out": m.out_channels, "in": m.in_channels,
                          "params": sum(p.numel() for p in m.parameters(recurse=False))}
        elif isinstance(m, nn.Linear):
            rows[name] = {"type": "Linear", "out": m.out_features, "in": m.in_features,
                          "params": sum(p.numel() for p in m.parameters(recurse=False))}
        elif isinstance(m, nn.MultiheadAttention):
            rows[name] = {"type": "MultiheadAttention", "out": m.embed_dim, "in": m.embed_dim,
                          "params": sum(p.numel() for p in m.parameters(recurse=False))}
    return rows


def _per_layer_changes(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, b in before.items():
        a = after.get(name, b)
        rows.append({"layer": name, "type": b["type"], "out_before": b["out"], "out_after": a["out"],
                     "in_before": b["in"], "in_after": a["in"], "params_before": b["params"],
                     "params_after": a["params"]})
    return rows


# ------------------------------------------------------------------------------------------ structured


def make_importance(name: str) -> Any:
    """The torch-pruning importance criterion for ``prune.importance``."""
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.TaylorImportance()
    raise WorkbenchError(f"prune.importance = {name!r}: choose l1, l2, bn_scale or taylor")


def _attention_heads(module: nn.Module) -> dict[nn.Module, int]:
    """Head counts of attention layers, so their embedding dim shrinks evenly across heads."""
    return {m: m.num_heads for m in module.modules() if isinstance(m, nn.MultiheadAttention)}


def _unwrapped_parameters(module: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """Parameters held directly by a non-leaf module (e.g. a ViT's ``pos_embed``): prune the last dim.

    Stated explicitly so torch-pruning does not guess (and warn) for the zoo transformer.
    """
    out = []
    for m in module.modules():
        if isinstance(m, (*WEIGHTED, nn.MultiheadAttention, nn.modules.batchnorm._NormBase, nn.LayerNorm,
                          nn.GroupNorm, nn.Embedding)):
            continue
        for p in m.parameters(recurse=False):
            if p.dim() >= 1:
                out.append((p, p.dim() - 1))
    return out


def taylor_gradients(module: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                      plan: PrecisionPlan | None) -> None:
    """Accumulate loss gradients for Taylor importance (eval mode: BN statistics stay untouched)."""
    if not batches:
        raise WorkbenchError("prune.importance = 'taylor' needs training batches to estimate gradients")
    was = module.training
    module.eval()
    module.zero_grad(set_to_none=True)
    try:
        for x, y in batches:
            if plan is not None:
                x, y = plan.to_input(x), y.to(plan.device)
            nn.functional.cross_entropy(module(x), y).backward()
    finally:
        module.train(was)


def build_pruner(module: nn.Module, input_shape: Sequence[int], *, ratio: float, importance: str = "l2",
                 scope: str = "uniform", skip_layers: Sequence[str] = (), steps: int = 1,
                 round_to: int | None = None, ratio_by_layer: dict[str, float] | None = None) -> Any:
    """A torch-pruning ``BasePruner`` over ``module`` (traced once), classifier and ``skip_layers`` ignored.

    ``scope = 'global'`` ranks channels across all layers (some shrink more than others, capped at
    90% per layer so no layer vanishes); ``'uniform'`` removes ``ratio`` of every layer's channels.
    ``ratio_by_layer`` overrides the ratio of the groups rooted at the named layers (sensitivity
    analysis passes ``ratio = 0`` and one layer). A model the dependency graph cannot trace becomes
    a WorkbenchError naming the layer.
    """
    import torch_pruning as tp

    ignored = classifier_layers(module, input_shape) + resolve_skip_layers(module, skip_layers)
    ratio_dict = None
    if ratio_by_layer:
        table = dict(module.named_modules())
        ratio_dict = {table[n]: r for n, r in ratio_by_layer.items()}
    kwargs: dict[str, Any] = dict(
        importance=make_importance(importance), global_pruning=scope == "global", pruning_ratio=ratio,
        pruning_ratio_dict=ratio_dict, max_pruning_ratio=0.9 if scope == "global" else 1.0, iterative_steps=steps,
        ignored_layers=ignored, round_to=round_to, num_heads=_attention_heads(module),
        unwrapped_parameters=_unwrapped_parameters(module))
    example = example_input(module, input_shape)
    was = module.training
    module.eval()
    try:
        return run_located(module, lambda: tp.pruner.BasePruner(module, example, **kwargs),
                            "structured pruning could not trace the model: building the dependency graph")
    finally:
        module.train(was)


def prune_structured(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    ratio: float,
    importance: str = "l2",
    scope: str = "uniform",
    skip_layers: Sequence[str] = (),
    steps: int = 1,
    round_to: int | None = None,
    grad_batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    plan: PrecisionPlan | None = None,
    after_step: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Remove ``ratio`` of the channels of every prunable layer group, in place; return per-layer changes.

    Pruning happens in ``steps`` increments (ratio/steps, 2·ratio/steps, …) with importance
    re-estimated after each, and ``after_step(i)`` called in between (the stage fine-tunes there).
    ``grad_batches`` feed Taylor importance. The result runs, has the same class count and is dense.
    """
    num_classes = _out_features(module, input_shape)
    before = layer_table(module)
    pruner = build_pruner(module, input_shape, ratio=ratio, importance=importance, scope=scope,
                          skip_layers=skip_layers, steps=steps, round_to=round_to)
    for i in range(steps):
        if importance == "taylor":
            taylor_gradients(module, grad_batches, plan)
        run_located(module, pruner.step, "structured pruning step")
        if importance == "taylor":
            module.zero_grad(set_to_none=True)
        check_pruned_forward(module, input_shape, num_classes)
        if after_step is not None:
            after_step(i)
    return _per_layer_changes(before, layer_table(module))


def _out_features(module: nn.Module, input_shape: Sequence[int]) -> int:
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = run_located(module, lambda: module(example_input(module, input_shape)), "a forward pass")
    finally:
        module.train(was)
    if not isinstance(out, torch.Tensor):
        raise WorkbenchError(f"pruning needs a model that returns a logits tensor, got {type(out).__name__}")
    return int(out.shape[-1])


# ---------------------------------------------------------------------------------------- unstructured


def unstructured_targets(module: nn.Module, input_shape: Sequence[int],
                         skip_layers: Sequence[str] = ()) -> list[tuple[str, nn.Module]]:
    """Conv/Linear layers whose weights unstructured pruning may zero (classifier and skips excluded)."""
    excluded = {id(m) for m in classifier_layers(module, input_shape) + resolve_skip_layers(module, skip_layers)}
    skip_prefixes = tuple(f"{n}." for n in skip_layers)
    return [(n, m) for n, m in module.named_modules()
            if isinstance(m, WEIGHTED) and id(m) not in excluded and not n.startswith(skip_prefixes)]


def _zeros(m: nn.Module) -> int:
    mask = getattr(m, "weight_mask", None)
    return int((mask == 0).sum()) if mask is not None else int((m.weight == 0).sum())


def prune_unstructured(module: nn.Module, targets: Sequence[tuple[str, nn.Module]], *, ratio: float,
                       scope: str = "uniform", steps: int = 1,
                       after_step: Callable[[int], None] | None = None) -> None:
    """Zero the smallest-magnitude weights (L1) until ``ratio`` of the targets' weights are zero.

    ``scope = 'global'`` ranks all weights together (``global_unstructured``), ``'uniform'`` prunes
    each layer to ``ratio`` (``l1_unstructured``). With ``steps > 1`` the sparsity rises in equal
    increments; amounts are absolute counts of still-unpruned weights, so the final sparsity is exact.
    Masks stay in place (fine-tuning keeps pruned weights at zero) until ``make_permanent``.
    """
    if not targets:
        raise WorkbenchError("unstructured pruning found no Conv/Linear layers to prune besides the classifier "
                             "and prune.skip_layers")
    total = sum(m.weight.numel() for _, m in targets)
    for i in range(steps):
        target = ratio * (i + 1) / steps
        if scope == "global":
            amount = round(target * total) - sum(_zeros(m) for _, m in targets)
            if amount > 0:
                tprune.global_unstructured([(m, "weight") for _, m in targets],
                                           pruning_method=tprune.L1Unstructured, amount=amount)
        else:
            for _, m in targets:
                amount = round(target * m.weight.numel()) - _zeros(m)
                if amount > 0:
                    tprune.l1_unstructured(m, "weight", amount=amount)
        if after_step is not None:
            after_step(i)


def make_permanent(module: nn.Module) -> int:
    """Bake masks into the weights (``prune.remove``): no weight_orig/weight_mask or pre-hooks remain."""
    count = 0
    for m in module.modules():
        for name in [n[: -len("_orig")] for n, _ in list(m.named_parameters(recurse=False)) if n.endswith("_orig")]:
            tprune.remove(m, name)
            count += 1
    return count


def sparsity_rows(module: nn.Module, targets: Sequence[tuple[str, nn.Module]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-layer and total sparsity (fraction of exact zeros) over the pruned layers and the whole model."""
    rows = []
    for name, m in targets:
        zeros, numel = _zeros(m), m.weight.numel()
        rows.append({"layer": name, "type": type(m).__name__, "weights": numel, "zeros": zeros,
                     "sparsity": zeros / max(1, numel)})
    zeros = sum(r["zeros"] for r in rows)
    weights = sum(r["weights"] for r in rows)
    all_params = sum(p.numel() for p in module.parameters())
    all_zeros = sum(int((p == 0).sum()) for p in module.parameters())
    return rows, {"pruned_layers_sparsity": zeros / max(1, weights), "pruned_weights": weights,
                  "model_sparsity": all_zeros / max(1, all_params), "model_params": all_params}


def dense_copy(unpruned: nn.Module, masked: nn.Module) -> nn.Module:
    """A plain copy of ``masked`` (same architecture as ``unpruned``) with the masks baked in.

    Masked modules cannot be deep-copied (their ``weight`` is a computed tensor), so the copy is
    made from the unpruned model and loaded with ``weight_orig * weight_mask``.
    """
    sd = masked.state_dict()
    dense = {k: v for k, v in sd.items() if not k.endswith(("_orig", "_mask"))}
    for k, v in sd.items():
        if k.endswith("_orig"):
            base = k[: -len("_orig")]
            dense[base] = v * sd[base + "_mask"]
    out = copy.deepcopy(unpruned)
    out.load_state_dict(dense)
    return out


def has_pruning_leftovers(module: nn.Module) -> list[str]:
    """Names of anything ``torch.nn.utils.prune`` leaves behind (for tests and a last check before saving)."""
    out = [n for n, _ in module.named_parameters() if n.endswith("_orig")]
    out += [n for n, _ in module.named_buffers() if n.endswith("_mask")]
    out += [f"{n} (forward pre-hook)" for n, m in module.named_modules()
            if any(isinstance(h, tprune.BasePruningMethod) for h in m._forward_pre_hooks.values())]
    return out


# ------------------------------------------------------------------------------------- save and reload


# ------------------------------------------------------------------------------------------ the stage


def _plain(plan: PrecisionPlan) -> PrecisionPlan:
    """The plan without torch.compile: fine-tuning a model that is still being reshaped or masked."""
    return dataclasses.replace(plan, compile=False)


def _train_batches(ctx: RunContext, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from workbench.core.pipeline import split_loader

    out = []
    for i, (x, y) in enumerate(split_loader(ctx, train=True)):
        if i >= n:
            break
        out.append((x, y))
    return out


def _finetune(ctx: RunContext, module: nn.Module, teacher: nn.Module | None, epochs: int, stage: str) -> Any:
    """Fine-tune ``module`` with the recipe's optimizer at ``prune.finetune_lr``; KD from ``teacher`` if given."""
    from workbench.core.pipeline import split_loader
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


register_stage(Stage("prune", lambda r: r.prune is not None, run_prune_stage, order=10))


__all__ = [
    "UNSTRUCTURED_NOTE",
    "build_pruner",
    "classifier_layers",
    "has_pruning_leftovers",
    "layer_table",
    "make_importance",
    "make_permanent",
    "prune_structured",
    "prune_unstructured",
    "resolve_skip_layers",
    "run_prune_stage",
    "sparsity_rows",
    "unstructured_targets",
]
