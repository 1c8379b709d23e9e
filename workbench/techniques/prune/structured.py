"""Structured channel pruning with torch-pruning's dependency graph (DepGraph), plus shared layer helpers.

Structured pruning removes whole channels. DepGraph finds every layer coupled to a channel (the BN
after a conv, the next conv's inputs, both sides of a residual add, a depthwise conv's groups,
attention projections) and shrinks them together, so the result is an ordinary *smaller dense*
model: fewer MACs, a smaller file and, measured, lower latency. (Unstructured pruning, which only
zeroes weights, lives in ``unstructured.py``; the stage that runs either is ``stage.py``; rebuilding
a pruned model from its weights file is ``core.models.resize``.)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from workbench.core.models.locate import example_input, run_located
from workbench.core.models.resize import check_pruned_forward
from workbench.core.precision import PrecisionPlan
from workbench.errors import WorkbenchError

#: Layer types whose weights unstructured pruning zeroes and whose shapes structured pruning changes.
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


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


# ------------------------------------------------------------------------------------------ the stage


__all__ = [
    "build_pruner",
    "classifier_layers",
    "layer_table",
    "make_importance",
    "prune_structured",
    "resolve_skip_layers",
]
