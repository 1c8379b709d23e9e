"""Per-node time of an ONNX model, from onnxruntime's own session profiler.

onnxruntime optimizes the graph before it runs it (fuses Conv+Relu, folds BatchNorm, turns QDQ
groups into QLinearConv, changes layouts), so the profile names the nodes that actually ran. Each
executed node is traced back to a node of the file (by name, after stripping the suffixes the
optimizer and quantizers add, or by the tensor it was named after) and from there to the PyTorch
module it came from (export metadata, weight names, or ``/layer1/conv/Conv``-style paths). Nodes
of the file that nothing executed were fused into a neighbour or folded away.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from workbench.analysis.profile.model import INT8_OPS, LayerProfile, Profile
from workbench.errors import WorkbenchError

__all__ = ["base_op", "layer_from_node_name", "profile_onnx", "strip_node_suffixes"]

_SUFFIXES = re.compile(r"(_token_\d+|_nchwc|_quant|_QuantizeLinear|_DequantizeLinear|_QuantizeLinear_Output|"
                       r"_DequantizeLinear_Output|_output_\d+|_quantized|_pre_q|_q_to_dq|_to_dq|_q|_fused)$")
_PREFIXES = ("fused ", "Fused_")
#: Kernels onnxruntime may name after the activation fused into them (Conv+Relu -> "relu_nchwc").
_FUSING_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def strip_node_suffixes(name: str) -> str:
    """One step of undoing what optimizers and quantizers append to a node or tensor name."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return _SUFFIXES.sub("", name)


def layer_from_node_name(name: str) -> str | None:
    """``/layer1/layer1.0/conv1/Conv_quant`` -> ``layer1.0.conv1`` (the TorchScript exporter's scopes)."""
    if not name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p][:-1]  # the last part is the op (Conv, Relu_1, ...)
    path = ""
    for part in parts:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path or None


def base_op(op: str) -> str:
    """The ONNX op an optimized or quantized kernel stands for: QLinearConv -> Conv, NhwcMaxPool -> MaxPool."""
    for prefix in ("QLinear", "Fused", "Nhwc", "Q", "Dynamic"):
        if op.startswith(prefix) and op != "QuantizeLinear" and len(op) > len(prefix) and op[len(prefix)].isupper():
            op = op[len(prefix):]
    return op.removesuffix("Integer").removesuffix("IntegerToFloat")


