"""Pruning sensitivity: prune each layer group alone and see how much accuracy it costs.

A uniform ratio treats all layers alike, but some layers (often the first conv, stride-2
transitions, narrow bottlenecks) carry far more of the accuracy than others. This analysis prunes
every prunable group *alone* at ``ratio`` with the same DepGraph pruner the ``[prune]`` stage uses
(so coupled layers shrink together exactly as they would for real) and evaluates on the validation
split, without fine-tuning, to stay fast. Validation, not eval: the result is a choice (which layers
to skip), and a choice made on the split you report on flatters the report. The most sensitive groups are the candidates for
``prune.skip_layers``. Groups are named by their root module (the layer whose output channels
are removed), which is also the name ``skip_layers`` takes.

API for the CLI and GUI panels: ``sensitivity_analysis`` (a trained module in hand) and
``sensitivity_for_recipe`` (load data and model as a recipe says; train per ``[train]`` when the
model has no weights). Both return a ``SensitivityResult`` whose ``rows`` a table can show as is.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from workbench.core.budget import over_budget
from workbench.core.events import CancelToken, Reporter
from workbench.core.models.locate import run_located
from workbench.core.precision import PrecisionPlan, eval_mode
from workbench.errors import WorkbenchError
from workbench.techniques.prune.structured import build_pruner


@dataclass
class SensitivityRow:
    """One prunable group pruned alone. ``drop`` is validation accuracy points lost versus the unpruned model."""

    group: str
    type: str
    coupled_layers: int
    channels: int
    channels_removed: int
    params_removed: int
    accuracy: float
    drop: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SensitivityResult:
    ratio: float
    importance: str
    base_accuracy: float
    params: int
    model: str = ""
    rows: list[SensitivityRow] = field(default_factory=list)
    split: str = "validation"  # the data ``base_accuracy`` and the rows were measured on

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = [r.to_dict() for r in self.rows]
        return d

    def most_sensitive(self, max_drop_points: float = 1.0) -> list[str]:
        """Group names whose drop exceeds ``max_drop_points``: a ready-made ``prune.skip_layers``.

        A drop of exactly the threshold (up to float rounding) is within it and is not suggested.
        """
        return [r.group for r in sorted(self.rows, key=lambda r: -r.drop) if over_budget(r.drop, max_drop_points)]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def prunable_groups(module: nn.Module, input_shape: Sequence[int],
                    skip_layers: Sequence[str] = ()) -> list[tuple[str, str, int, int]]:
    """``(root name, root type, channels, coupled layers)`` of every group the pruner would touch."""
    pruner = build_pruner(copy.deepcopy(module), input_shape, ratio=0.0, skip_layers=skip_layers)
    dg = pruner.DG
    names = {m: n for n, m in pruner.model.named_modules()}
    out = []
    for group in dg.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types):
        root = group[0][0].target.module
        layers = {id(dep.target.module) for dep, _ in group if isinstance(dep.target.module, nn.Module)}
        out.append((names.get(root, type(root).__name__), type(root).__name__, int(dg.get_out_channels(root) or 0),
                    len(layers)))
    return out


def sensitivity_analysis(
    module: nn.Module,
    input_shape: Sequence[int],
    val_loader: Any,
    plan: PrecisionPlan,
    *,
    ratio: float = 0.5,
    importance: str = "l2",
    skip_layers: Sequence[str] = (),
    grad_batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> SensitivityResult:
    """Prune each group alone at ``ratio`` on a copy of ``module`` and measure validation accuracy (no fine-tuning).

    ``module`` is never modified. Rows come back sorted by accuracy drop, most sensitive first.
    """
    from workbench.core.train import evaluate
    from workbench.techniques.prune.structured import taylor_gradients

    if not 0.0 < ratio < 1.0:
        raise WorkbenchError(f"sensitivity ratio = {ratio}: must be between 0 and 1 (exclusive), e.g. 0.5")
    rep = reporter or Reporter()
    base = evaluate(module, val_loader, plan, cancel)["accuracy"]
    total = _params(module)
    groups = prunable_groups(module, input_shape, skip_layers)
    if not groups:
        raise WorkbenchError("no prunable layer groups found (only the classifier and prune.skip_layers?)")
    rep.stage_started("sensitivity", len(groups))
    rows: list[SensitivityRow] = []
    for i, (name, kind, channels, coupled) in enumerate(groups):
        if cancel is not None:
            cancel.raise_if_cancelled()
        work = copy.deepcopy(module)
        pruner = build_pruner(work, input_shape, ratio=0.0, importance=importance, skip_layers=skip_layers,
                              ratio_by_layer={name: ratio})
        if importance == "taylor":
            taylor_gradients(work, grad_batches, plan)
        run_located(work, pruner.step, f"pruning group {name!r}")
        work.zero_grad(set_to_none=True)
        root = dict(work.named_modules())[name]
        after_channels = int(pruner.DG.get_out_channels(root) or 0)
        with eval_mode(work):
            acc = evaluate(work, val_loader, plan, cancel)["accuracy"]
        rows.append(SensitivityRow(name, kind, coupled, channels, channels - after_channels, total - _params(work), acc,
                                   (base - acc) * 100))
        rep.metrics("sensitivity", i, {"accuracy": acc, "drop_points": (base - acc) * 100})
        rep.progress(i + 1, len(groups), f"sensitivity: {name}")
    rows.sort(key=lambda r: -r.drop)
    rep.stage_finished("sensitivity", {"groups": len(rows), "base_accuracy": base})
    return SensitivityResult(ratio, importance, base, total, rows=rows)


def sensitivity_for_recipe(
    recipe: Any,
    *,
    ratio: float | None = None,
    store: Any = None,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> SensitivityResult:
    """Load the recipe's data and model (weights from ``model.weights``, ``run:ID`` included), train per
    ``[train]`` if it has none, then run ``sensitivity_analysis`` with ``[prune]``'s importance and skips.

    ``ratio`` defaults to ``prune.ratio`` (or 0.5 without a ``[prune]`` section). Nothing is recorded
    in the run store: this is an analysis, not a run.
    """
    from workbench.core.data import build_loader, load_dataset
    from workbench.core.models import load_model
    from workbench.core.models.resize import load_pruned_weights
    from workbench.core.pipeline import weights_of_run
    from workbench.core.precision import prepare_module, resolve_precision
    from workbench.core.train import train

    rep = reporter or Reporter()
    cancel = cancel or CancelToken()
    prune_cfg = recipe.prune
    ratio = ratio if ratio is not None else (prune_cfg.ratio if prune_cfg else 0.5)
    importance = prune_cfg.importance if prune_cfg else "l2"
    skip = list(prune_cfg.skip_layers) if prune_cfg else []
    plan = dataclasses.replace(resolve_precision(recipe.precision), compile=False)
    data = load_dataset(recipe.data)
    shape = tuple(data.input_shape)
    weights = recipe.model.weights.strip()
    section = recipe.model.model_copy(update={"weights": ""})
    loaded = load_model(section, data.num_classes, shape)
    if loaded.module is None:
        raise WorkbenchError("sensitivity analysis needs a PyTorch model; model.source = 'onnx' cannot be pruned")
    module = loaded.module
    if weights:
        if weights.startswith("run:"):
            if store is None:
                from workbench.core.store import RunStore

                store = RunStore()
            load_pruned_weights(module, weights_of_run(store, weights), shape)
        else:
            load_pruned_weights(module, weights, shape)
    module = prepare_module(module, plan)
    val_loader = build_loader(data.val, recipe.batching.eval_batch_size, recipe.loader, train=False)
    train_loader = None
    if not weights and loaded.kind in ("zoo", "python"):
        if recipe.train.epochs > 0:
            rep.log(f"sensitivity: model.weights is empty, so training {recipe.train.epochs} epoch(s) per [train] first "
                    "(set model.weights = 'run:ID' to reuse a trained run)", "warning")
            train_loader = build_loader(data.train, recipe.batching.batch_size, recipe.loader, train=True,
                                        seed=recipe.train.seed)
            train(module, train_loader, val_loader, recipe.train, recipe.batching, plan, rep, cancel,
                  stage="sensitivity:train")
        else:
            rep.log("sensitivity: the model is untrained (no model.weights, train.epochs = 0); drops mean little",
                    "warning")
    grads: list[tuple[torch.Tensor, torch.Tensor]] = []
    if importance == "taylor":
        loader = train_loader or build_loader(data.train, recipe.batching.batch_size, recipe.loader, train=True,
                                              seed=recipe.train.seed)
        for j, batch in enumerate(loader):
            if j >= 4:
                break
            grads.append(batch)
    result = sensitivity_analysis(module, shape, val_loader, plan, ratio=ratio, importance=importance,
                                  skip_layers=skip, grad_batches=grads, reporter=rep, cancel=cancel)
    result.model = loaded.description
    return result
