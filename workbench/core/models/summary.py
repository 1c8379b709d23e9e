"""How big and how costly a model is: parameters, bytes, MACs/FLOPs, and a per-layer table.

Counting convention: totals and per-layer numbers come from ``torch.utils.flop_counter.FlopCounterMode``,
which counts the matrix work (convolutions, linear/addmm/matmul, batched matmul, attention) and
ignores element-wise ops (BN, activations, adds, pooling), the usual convention in papers; CPU
flash attention, which it misses, is added here.
``macs = flops / 2`` (one multiply-accumulate = two FLOPs). Per-layer MACs are FlopCounterMode's
per-module counts, so they add up to the total; rows are the leaf modules that actually ran, plus
``nn.MultiheadAttention`` (whose projections are not called as child modules).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from workbench.errors import ModelLoadError

# modules listed as one row even though they have children (their forward does not call them)
_ATOMIC: tuple[type[nn.Module], ...] = (nn.MultiheadAttention,)


@dataclass
class LayerRow:
    name: str
    type: str
    params: int
    output_shape: tuple[int, ...] | str
    macs: int | None


@dataclass
class ModelSummary:
    """Sizes and compute for one sample (batch 1). ``macs``/``flops`` are None when unknown (ONNX)."""

    params: int
    trainable_params: int
    size_bytes: int
    macs: int | None
    flops: int | None
    layers: list[LayerRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for row in d["layers"]:
            if isinstance(row["output_shape"], tuple):
                row["output_shape"] = list(row["output_shape"])
        return d


def _shape_of(out: Any) -> tuple[int, ...] | str:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, tuple | list):
        tensors = [o for o in out if isinstance(o, torch.Tensor)]
        if len(tensors) == 1:
            return tuple(tensors[0].shape)
        return ", ".join(str(list(t.shape)) for t in tensors) or type(out).__name__
    return type(out).__name__


def layer_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules plus atomic ones (MultiheadAttention), skipping the children of atomic ones."""
    rows: list[tuple[str, nn.Module]] = []
    skip: list[str] = []
    for name, m in module.named_modules():
        if not name or any(name.startswith(s + ".") for s in skip):
            continue
        if isinstance(m, _ATOMIC):
            rows.append((name, m))
            skip.append(name)
        elif not any(True for _ in m.children()):
            rows.append((name, m))
    return rows


def _sdpa_cpu_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    """FLOPs of CPU flash attention (QK^T and AV matmuls), which FlopCounterMode does not know."""
    b, h, sq, d = query_shape
    sk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * sq * sk * d + 2 * b * h * sq * sk * dv


def _custom_flops() -> dict[Any, Any]:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_flops} if op is not None else {}


@contextlib.contextmanager
def _no_mha_fastpath() -> Iterator[None]:
    """Disable the fused transformer fast path, whose single kernel FlopCounterMode cannot count."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def summarize(module: nn.Module, input_shape: tuple[int, ...]) -> ModelSummary:
    """Count parameters, bytes and MACs of ``module`` for one sample of ``input_shape`` (no batch dim).

    Runs one eval-mode forward under ``torch.no_grad`` and restores the training mode. Works on
    TorchScript modules too (totals only: they do not take forward hooks).
    """
    params = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    seen: set[int] = set()
    size = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() in seen and t.numel():
            continue
        seen.add(t.data_ptr())
        size += t.numel() * t.element_size()

    ref = next((t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()), None)
    x = torch.zeros(
        (1, *input_shape),
        dtype=ref.dtype if ref is not None else torch.float32,
        device=ref.device if ref is not None else "cpu",
    )
    layers = layer_modules(module)
    shapes: dict[str, tuple[int, ...] | str] = {}
    handles = []
    for name, m in layers:

        def hook(_m: nn.Module, _inp: Any, out: Any, name: str = name) -> None:
            shapes[name] = _shape_of(out)

        try:
            handles.append(m.register_forward_hook(hook))
        except RuntimeError:  # TorchScript modules refuse hooks
            break

    was_training = module.training
    counter = FlopCounterMode(display=False, custom_mapping=_custom_flops())
    try:
        module.eval()
        with torch.no_grad(), _no_mha_fastpath(), counter:
            module(x)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot summarize {type(module).__name__} on input {list(input_shape)}: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from None
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()

    flops = int(counter.get_total_flops())
    per_module = counter.get_flop_counts()
    root = type(module).__name__
    rows = []
    for name, m in layers:
        if name not in shapes:
            continue  # never called in forward (e.g. unused head)
        layer_flops = sum(per_module.get(f"{root}.{name}", {}).values())
        rows.append(
            LayerRow(
                name=name,
                type=type(m).__name__,
                params=sum(p.numel() for p in m.parameters()),
                output_shape=shapes[name],
                macs=int(layer_flops) // 2,
            )
        )
    return ModelSummary(params, trainable, size, flops // 2, flops, rows)


def summarize_onnx(path: str | Path) -> ModelSummary:
    """Parameters from the weight initializers (float and 8/4-bit; not int64 shape constants), size = file size plus external data files; MACs unknown (None).

    One row per graph node with the parameters of its initializer inputs and, where ONNX shape
    inference knows it, the output shape.
    """
    import onnx

    from .loaders import check_model_path, onnx_external_files, read_onnx

    p = check_model_path(path, "ONNX file", "give an .onnx file")
    model = read_onnx(p)
    external = onnx_external_files(model, p)
    size = p.stat().st_size + sum(f.stat().st_size for f in external)
    # weights are float or (quantized) 8-bit initializers; int64/int32/bool ones are shape constants
    weight_types = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT4,
        onnx.TensorProto.UINT4,
    }
    numel = {t.name: _numel(t.dims) for t in model.graph.initializer if t.data_type in weight_types}
    params = sum(numel.values())

    shapes: dict[str, tuple[int, ...] | str] = {}
    with contextlib.suppress(Exception):
        inferred = onnx.shape_inference.infer_shapes(model) if model.ByteSize() < 200_000_000 else model
        for v in list(inferred.graph.value_info) + list(inferred.graph.output):
            dims = v.type.tensor_type.shape.dim
            shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)

    rows = []
    for i, node in enumerate(model.graph.node):
        out = node.output[0] if node.output else ""
        rows.append(
            LayerRow(
                name=node.name or f"{node.op_type}_{i}",
                type=node.op_type,
                params=sum(numel.get(n, 0) for n in node.input),
                output_shape=shapes.get(out, "?"),
                macs=None,
            )
        )
    return ModelSummary(params, 0, size, None, None, rows)


def _numel(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n
