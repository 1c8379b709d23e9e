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
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from workbench.analysis.profile.model import INT8_OPS, OTHER, LayerProfile, Profile
from workbench.errors import WorkbenchError

__all__ = ["base_op", "layer_from_node_name", "profile_onnx", "strip_node_suffixes"]

_SUFFIXES = re.compile(r"(_token_\d+|_nchwc|_quant|_QuantizeLinear|_DequantizeLinear|_QuantizeLinear_Output|"
                       r"_DequantizeLinear_Output|_output_\d+|_quantized|_pre_q|_q_to_dq|_to_dq|_q|_fused|"
                       r"_Transposed|/[A-Za-z]+Fusion/?)$")
_PREFIXES = ("fused ", "Fused_")
#: Export metadata that names a node's module scopes (dynamo exporter); without it, weights and neighbours do.
_SCOPE_KEYS = ("pkg.torch.onnx.name_scopes", "namespace")
_INPUT_TYPES: dict[str, Any] = {"tensor(float16)": np.float16, "tensor(double)": np.float64,
                                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
                                "tensor(int8)": np.int8, "tensor(bool)": np.bool_}
_BASE_OPS = {"DynamicQuantizeMatMul": "MatMul", "MatMulIntegerToFloat": "MatMul", "QAttention": "Attention",
             "DynamicQuantizeLinear": "QuantizeLinear"}
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
    if op in _BASE_OPS:
        return _BASE_OPS[op]
    for prefix in ("QLinear", "Fused", "Nhwc", "Q", "Dynamic"):
        if op.startswith(prefix) and op != "QuantizeLinear" and len(op) > len(prefix) and op[len(prefix)].isupper():
            op = op[len(prefix):]
    return op.removesuffix("Integer").removesuffix("IntegerToFloat")


