"""Rebuild a structurally pruned model from a plain weights file: resize layers to the saved shapes.

A pruned run stores an ordinary safetensors state_dict; its architecture is the recipe's
``[model]`` plus the tensor shapes in the file. ``load_pruned_weights`` builds the original model,
shrinks each layer to the shapes it finds (``fit_to_state_dict``) and loads strictly. Pipeline
(``model.weights = "run:ID"``), teacher loading and sensitivity analysis all need it, so it is core.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from workbench.core.models.locate import example_input, run_located
from workbench.errors import WorkbenchError

__all__ = ["check_pruned_forward", "fit_to_state_dict", "load_pruned_weights"]


def check_pruned_forward(module: nn.Module, input_shape: Sequence[int], num_classes: int | None = None) -> None:
    """Run the pruned model once; a layer torch-pruning could not follow fails here, by name."""
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = run_located(module, lambda: module(example_input(module, input_shape).repeat(2, *([1] * len(input_shape)))),
                               "structured pruning produced a model that does not run: the forward")
    finally:
        module.train(was)
    if num_classes is not None and (not isinstance(out, torch.Tensor) or out.shape[-1] != num_classes):
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise WorkbenchError(f"structured pruning changed the model's output to {shape}; expected {num_classes} "
                             "classes: add the head layer to prune.skip_layers")


def fit_to_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Shrink (or grow) ``module``'s layers in place to the tensor shapes in ``state_dict``.

    This is how a structurally pruned model is rebuilt from a plain weights file: build the
    original architecture, then resize Conv/Linear/BatchNorm/LayerNorm/GroupNorm/MultiheadAttention
    layers and free parameters to the saved shapes, fixing the attributes their forward reads
    (``out_channels``, ``groups``, ``num_features``, ``embed_dim``…). Returns the resized layer names.
    Unknown layer types with changed shapes are refused by name.
    """
    changed: list[str] = []
    for name, m in module.named_modules():
        prefix = f"{name}." if name else ""
        own = {k: v for k, v in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
               if v is not None}
        diff = {k for k, v in own.items() if prefix + k in state_dict and tuple(state_dict[prefix + k].shape) != tuple(v.shape)}
        if not diff:
            continue
        was_depthwise = isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels
        for k in own:
            new = state_dict.get(prefix + k)
            if new is None:
                continue
            tensor = torch.empty(new.shape, dtype=own[k].dtype, device=own[k].device)
            if isinstance(own[k], nn.Parameter):
                setattr(m, k, nn.Parameter(tensor, requires_grad=own[k].requires_grad))
            else:
                m.register_buffer(k, tensor)
        if isinstance(m, nn.modules.conv._ConvNd):
            m.out_channels = m.weight.shape[0]
            if was_depthwise:
                m.groups = m.in_channels = m.out_channels
            else:
                m.in_channels = m.weight.shape[1] * m.groups
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            m.num_features = (m.weight if m.weight is not None else m.running_mean).shape[0]
        elif isinstance(m, nn.LayerNorm):
            m.normalized_shape = tuple(m.weight.shape)
        elif isinstance(m, nn.GroupNorm):
            m.num_channels = m.weight.shape[0]
        elif isinstance(m, nn.MultiheadAttention):
            m.embed_dim = m.kdim = m.vdim = m.in_proj_weight.shape[1]
            m.head_dim = m.embed_dim // m.num_heads
        elif any(True for _ in m.children()) and all(isinstance(v, nn.Parameter) for k, v in own.items() if k in diff):
            pass  # free parameters of a container (e.g. pos_embed): the shape is all there is
        else:
            raise WorkbenchError(f"cannot rebuild layer {name!r} ({type(m).__name__}) from saved shapes; "
                                 "save the pruned model with [export] formats = ['pt2'] instead")
        changed.append(name or "<model>")
    return changed


def load_pruned_weights(module: nn.Module, path: str | Path, input_shape: Sequence[int] | None = None) -> list[str]:
    """Load a (possibly structurally pruned) weights file into ``module``, rebuilding pruned layers first.

    Works for unpruned weights too (nothing is resized). With ``input_shape``, a forward pass then
    checks the rebuilt model runs. Returns the names of the resized layers.
    """
    from workbench.core.models import load_weights
    from workbench.core.models.loaders import WEIGHTS_HINT, check_model_path, read_state_dict

    p = check_model_path(path, "weights file", WEIGHTS_HINT)
    sd = read_state_dict(p)
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    changed = fit_to_state_dict(module, sd)
    load_weights(module, p)
    if input_shape is not None and changed:
        check_pruned_forward(module, input_shape)
    return changed
