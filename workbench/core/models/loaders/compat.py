"""Does this model fit this data? Input shape and class count checked before any training."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from workbench.core.models.loaders.common import LoadedModel, exit_call, first_line, shape_str
from workbench.errors import ModelLoadError


def _first_layer_hint(module: nn.Module) -> str:
    """What the first weighted layer expects, e.g. 'expects 3 input channels (first layer stem.0: Conv2d)'."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Conv3d):
            return f"expects {m.in_channels} input channels (first layer {name}: {type(m).__name__})"
        if isinstance(m, nn.Linear):
            return f"expects {m.in_features} input features (first layer {name}: Linear)"
        original = getattr(m, "original_name", "")  # TorchScript keeps the original class name
        if original in ("Conv2d", "Conv1d", "Conv3d") and hasattr(m, "in_channels"):
            return f"expects {m.in_channels} input channels (first layer {name}: {original})"
        if original == "Linear" and hasattr(m, "in_features"):
            return f"expects {m.in_features} input features (first layer {name}: Linear)"
    return "expects a different input"


def check_model_data_compat(loaded: LoadedModel, num_classes: int, input_shape: tuple[int, ...]) -> None:
    """Fail early, with one line, when the model cannot take the data or has the wrong class count.

    Torch modules: one eval-mode forward on a zeros batch of 2 (mode restored afterwards); for
    torch.export graphs also a batch of 3, to catch a batch size fixed at export time.
    ONNX: the graph's declared shapes are compared (symbolic dims match anything); a fixed batch
    dim is refused, since evaluation and benchmarks run other batch sizes.
    """
    shape = tuple(int(d) for d in input_shape)
    name = loaded.label
    if loaded.module is None:
        _check_onnx_compat(loaded, num_classes, shape)
        return
    module = loaded.module
    ref = next((t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros((2, *shape), dtype=dtype, device=device))
    except (SystemExit, KeyboardInterrupt) as exc:
        raise ModelLoadError(f"model {name}: its forward {exit_call(exc)}; a model must return logits") from None
    except Exception as exc:
        raise ModelLoadError(
            f"model {name} {_first_layer_hint(module)} but data gives {shape_str(shape)} "
            f"(forward failed: {first_line(exc)})"
        ) from None
    finally:
        module.train(was_training)
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    elif isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        out = out["logits"]
    if not isinstance(out, torch.Tensor):
        raise ModelLoadError(
            f"model {name} returns {type(out).__name__}; a classifier must return a logits tensor"
        )
    if out.dim() != 2 or out.shape[0] != 2:
        raise ModelLoadError(
            f"model {name} outputs shape {shape_str(tuple(out.shape))} for a batch of 2; "
            "a classifier must output [batch, classes]"
        )
    if out.shape[-1] != num_classes:
        raise ModelLoadError(
            f"model {name} outputs {out.shape[-1]} classes but data has {num_classes}; "
            "match the model's head to the data (zoo models follow the data automatically)"
        )
    if loaded.kind == "export":
        _probe_fixed_batch(module, shape, dtype, device, name)


def _probe_fixed_batch(
    module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, name: str
) -> None:
    """A torch.export graph exported without a dynamic batch dim only takes its example batch size."""
    problem = ""
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros((3, *shape), dtype=dtype, device=device))
        if isinstance(out, tuple | list) and out:
            out = out[0]
        if isinstance(out, torch.Tensor) and (out.dim() == 0 or out.shape[0] != 3):
            problem = f"batch of 3 gave output {shape_str(tuple(out.shape))}"
    except Exception as exc:
        problem = first_line(exc)
    finally:
        module.train(was_training)
    if problem:
        raise ModelLoadError(
            f"model {name} takes batch size 2 but not 3 ({problem}): it was exported with a fixed "
            "batch size; re-export with dynamic_shapes=({0: torch.export.Dim('batch')},)"
        )


def _check_onnx_compat(loaded: LoadedModel, num_classes: int, shape: tuple[int, ...]) -> None:
    name = loaded.label
    declared = loaded.declared_input_shape
    if declared is not None and declared and declared[0] is not None:
        raise ModelLoadError(
            f"model {name} has a fixed batch size {declared[0]} (input {shape_str(declared)}); evaluation and "
            "benchmarks need other batch sizes: re-export with a dynamic batch axis "
            "(torch.onnx.export(..., dynamo=True, dynamic_shapes=({0: torch.export.Dim('batch')},)))"
        )
    if declared is not None:
        sample = declared[1:]
        if len(sample) != len(shape) or any(
            d is not None and d != s for d, s in zip(sample, shape, strict=False)
        ):
            raise ModelLoadError(
                f"model {name} expects input {shape_str(declared)} (batch first) but data gives {shape_str(shape)}"
            )
    if loaded.declared_num_classes is not None and loaded.declared_num_classes != num_classes:
        raise ModelLoadError(
            f"model {name} outputs {loaded.declared_num_classes} classes but data has {num_classes}"
        )
