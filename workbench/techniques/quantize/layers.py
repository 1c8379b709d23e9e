"""Which ONNX nodes came from which PyTorch module, and which layers lose most when quantized.

The dynamo exporter records each node's module scopes in its metadata, so ``quantize.exclude``
can name PyTorch modules and the accuracy-aware fallback can keep the most sensitive layers float.
"""

from __future__ import annotations

import ast
import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.core.models.loaders import onnx_input_name, read_onnx
from workbench.errors import WorkbenchError

__all__ = ["WEIGHTED_OPS", "LayerSensitivity", "layer_sensitivity", "node_modules", "nodes_for_modules"]

#: Ops whose error the sensitivity analysis ranks: the layers with weights (and attention matmuls).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _scopes_from_metadata(node: Any) -> list[str] | None:
    props = {p.key: p.value for p in node.metadata_props}
    raw = props.get("pkg.torch.onnx.name_scopes")
    if raw:
        try:
            scopes = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            scopes = None
        if isinstance(scopes, list) and scopes:
            # the last entry is the FX node (e.g. 'conv2d'), the rest are module paths
            return [str(s) for s in scopes[:-1] if s]
    ns = props.get("namespace")
    if ns:  # ': pkg.Model/features: torch.nn.Sequential/features.0: ...' -> module paths
        parts = [seg.split(":", 1)[0].strip() for seg in ns.split("/")]
        return [p for p in parts[:-1] if p]
    return None


def node_modules(model: Any) -> dict[str, list[str]]:
    """ONNX node name -> the PyTorch module paths it came from, outermost first.

    Reads the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata (or ``namespace``); for
    nodes without metadata (other exporters, nodes added by tools) falls back to the parameter
    names of the initializers it consumes (``features.0.weight`` -> ``features.0``).
    """
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, list[str]] = {}
    for node in model.graph.node:
        scopes = _scopes_from_metadata(node)
        if not scopes:
            scopes = [i.rsplit(".", 1)[0] for i in node.input if i in inits and "." in i]
        out[node.name] = scopes
    return out


def _initializer_modules(node: Any, inits: set[str]) -> list[str]:
    return [i.rsplit(".", 1)[0] for i in node.input if i in inits and "." in i]


def nodes_for_modules(model: Any, module_names: Iterable[str]) -> dict[str, list[str]]:
    """Map PyTorch module names (``quantize.exclude``) to the ONNX nodes they became.

    A node belongs to module ``M`` when one of its name scopes is ``M`` or lies inside it
    (``M.``...). When no node carries ``M`` in its scopes, nodes consuming a parameter of ``M``
    (initializer ``M.weight``) are used: the exporter folds BatchNorm into the preceding Conv and
    names that node after the BN, so a Conv module is found through its weight. Raises
    ``WorkbenchError`` naming the module and listing the modules that do exist.
    """
    inits = {t.name for t in model.graph.initializer}
    scopes = node_modules(model)
    result: dict[str, list[str]] = {}
    for raw in module_names:
        name = raw.strip().removeprefix("_orig_mod.").removeprefix("module.")
        hits = [n for n, sc in scopes.items() if any(s == name or s.startswith(name + ".") for s in sc)]
        if not hits:
            hits = [node.name for node in model.graph.node
                    if any(m == name or m.startswith(name + ".") for m in _initializer_modules(node, inits))]
        if not hits:
            known = sorted({s for sc in scopes.values() for s in sc})
            more = f" (+{len(known) - 12} more)" if len(known) > 12 else ""
            raise WorkbenchError(f"quantize.exclude: no ONNX node comes from module {raw!r}; modules in this graph: "
                                 f"{', '.join(known[:12]) or 'none (no export metadata)'}{more}")
        result[raw] = hits
    return result


def _deepest_module(scopes: list[str]) -> str:
    return scopes[-1] if scopes else ""


@dataclass
class LayerSensitivity:
    """How much error one layer adds when quantized (relative L2 error, output minus input)."""

    node: str
    op_type: str
    module: str
    error: float  # relative L2 error of this node's output, quantized vs float model
    added_error: float  # error at the output minus error at its activation input (>= 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _with_outputs(model: Any, names: Sequence[str]) -> Any:
    from onnx import TensorProto, helper

    m = copy.deepcopy(model)
    existing = {o.name for o in m.graph.output}
    for n in names:
        if n not in existing:
            m.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    return m


def _run_with_outputs(model: Any, folder: Path, names: list[str], batches: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    import onnx
    import onnxruntime as ort

    path = folder / f".sens-{id(model)}.onnx"
    onnx.save(_with_outputs(model, names), str(path))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs() if o.name in set(names)]
    try:
        return [dict(zip(out_names, sess.run(out_names, {inp: b}), strict=True)) for b in batches]
    finally:
        del sess
        path.unlink(missing_ok=True)


def layer_sensitivity(float_path: Path, quant_path: Path, batches: Sequence[np.ndarray],
                      ops: Sequence[str] = WEIGHTED_OPS) -> list[LayerSensitivity]:
    """Rank weighted layers by the error quantizing them adds, from one side-by-side run.

    Both models run on ``batches`` with every candidate node's output (and activation input)
    exposed as a graph output; quantizers keep the original tensor names at the float boundary
    of each quantized op, so the same tensors are comparable. Error accumulates through the
    network, so each layer is scored by the error it *adds* (output error minus input error),
    not by its raw output error, which would blame the last layers for everything upstream.
    Sorted most sensitive first.
    """

    fmodel = read_onnx(float_path, external_data=True)
    qmodel = read_onnx(quant_path, external_data=True)
    inits = {t.name for t in fmodel.graph.initializer}
    q_tensors = {o for n in qmodel.graph.node for o in n.output} | {i.name for i in qmodel.graph.input}
    graph_input = onnx_input_name(fmodel)
    cands = []
    for node in fmodel.graph.node:
        if node.op_type not in ops or not node.output or node.output[0] not in q_tensors:
            continue
        act_in = next((i for i in node.input if i and i not in inits), "")
        cands.append((node, act_in))
    if not cands:
        return []
    names = sorted({n.output[0] for n, _ in cands} | {a for _, a in cands if a and a != graph_input and a in q_tensors})
    scopes = node_modules(fmodel)
    folder = Path(quant_path).parent
    f_runs = _run_with_outputs(fmodel, folder, names, batches)
    q_runs = _run_with_outputs(qmodel, folder, names, batches)

    def rel_err(name: str) -> float:
        if name == graph_input or not name:
            return 0.0
        num = den = 0.0
        for f, q in zip(f_runs, q_runs, strict=True):
            if name not in f or name not in q:
                return 0.0
            a, b = f[name].astype(np.float64), q[name].astype(np.float64)
            num += float(np.sum((a - b) ** 2))
            den += float(np.sum(a ** 2))
        return math.sqrt(num / den) if den > 0 else 0.0

    out = []
    for node, act_in in cands:
        e_out = rel_err(node.output[0])
        e_in = rel_err(act_in)
        out.append(LayerSensitivity(node.name, node.op_type, _deepest_module(scopes.get(node.name, [])),
                                    e_out, max(0.0, e_out - e_in)))
    out.sort(key=lambda s: (s.added_error, s.error), reverse=True)
    return out