class _Graph:
    """The file's graph, indexed for tracing executed nodes back to layers."""

    def __init__(self, model: Any, batch: int | None = None) -> None:
        from workbench.techniques.quantize.layers import node_modules

        g = model.graph
        self.nodes = {n.name: n for n in g.node if n.name}
        self.producer = {o: n.name for n in g.node for o in n.output if n.name}
        self.inits = {t.name: list(t.dims) for t in g.initializer}
        self.inputs = {i.name for i in g.input}
        import onnx

        weight_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                        onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
        #: weights and biases (float or quantized); not shape constants, scales or zero points
        self.weights = {t.name for t in g.initializer if t.data_type in weight_types and len(t.dims) >= 1
                        and not t.name.endswith(("_scale", "_zero_point"))}
        self.scopes = node_modules(model)
        self.meta = {n.name for n in g.node if any(p.key in _SCOPE_KEYS for p in n.metadata_props)}
        self.readers: dict[str, list[str]] = defaultdict(list)
        for n in g.node:
            for i in n.input:
                self.readers[i].append(n.name)
        self.dims: dict[str, list[int]] = {}
        if batch is not None:  # concrete batch: shape inference then knows every activation's size
            inits_names = {t.name for t in g.initializer}
            for value in g.input:
                dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
                if value.name not in inits_names and dims and not dims[0].HasField("dim_value"):
                    dims[0].dim_value = batch
        try:
            inferred = onnx.shape_inference.infer_shapes(model) if model.ByteSize() < 200_000_000 else model
            for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
                if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
                    if all(d > 0 for d in dims):  # unknown sizes leave MACs unknown rather than wrong
                        self.dims[v.name] = dims
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

    def _weight_module(self, node: Any) -> str | None:
        """The module whose parameter the node consumes (``features.0.0.weight_quantized`` -> ``features.0.0``)."""
        for i in node.input:
            weight = i
            while True:  # the weight may reach the node through a DequantizeLinear, quantized or transposed
                shorter = strip_node_suffixes(weight)
                if shorter == weight:
                    break
                weight = shorter
            is_param = weight in self.inits or i in self.inits or self.producer.get(i, "").endswith("_DequantizeLinear")
            mod = _param_module(weight) if is_param else None
            if mod and weight.rsplit(".", 1)[-1] in ("weight", "bias", "in_proj_weight"):
                return mod
        return None

    def _direct(self, node_name: str) -> str | None:
        """A node's module from what it carries itself: export metadata, or the parameter it consumes."""
        node = self.nodes[node_name]
        weight = self._weight_module(node)
        if node_name in self.meta:
            scopes = self.scopes.get(node_name) or []
            if not scopes:
                return OTHER  # an op in the model's own forward, outside every submodule
            deepest = scopes[-1]
            # the exporter names a Conv with a folded BatchNorm after the BN; its weight names the Conv
            if weight and weight != deepest and base_op(node.op_type) in _FUSING_OPS:
                return weight
            return deepest
        return weight

    def _neighbour(self, node_name: str, downstream_first: bool, hops: int = 4) -> str | None:
        """The module of the nearest node that knows its own, walking the graph (quantizers drop metadata)."""
        directions = (self.consumers, self.producers_of) if downstream_first else (self.producers_of, self.consumers)
        for step in directions:
            frontier, seen = [node_name], {node_name}
            for _ in range(hops):
                nxt = [m for n in frontier for m in step(n) if m not in seen]
                for m in nxt:
                    found = self._direct(m)
                    if found:
                        return found
                seen.update(nxt)
                frontier = nxt
        return None

    def consumers(self, node_name: str) -> list[str]:
        return [c for o in self.nodes[node_name].output for c in self.readers.get(o, [])]

    def producers_of(self, node_name: str) -> list[str]:
        return [self.producer[i] for i in self.nodes[node_name].input if i in self.producer]

    def kernel_root(self, original: str, want: str) -> tuple[str, list[str]]:
        """The node whose work a kernel does, and the nodes fused into it on the way there.

        onnxruntime names a Conv+Relu kernel after the Relu (``relu_nchwc``): when the kernel's op
        differs from the node its name leads to, the matching Conv/Gemm/MatMul is searched upstream.
        """
        if base_op(self.nodes[original].op_type) == want or want not in _FUSING_OPS:
            return original, []
        walked: list[str] = []
        cur: str | None = original
        for _ in range(3):
            assert cur is not None
            walked.append(cur)
            cur = self.upstream(cur)
            if cur is None:
                break
            if base_op(self.nodes[cur].op_type) == want:
                return cur, walked
        return original, []

    def params(self, node_name: str) -> int | None:
        """Elements of the parameters a node consumes (through a DequantizeLinear too); None if none."""
        total = 0
        for i in self.nodes[node_name].input:
            src = i
            producer = self.nodes.get(self.producer.get(i, ""))
            if producer is not None and producer.op_type == "DequantizeLinear" and producer.input:
                src = producer.input[0]
            if src in self.weights:
                total += int(np.prod(self.inits[src]))
        return total or None

    def module(self, node_name: str) -> str:
        """The PyTorch module a node of the file came from (its layer key)."""
        node = self.nodes[node_name]
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input:
            src = node.input[0]
            if src in self.inits or src.endswith("_quantized"):
                return _param_module(strip_node_suffixes(src)) or node_name
            if src in self.inputs:
                return "(input)"
            if src in self.producer:
                return self.module(self.producer[src])
        if node.op_type == "DynamicQuantizeLinear" and node.input and node.input[0] in self.inputs:
            return "(input)"
        found = self._direct(node_name)
        if found:
            return found
        # quantizer-made nodes: glue after a kernel (Cast, scale Mul) belongs upstream, the rest downstream
        found = self._neighbour(node_name, downstream_first=node.op_type not in ("Cast", "Mul", "Add"))
        return found or layer_from_node_name(node_name) or node_name

    def folded(self, node_name: str, module: str) -> list[str]:
        """Modules the exporter folded into this node (BatchNorm into Conv: the node carries its scope)."""
        if node_name not in self.meta or base_op(self.nodes[node_name].op_type) not in _FUSING_OPS:
            return []
        scopes = self.scopes.get(node_name) or []
        deepest = scopes[-1] if scopes else ""
        return [deepest] if deepest and deepest != module and not module.startswith(deepest + ".") else []

    def macs(self, node_name: str, executed_op: str, ins: list[tuple[str, list[int]]],
             outs: list[tuple[str, list[int]]]) -> int | None:
        """MACs of a Conv/Gemm/MatMul-like kernel: shapes onnxruntime recorded, the weight's from the file."""
        node = self.nodes[node_name]
        op = base_op(executed_op)
        # the file's (logical) shapes first: onnxruntime records internal layouts (NCHWc pads channels, NHWC)
        out = (self.shape(node.output[0]) if node.output else None) or (outs[0][1] if outs else None)
        if not out or any(d <= 0 for d in out):
            return None
        if op in ("Conv", "ConvTranspose"):
            w_idx = 3 if node.op_type == "QLinearConv" else 1
            w = self.shape(node.input[w_idx]) if len(node.input) > w_idx else None
            if (not w or len(w) < 3) and len(ins) > 1 and len(ins[1][1]) >= 3:
                w = ins[1][1]
            if not w or len(w) < 3:
                return None
            if op == "ConvTranspose":
                x = self.shape(node.input[0]) or (ins[0][1] if ins else None)
                return int(np.prod(x) * int(np.prod(w[1:]))) if x else None
            return int(np.prod(out) * int(np.prod(w[1:])))
        if op in ("Gemm", "MatMul"):
            a = (self.shape(node.input[0]) if node.input else None) or (ins[0][1] if ins else None)
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
    graph = _Graph(read_onnx(mf.path, external_data=True), batch)
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise WorkbenchError(f"optimization = {optimization!r}: expected one of {', '.join(levels)}")
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
        x = np.zeros((batch, *mf.input_shape), dtype=_INPUT_TYPES.get(inp.type, np.float32))
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
        params = None
        if original is not None:
            primary, walked = graph.kernel_root(original, base_op(op))
            layer = graph.module(primary)
            claimed.update([primary, *walked])
            fused = [m for m in dict.fromkeys(graph.module(w) for w in walked) if m != layer]
            fused += [m for m in graph.folded(primary, layer) if m not in fused]
            macs = graph.macs(primary, op, ins, outs)
            params = graph.params(primary)
        else:  # a node the optimizer inserted (layout Transpose, ReorderOutput): a row of its own
            layer = layer_from_node_name(name) or f"({name})"
        logical = graph.shape(graph.nodes[original].output[0]) if original and graph.nodes[original].output else None
        out_shape: list[int] | str | None = logical or (outs[0][1] if outs else None)
        rows.append(LayerProfile(
            name=name, layer=layer, op=op, time_ms=us / 1000 / n, share=0.0, macs=macs,
            params=params, output_shape=out_shape, precision=_precision(op, [t for t, _ in ins[:1]] or
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
