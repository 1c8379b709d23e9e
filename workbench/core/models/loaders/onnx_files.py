"""ONNX files: read safely (external data must stay in the model's folder), check, inspect."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench.core.models.loaders.common import LoadedModel, check_model_path, first_line
from workbench.errors import ModelLoadError

ONNX_HINT = "export one with torch.onnx.export(model, (example,), 'model.onnx', dynamo=True)"


def _onnx_tensors(graph: Any) -> list[Any]:
    """Every TensorProto in a graph, its node attributes and all subgraphs (If/Loop/Scan bodies)."""
    from onnx import AttributeProto

    out = list(graph.initializer)
    out += [s.values for s in graph.sparse_initializer] + [s.indices for s in graph.sparse_initializer]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                out.append(attr.t)
            elif attr.type == AttributeProto.TENSORS:
                out += list(attr.tensors)
            elif attr.type == AttributeProto.GRAPH:
                out += _onnx_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    out += _onnx_tensors(g)
    return out


def onnx_external_files(model: Any, path: Path) -> list[Path]:
    """The external data files an ONNX model refers to; refuses locations outside its folder."""
    from onnx import TensorProto

    folder = path.resolve().parent
    files: dict[Path, None] = {}
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not location:
            raise ModelLoadError(
                f"{path}: tensor {tensor.name!r} has external data without a location; re-export it"
            )
        loc = Path(location)
        target = (folder / loc).resolve()
        if (
            loc.is_absolute()
            or os.path.isabs(location)
            or ".." in loc.parts
            or not target.is_relative_to(folder)
        ):
            raise ModelLoadError(
                f"{path}: refused: external data location {location!r} of tensor {tensor.name!r} points outside "
                "the model's folder; keep .onnx data files next to the .onnx file"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{path}: external data file {location!r} (tensor {tensor.name!r}) is missing; "
                "copy it next to the .onnx file"
            )
        files[target] = None
    return list(files)


def _onnx_value_dims(value: Any) -> tuple[int | None, ...] | None:
    t = value.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim)


def read_onnx(path: str | Path, external_data: bool = False) -> Any:
    """Read an ONNX graph with every failure as a ModelLoadError.

    Without ``external_data`` only the protobuf is parsed. With it, the external data files are
    checked to lie inside the model's folder *before* they are read, then loaded.
    """
    import onnx

    p = check_model_path(path, "ONNX file", ONNX_HINT)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(
            f"{p}: not a valid ONNX file (truncated or another format: {first_line(exc)}); {ONNX_HINT}"
        ) from None
    if external_data and onnx_external_files(model, p):
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(p.resolve().parent))
        except Exception as exc:
            raise ModelLoadError(f"{p}: cannot read its external data ({first_line(exc)})") from None
    return model


def checked_onnx(path: str | Path) -> Any:
    """The ONNX graph (no external data loaded) after every safety check (external data in its folder)."""
    p = check_model_path(path, "ONNX file", ONNX_HINT)
    model = read_onnx(p)
    onnx_external_files(model, p)
    return model


def load_onnx(path_str: str, num_classes: int, input_shape: tuple[int, ...]) -> LoadedModel:
    """Validate an ONNX file (no torch module is built) and read its input/output shapes."""
    import onnx

    hint = ONNX_HINT
    path = check_model_path(path_str, "ONNX file", hint)
    model = checked_onnx(path)  # safety first: before the checker touches any data file
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: ONNX checker rejected the model ({first_line(exc)}); {hint}"
        ) from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if not inputs:
        raise ModelLoadError(f"{path}: the ONNX graph has no inputs; {hint}")
    if len(inputs) > 1:
        names = ", ".join(v.name for v in inputs)
        raise ModelLoadError(
            f"{path}: the ONNX graph has {len(inputs)} inputs ({names}); a recipe runs single-input ONNX models: "
            "time and quantize this one with `workbench bench` / `workbench quantize` (--data/--calib TOKENS.npz), "
            "or use its PyTorch model (model.source = 'python') with token data"
        )
    declared = _onnx_value_dims(inputs[0])
    resolved = input_shape
    if declared is not None and len(declared) == len(input_shape) + 1:
        resolved = tuple(d if d is not None else s for d, s in zip(declared[1:], input_shape, strict=True))
    out_dims = _onnx_value_dims(model.graph.output[0]) if model.graph.output else None
    declared_classes = out_dims[-1] if out_dims else None
    return LoadedModel(
        None,
        "onnx",
        resolved,
        num_classes,
        onnx_path=path,
        description=f"ONNX {path.name}",
        declared_input_shape=declared,
        declared_num_classes=declared_classes,
    )


def onnx_file_size(path: Path) -> int:
    """Size of an ONNX model including external data files in its folder that it references."""
    size = path.stat().st_size
    try:
        model = read_onnx(path)
        locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
        size += sum((path.parent / loc).stat().st_size for loc in locations if (path.parent / loc).exists())
    except Exception:  # size of the main file is still a true lower bound
        pass
    return size


def onnx_input_name(model: Any) -> str:
    inits = {t.name for t in model.graph.initializer}
    inputs = [v.name for v in model.graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise ModelLoadError(f"this needs a single-input model; this one has {len(inputs)}: {inputs}")
    return inputs[0]