class _Graph:
    """The file's graph, indexed for tracing executed nodes back to layers."""

    def __init__(self, model: Any) -> None:
        from workbench.techniques.quantize.layers import node_modules

        g = model.graph
        self.nodes = {n.name: n for n in g.node if n.name}
        self.producer = {o: n.name for n in g.node for o in n.output if n.name}
        self.inits = {t.name: list(t.dims) for t in g.initializer}
        self.inputs = {i.name for i in g.input}
        self.scopes = node_modules(model)
        self.dims: dict[str, list[int]] = {}
        try:
            import onnx

            inferred = onnx.shape_inference.infer_shapes(model) if model.ByteSize() < 200_000_000 else model
            for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
                if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                    self.dims[v.name] = [d.dim_value if d.HasField("dim_value") else 1
                                         for d in v.type.tensor_type.shape.dim]
        except Exception:  # shape inference is best effort: without it MACs stay unknown
            pass

    def shape(self, tensor: str) -> list[int] | None:
        if tensor in self.inits:
            return self.inits[tensor]
        node = self.nodes.get(self.producer.get(tensor, ""))
        if node is not None and node.op_type == "DequantizeLinear" and node.input and node.input[0] in self.inits:
            return self.inits[node.input[0]]
        return self.dims.get(tensor)

    def find(self, executed: str) -> str | None:
        """The file's node an executed node stands for (by name, or by the tensor it was named after)."""
        name = executed
        for _ in range(6):
            if name in self.nodes:
                return name
            if name in self.producer:
                return self.producer[name]
            shorter = strip_node_suffixes(name)
            if shorter == name:
                return None
            name = shorter
        return None

    def upstream(self, node_name: str) -> str | None:
        node = self.nodes[node_name]
        for i in node.input:
            if i and i not in self.inits and i in self.producer:
                return self.producer[i]
        return None

    def module(self, node_name: str) -> str:
        """The PyTorch module a node of the file came from (its layer key)."""
        node = self.nodes[node_name]
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input:
            src = node.input[0]
            if src in self.inits or src.endswith("_quantized"):
                return _param_module(src) or node_name
            if src in self.inputs:
                return "(input)"
            if src in self.producer:
                return self.module(self.producer[src])
        for i in node.input:
            weight = i
            while True:  # the weight may reach the node through a DequantizeLinear
                shorter = strip_node_suffixes(weight)
                if shorter == weight:
                    break
                weight = shorter
            mod = _param_module(weight) if (weight in self.inits or i in self.inits or
                                            self.producer.get(i, "").endswith("_DequantizeLinear")) else None
            if mod and weight.rsplit(".", 1)[-1] in ("weight", "bias", "in_proj_weight"):
                return mod
        scopes = self.scopes.get(node_name) or []
        if scopes and not all(s.rsplit(".", 1)[-1] in ("weight", "bias") for s in scopes):
            return scopes[-1]
        return layer_from_node_name(node_name) or node_name

    def folded(self, node_name: str, module: str) -> list[str]:
        """Modules the exporter folded into this node (BatchNorm into Conv: the node carries its scope)."""
        scopes = self.scopes.get(node_name) or []
        deepest = scopes[-1] if scopes else ""
        return [deepest] if deepest and deepest != module and not module.startswith(deepest + ".") else []

    def macs(self, node_name: str, batch: int) -> int | None:
        """MACs of a Conv/Gemm/MatMul-like node from inferred shapes (batch dim set to ``batch``)."""
        node = self.nodes[node_name]
        op = base_op(node.op_type)
        ins = list(node.input)
        out = self.shape(node.output[0]) if node.output else None
        if out is None:
            return None
        out = [batch, *out[1:]] if out else out
        if op in ("Conv", "ConvTranspose"):
            w_idx = 3 if node.op_type == "QLinearConv" else 1
            w = self.shape(ins[w_idx]) if len(ins) > w_idx else None
            if not w or len(w) < 3:
                return None
            if op == "ConvTranspose":
                x = self.shape(ins[0])
                return int(np.prod([batch, *x[1:]]) * int(np.prod(w[1:]))) if x else None
            return int(np.prod(out) * int(np.prod(w[1:])))
        if op in ("Gemm", "MatMul"):
            a_idx = 0
            a = self.shape(ins[a_idx]) if ins else None
            if not a:
                return None
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if trans_a and len(a) >= 2 else a[-1]
            return int(np.prod(out) * k)
        return None


def _param_module(tensor: str) -> str | None:
    name = tensor.removeprefix("_orig_mod.").removeprefix("module.")
    return name.rsplit(".", 1)[0] if "." in name else None


def _precision(op: str, input_types: Iterable[str]) -> str:
    types = set(input_types)
    if op in INT8_OPS or types & {"int8", "uint8"}:
        return "int8"
    if "float16" in types:
        return "fp16"
    if "bfloat16" in types:
        return "bf16"
    if types & {"float", "double"}:
        return "float"
    return "other"


def _type_shapes(entries: list[dict[str, Any]]) -> list[tuple[str, list[int]]]:
    return [(k, list(v)) for e in entries or [] for k, v in e.items()]


