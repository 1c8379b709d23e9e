"""Unstructured pruning: zero individual weights by magnitude (``torch.nn.utils.prune``).

Tensors keep their shape, so dense kernels do exactly the same work and dense files are just as
big; the stage says so plainly and records the latency that proves it. Masks are made permanent
(``prune.remove``) before anything is saved or exported: no ``weight_orig``/``weight_mask``, no hooks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn
from torch.nn.utils import prune as tprune

from workbench.errors import WorkbenchError
from workbench.techniques.prune.structured import WEIGHTED, classifier_layers, resolve_skip_layers

UNSTRUCTURED_NOTE = (
    "zeroed weights do not speed up dense kernels or shrink dense files: unstructured pruning keeps every "
    "tensor's shape, so the dense model does the same work (see the measured latency); use structured "
    "pruning to make the model smaller and faster"
)


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