def profile_onnx(path: str | Path, batch: int = 1, *, input_shape: str | tuple[int, ...] | None = None,
                 threads: int = 0, iters: int = 0, min_time_s: float = 0.3, optimization: str = "all",
                 providers: list[str] | None = None) -> Profile:
    """Profile an ONNX file with onnxruntime at ``batch`` on synthetic inputs (first call not counted).

    The file is opened through the model-file safety checks (``open_model_file``) first.
    """
    import onnxruntime as ort

    from workbench.core.measure.model_file import open_model_file
    from workbench.core.models.loaders import read_onnx

    mf = open_model_file(path, input_shape)
    if mf.fixed_batch is not None and mf.fixed_batch != batch:
        raise WorkbenchError(f"{mf.path}: the graph fixes the batch size to {mf.fixed_batch}; use --batch "
                             f"{mf.fixed_batch} or re-export with a dynamic batch axis")
    graph = _Graph(read_onnx(mf.path, external_data=True))
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    with tempfile.TemporaryDirectory(prefix="workbench-profile-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = levels[optimization]
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the timed runtime does
        if threads > 0:
            so.intra_op_num_threads = threads
        try:
            sess = ort.InferenceSession(str(mf.path), sess_options=so,
                                        providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:
            raise WorkbenchError(f"{mf.path}: onnxruntime cannot load it: {str(exc).strip().splitlines()[0]}") from None
        inp = sess.get_inputs()[0]
        dtype = np.float16 if "float16" in inp.type else np.float32
        x = np.zeros((batch, *mf.input_shape), dtype=dtype)
        import time

        calls = 0
        t0 = time.perf_counter()
        while (calls < iters + 1) if iters > 0 else (calls < 4 or (time.perf_counter() - t0 < min_time_s
                                                                    and calls < 201)):
            sess.run(None, {inp.name: x})
            calls += 1
        trace = json.loads(Path(sess.end_profiling()).read_text(encoding="utf-8"))
        provider = sess.get_providers()[0]
        used_threads = threads
    return _from_trace(trace, graph, mf.path, batch, list(mf.input_shape), provider, used_threads, optimization)


def _from_trace(trace: list[dict[str, Any]], graph: _Graph, path: Path, batch: int, input_shape: list[int],
                provider: str, threads: int, optimization: str) -> Profile:
    """Turn onnxruntime's chrome-trace JSON into rows; the first ``model_run`` (warm-up) is dropped."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace if e.get("cat") == "Session"
                  and e.get("name") == "model_run")
    kept = runs[1:] if len(runs) > 1 else runs
    if not kept:
        raise WorkbenchError(f"{path}: onnxruntime recorded no model runs to profile")
    start = kept[0][0]
    n = len(kept)
    total_ms = sum(b - a for a, b in kept) / 1000 / n
    node_us: dict[str, float] = defaultdict(float)
    node_args: dict[str, dict[str, Any]] = {}
    for e in trace:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] < start:
            continue
        name = e["name"][: -len("_kernel_time")]
        node_us[name] += e["dur"]
        node_args.setdefault(name, e.get("args") or {})
    claimed: set[str] = set()
    rows: list[LayerProfile] = []
    for name, us in node_us.items():
        args = node_args[name]
        op = str(args.get("op_name", "?"))
        ins = _type_shapes(args.get("input_type_shape"))
        outs = _type_shapes(args.get("output_type_shape"))
        original = graph.find(name)
        fused: list[str] = []
        macs = None
        if original is not None:
            primary = original
            walked: list[str] = []
            want = base_op(op)
            if base_op(graph.nodes[original].op_type) != want and want in _FUSING_OPS:
                cur: str | None = original
                for _ in range(3):  # Conv+Relu fused and named after the Relu: find the Conv upstream
                    walked.append(cur)  # type: ignore[arg-type]
                    cur = graph.upstream(cur)  # type: ignore[arg-type]
                    if cur is None:
                        break
                    if base_op(graph.nodes[cur].op_type) == want:
                        primary = cur
                        break
                else:
                    walked = []
                if primary == original:
                    walked = []
            layer = graph.module(primary)
            claimed.update([primary, *walked])
            fused = [m for m in dict.fromkeys(graph.module(w) for w in walked) if m != layer]
            fused += [m for m in graph.folded(primary, layer) if m not in fused]
            macs = graph.macs(primary, batch)
        else:  # a node the optimizer inserted (layout Transpose, ReorderOutput): a row of its own
            layer = layer_from_node_name(name) or f"({name})"
        out_shape: list[int] | str | None = outs[0][1] if outs else None
        rows.append(LayerProfile(
            name=name, layer=layer, op=op, time_ms=us / 1000 / n, share=0.0, macs=macs,
            params=None, output_shape=out_shape, precision=_precision(op, [t for t, _ in ins[:1]] or
                                                                      [t for t, _ in ins]),
            kernels=[f"{op} ({provider.removesuffix('ExecutionProvider')})"], fused=fused,
            weight_bytes=_int(args.get("parameter_size")),
            activation_bytes=(_int(args.get("activation_size")) or 0) + (_int(args.get("output_size")) or 0)))
    for row in rows:
        row.share = row.time_ms / total_ms if total_ms else 0.0
    executed_layers = {r.layer for r in rows} | {f for r in rows for f in r.fused}
    not_run = sorted({graph.module(nm) for nm in graph.nodes if nm not in claimed} - executed_layers)
    return Profile(source=str(path), kind="onnx", runtime=f"onnxruntime {provider.removesuffix('ExecutionProvider')}"
                   f" (optimization {optimization})", batch=batch, total_ms=total_ms, threads=threads, iters=n,
                   input_shape=input_shape, layers=rows, not_executed=not_run)


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
