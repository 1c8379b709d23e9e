"""Post-training quantization: onnxruntime INT8 (dynamic, static QDQ), fp16, and PyTorch dynamic INT8.

Why onnxruntime for INT8: its x86 kernels (VNNI ``vpdpbusd`` through MLAS) are the fastest INT8 CPU
path available for this torch build, the result is a plain ``.onnx`` file that deploys anywhere,
and the same file is what the export bundle ships. The stage therefore exports the current
(float) model to ONNX, quantizes that file and measures both side by side under onnxruntime:
the record's ``before`` is the fp32 ONNX model, ``after`` the quantized one, and both carry
accuracy, size and latency next to the run's torch fp32 baseline.

Methods (``[quantize] method``):

* ``dynamic``: weights INT8 ahead of time, activations quantized on the fly per batch. No
  calibration data. Quantizes MatMul (Linear layers, attention projections) only: ConvInteger,
  the dynamic form of Conv, is slower than fp32 Conv in onnxruntime on x86, so CNNs should use
  ``static``.
* ``static``: QDQ format (QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer
  kernels), activation ranges calibrated on ``calibration_samples`` train-split samples seen
  through the *eval* transforms (no augmentation: calibrate on what inference sees), with
  MinMax / Entropy / Percentile calibration and optional per-channel weights.
* ``fp16``: float16 weights and compute for GPU targets (CUDA/TensorRT). Measured honestly here;
  on a CPU it is usually *slower* (most CPU kernels are fp32, so onnxruntime inserts casts).
* ``torch_dynamic``: PyTorch-side INT8 Linear layers (``quantize_torch_dynamic``), for
  Linear-heavy models that stay in PyTorch.

Every file first goes through ``quant_pre_process`` (symbolic shape inference + onnxruntime's
basic graph optimizations) when ``preprocess = true``: quantizing an unoptimized graph puts Q/DQ
pairs around ops that would have been folded away.

Accuracy-aware mode (``max_accuracy_drop > 0``): when the quantized model loses more than that many
points on the *validation* split (choices are made there; the record's before/after accuracy is on
the eval split, which the choice never saw), ``layer_sensitivity`` runs the float and the quantized model side by side with every
weighted layer's output exposed and ranks layers by the error each one *adds* (error at its
output minus error at its input), then the most sensitive layers are kept in float
(``nodes_to_exclude``), doubling their count until the budget is met. The record lists which
layers stayed float, by ONNX node and PyTorch module name. ``quantize.exclude`` takes PyTorch
module names; ``nodes_for_modules`` maps them onto ONNX nodes through the dynamo exporter's
``pkg.torch.onnx.name_scopes`` metadata (with a parameter-name fallback for folded Conv+BN).
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.core.budget import over_budget, within_budget
from workbench.core.events import CancelToken, Reporter, suppress_warnings
from workbench.core.isolate import ChildProcessDied, run_in_child
from workbench.core.measure.feeds import onnx_input_specs
from workbench.core.models.loaders import onnx_input_name, read_onnx
from workbench.errors import Cancelled, WorkbenchError
from workbench.techniques.quantize.child_steps import (
    BatchCalibrationReader,
    fp16_convert_file,
    preprocess_file,
    static_quantize_file,
    transformer_optimize_file,
)
from workbench.techniques.quantize.layers import layer_sensitivity, nodes_for_modules

__all__ = [
    "BatchCalibrationReader",
    "QuantizeOutcome",
    "calibration_batches",
    "checked_onnx",
    "convert_fp16",
    "cpu_has_vnni",
    "int8_speed_note",
    "optimize_transformer_onnx",
    "preprocess_onnx",
    "quantize_dynamic_onnx",
    "quantize_onnx",
    "quantize_static_onnx",
    "quantize_torch_dynamic",
    "quantize_with_budget",
]

#: Dynamic quantization: MatMul and Conv (onnxruntime has no dynamic Gemm), and Gather over constant
#: tables: a transformer's word embedding is most of its file (a 30k x 384 table is 47 MB in fp32 and
#: 12 MB in INT8) and a lookup of a quantized row costs nothing measurable. ConvInteger is slow on x86:
#: a model with MatMuls of its own (not only Linear heads) keeps its convolutions float (the profile of the zoo Transformer showed its
#: patch-embedding ConvInteger 9x slower than the float Conv at batch 64, 7 % of the whole model's time);
#: a pure CNN still gets them quantized, for a smaller file, and the stage note says to use static.
DYNAMIC_OPS = ("MatMul", "Conv", "Gather")
#: Static QDQ: the compute ops plus the data-movement ops between them, so Q/DQ pairs cancel out
#: and onnxruntime can keep tensors INT8 from one quantized op to the next.
STATIC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Relu", "Clip", "MaxPool", "AveragePool",
              "GlobalAveragePool", "Add", "Mul", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
              "Concat", "Resize", "Gather", "Slice", "Split")

#: Static QDQ for models with several inputs (transformers): the weighted ops only. Their attention masks
#: add -inf (or -1e4) to the scores; a Q/DQ pair on that Add's range (scale inf, or 1e4 / 255 per step)
#: wipes out the scores themselves (measured: cosine -0.98 against the float model with
#: nn.MultiheadAttention), while MatMul and Gather inputs and weights stay in sane ranges.
STATIC_TOKEN_OPS = ("MatMul", "Gemm", "Gather", "Conv")

_CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


# ------------------------------------------------------------------------------------------ cpu


def cpu_has_vnni() -> bool | None:
    """True when the CPU has an INT8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8).

    Without one, x86 INT8 GEMMs emulate the dot product with three instructions and are often no
    faster than fp32. ``None`` when unknown (see ``engine.hardware``).
    """
    from workbench.core.hardware import cpu_capabilities

    return cpu_capabilities().int8_dot_product


def int8_speed_note(before: dict[str, Any], after: dict[str, Any], method: str) -> str:
    """A sentence for the stage record when the quantized model is not faster than float (else '').

    Compares latency at the first batch size and the best throughput; names the likely reason.
    """
    b_lat, a_lat = before.get("latency_ms_p50"), after.get("latency_ms_p50")
    b_thr, a_thr = before.get("throughput"), after.get("throughput")
    slower: list[str] = []
    if b_lat and a_lat and a_lat > b_lat * 1.02:
        slower.append(f"latency {a_lat / b_lat:.2f}x of float at batch {after.get('latency_batch', '?')}")
    if b_thr and a_thr and a_thr < b_thr * 0.98:
        slower.append(f"throughput {a_thr / b_thr:.2f}x of float at batch {after.get('throughput_batch', '?')}")
    if not slower:
        return ""
    label = {"fp16": "fp16"}.get(method, "INT8")
    if method == "fp16":
        return (f"{label} is slower than fp32 here ({'; '.join(slower)}): fp16 is meant for GPUs (CUDA/TensorRT); "
                "CPU kernels are mostly fp32, so onnxruntime adds casts around them")
    reasons: list[str] = []
    vnni = cpu_has_vnni()
    if vnni is False:
        reasons.append("this CPU has no VNNI (INT8 dot products are emulated, often no faster than fp32)")
    if method == "dynamic":
        reasons.append("dynamic quantization re-quantizes activations on every call and runs Conv as ConvInteger, "
                       "which has no fast x86 kernel in onnxruntime; use method = 'static' (QDQ) for CNNs")
    else:
        reasons.append("small layers at batch 1 are memory/overhead-bound, so Q/DQ conversions between "
                       "quantized and float ops dominate (unfused Q/DQ)")
    if method == "torch_dynamic":
        reasons = ["PyTorch dynamic INT8 only speeds up large Linear layers; convolutions stay fp32"]
    if vnni:
        reasons.append("this CPU has VNNI, so INT8 compute itself is fast")
    return f"{label} is slower than fp32 ({'; '.join(slower)}); likely: {'; '.join(reasons)}"


# ------------------------------------------------------------------------------------- files


def checked_onnx(path: str | Path) -> Any:
    """Load an ONNX graph (no weights yet) after the loaders' safety checks.

    Refuses missing, empty, non-regular, truncated or non-ONNX files and external data that points
    outside the model's folder, each with a one-line ``ModelLoadError`` (``models.loaders.checked_onnx``).
    """
    from workbench.core.models.loaders import checked_onnx as _checked

    return _checked(path)


def preprocess_onnx(src: Path, dst: Path, reporter: Reporter | None = None,
                    cancel: CancelToken | None = None) -> Path:
    """``quant_pre_process``: symbolic shape inference + basic graph optimization, into ``dst``.

    Returns ``dst``, or ``src`` itself when pre-processing fails (logged as a warning): quantizing
    the unprocessed graph still works, it only leaves more Q/DQ pairs. A graph whose only symbolic
    dimension is the batch is pre-processed in-process without the symbolic pass (ONNX's shape
    inference sees every shape). Any other graph runs in a child process whose working directory is a
    temporary folder that is removed afterwards: onnxruntime's symbolic shape inference drops
    ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` copy of the weights in the current directory
    when it gives up on a graph (transformers with symbolic sequence axes); measured, the child costs
    about 5 s of imports per call, the in-process path milliseconds.
    """
    import tempfile

    try:
        if _only_batch_is_symbolic(src):
            # Fixed shapes but the batch: ONNX's own shape inference sees them all, so the symbolic pass
            # (the one that litters the cwd) is not needed, and in-process it costs milliseconds instead
            # of a child's seconds of imports.
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
            return dst
        with tempfile.TemporaryDirectory(prefix="wb-preprocess-") as work:
            run_in_child(preprocess_file, str(Path(src).resolve()), str(Path(dst).resolve()), work, cancel=cancel,
                         what=f"quantization pre-processing of {Path(src).name}")
        return dst
    except Cancelled:
        raise
    except Exception as exc:  # symbolic shape inference and the optimizer give up on some graphs
        Path(dst).unlink(missing_ok=True)
        if reporter is not None:
            reporter.log(f"quantization pre-processing skipped ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})", "warning")
        return src


def _only_batch_is_symbolic(path: Path) -> bool:
    """Every graph input has fixed dimensions except the first (the batch): an image or table model."""
    graph = read_onnx(path).graph
    initializers = {i.name for i in graph.initializer}
    for inp in graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in list(dims)[1:]):
            return False
    return True


def optimize_transformer_onnx(src: Path, dst: Path, cancel: CancelToken | None = None) -> list[str]:
    """onnxruntime's transformer optimizer (BERT-style fusions) of ``src`` into ``dst``; the fused op types.

    An option, not a default: the fused graph is faster on some models and CPUs and not on others,
    so ``workbench quantize --transformer-optimizer --bench`` times it paired against the plain one.
    Runs in a child process with a temporary working folder (symbolic shape inference inside it can
    drop files in the current directory).
    """
    import tempfile

    checked_onnx(src)
    try:
        with tempfile.TemporaryDirectory(prefix="wb-optimize-") as work:
            return run_in_child(transformer_optimize_file, str(Path(src).resolve()), str(Path(dst).resolve()),
                                "bert", work, cancel=cancel,
                                what=f"transformer graph optimization of {Path(src).name}")
    except (Cancelled, WorkbenchError):
        Path(dst).unlink(missing_ok=True)
        raise
    except Exception as exc:
        Path(dst).unlink(missing_ok=True)
        raise WorkbenchError(f"transformer graph optimizer failed on {Path(src).name}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}; run without "
                             "--transformer-optimizer") from None


def _ops_present(model: Any, ops: Sequence[str]) -> list[str]:
    present = {n.op_type for n in model.graph.node}
    return [op for op in ops if op in present]


# -------------------------------------------------------------------------------- calibration


def calibration_batches(train: Any, eval_: Any | None, samples: int, batch_size: int = 32,
                        seed: int = 0) -> list[np.ndarray]:
    """Up to ``samples`` train-split inputs seen through the EVAL transforms, as float32 batches (int64 for
    integer inputs such as stacked token arrays).

    Calibration must see what inference sees: the train transform's random crops and flips would
    widen activation ranges for nothing. The train dataset is shallow-copied and given the eval
    dataset's ``transform`` (datasets without one, e.g. tabular, are used as they are). Samples are
    a seeded random subset so calibration does not only see the first classes of a sorted folder.
    """
    ds = copy.copy(train)
    if eval_ is not None and hasattr(ds, "transform") and hasattr(eval_, "transform"):
        ds.transform = eval_.transform
    n = len(ds)
    if n == 0:
        raise WorkbenchError("calibration needs training samples, and the train split is empty")
    idx = np.random.default_rng(seed).permutation(n)[: min(samples, n)]
    out: list[np.ndarray] = []
    for start in range(0, len(idx), batch_size):
        xs = torch.stack([torch.as_tensor(ds[int(i)][0]) for i in idx[start:start + batch_size]])
        # token ids stay integers (a float id means nothing to an embedding); everything else is float32
        out.append(xs.long().numpy() if not xs.is_floating_point() else xs.float().numpy())
    return out


def synthetic_batches(input_shape: Sequence[int], samples: int = 64, batch_size: int = 32,
                      seed: int = 0) -> list[np.ndarray]:
    """Standard-normal calibration batches for a model with no data (ranges will be rough)."""
    rng = np.random.default_rng(seed)
    out = []
    left = samples
    while left > 0:
        b = min(batch_size, left)
        out.append(rng.standard_normal((b, *input_shape), dtype=np.float32))
        left -= b
    return out


# ----------------------------------------------------------------------------- quantizers


def quantize_dynamic_onnx(src: Path, dst: Path, *, per_channel: bool = True,
                          nodes_to_exclude: Sequence[str] = (), reduce_range: bool = False) -> Path:
    """onnxruntime dynamic INT8 (MatMulInteger/ConvInteger); Gemms become MatMul first; weights signed INT8."""

    import onnx

    model = checked_onnx(src)
    attention_like = any(n.op_type == "MatMul" for n in model.graph.node)  # before Gemms become MatMuls
    if _gemm_to_matmul(model):
        model = read_onnx(src, external_data=True)
        _gemm_to_matmul(model)
        src = dst.with_name(dst.stem + ".matmul.onnx")
        onnx.save(model, str(src))
    ops = _ops_present(model, DYNAMIC_OPS)
    if attention_like and "Conv" in ops:
        ops.remove("Conv")  # ConvInteger would slow a MatMul model down (see DYNAMIC_OPS)
    if not ops:
        raise WorkbenchError(f"{src.name}: dynamic INT8 quantizes MatMul (Linear) and Conv layers and this model has "
                             "none; use method = 'static'")
    try:
        _quantize_dynamic(src, dst, ops, per_channel, nodes_to_exclude, reduce_range)
    finally:
        if src.name.endswith(".matmul.onnx"):
            src.unlink(missing_ok=True)
    return dst


def _gemm_to_matmul(model: Any) -> int:
    """Rewrite ``Gemm(A, W, b)`` with a constant ``W`` as ``MatMul(A, W') + b`` in place; returns the count.

    Why: onnxruntime has no dynamic INT8 Gemm, and the exporter writes every 2-D ``nn.Linear``
    (MLP layers, classifier heads, attention output projections) as Gemm, so without this dynamic
    quantization would skip exactly the layers it is for. The MatMul keeps the Gemm's node name
    and metadata (module mapping and ``nodes_to_exclude`` still apply); the Add writes the Gemm's
    output tensor. Only plain Gemms (alpha = beta = 1, no transA) are rewritten.
    """
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    new_nodes = []
    count = 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in inits
                 and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0))
        if not plain:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = np.ascontiguousarray(w.T)
        w_name = f"{node.input[1]}__matmul_{count}"
        model.graph.initializer.append(numpy_helper.from_array(w, w_name))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}__matmul" if has_bias else node.output[0]
        mm = helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=node.name)
        mm.metadata_props.extend(node.metadata_props)
        new_nodes.append(mm)
        if has_bias:
            add = helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}__bias")
            add.metadata_props.extend(node.metadata_props)
            new_nodes.append(add)
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        used = {i for n in model.graph.node for i in n.input}
        keep = [t for t in model.graph.initializer if t.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return count


def _quantize_dynamic(src: Path, dst: Path, ops: list[str], per_channel: bool, nodes_to_exclude: Sequence[str],
                      reduce_range: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), op_types_to_quantize=ops, per_channel=per_channel,
                     reduce_range=reduce_range, weight_type=QuantType.QInt8,
                     nodes_to_exclude=list(nodes_to_exclude), extra_options={"MatMulConstBOnly": True})


def quantize_static_onnx(src: Path, dst: Path, batches: Sequence[Any], *, per_channel: bool = True,
                         calibration: str = "minmax", nodes_to_exclude: Sequence[str] = (),
                         reduce_range: bool = False, cancel: CancelToken | None = None) -> Path:
    """onnxruntime static INT8 in QDQ format, activations U8/S8 weights, calibrated on ``batches``.

    A batch is one array (single-input models) or a dict of named arrays in their own dtypes
    (several inputs: a transformer's int64 ids and mask are fed as int64).
    QDQ (not QOperator) because onnxruntime fuses QDQ groups into the same integer kernels on x86
    and the file stays portable to other execution providers (TensorRT reads QDQ, not QOperator).
    Calibration is one long native call that never checks ``cancel``, so it runs in a child process
    that is killed when ``cancel`` is set (``isolate.run_in_child``), with a temporary working folder
    (removed afterwards) for whatever onnxruntime's tools drop in the current directory.
    """
    import tempfile

    if calibration not in _CALIBRATION_METHODS:
        raise WorkbenchError(f"calibration = {calibration!r}: expected one of {', '.join(_CALIBRATION_METHODS)}")
    if not batches:
        raise WorkbenchError("static INT8 needs calibration data; none was given")
    model = checked_onnx(src)
    stacked = _stacked_names(model)
    if stacked and not any(isinstance(b, dict) for b in batches):  # a token run's [batch, inputs, seq] arrays
        graph = {s.name for s in onnx_input_specs(model)}
        batches = [{n: np.ascontiguousarray(b[:, i]) for i, n in enumerate(stacked) if n in graph} for b in batches]
    named = all(isinstance(b, dict) for b in batches)
    if named:
        specs = onnx_input_specs(model)
        missing = [s.name for s in specs if s.name not in batches[0]]
        if missing:
            raise WorkbenchError(f"static INT8 of {Path(src).name}: calibration batches lack input(s) "
                                 f"{', '.join(missing)}; give every input: {', '.join(s.name for s in specs)}")
    input_name = None if named else onnx_input_name(model)
    ops = _ops_present(model, STATIC_TOKEN_OPS if len(onnx_input_specs(model)) > 1 else STATIC_OPS)
    extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if calibration == "percentile":
        extra["CalibPercentile"] = 99.99
    with tempfile.TemporaryDirectory(prefix="wb-calibrate-") as work:
        run_in_child(static_quantize_file, str(Path(src).resolve()), str(Path(dst).resolve()), input_name,
                     list(batches),
                     ops=ops, per_channel=per_channel, calibration=calibration,
                     nodes_to_exclude=list(nodes_to_exclude), reduce_range=reduce_range, extra=extra,
                     workdir=work, cancel=cancel, what=f"static INT8 calibration of {Path(src).name}")
    return dst


def _stacked_names(model: Any) -> list[str]:
    """The order of a stacked token batch recorded by a token run's export (empty for other models)."""
    from workbench.core.models.token_inputs import STACKED_INPUTS_KEY

    value = next((p.value for p in model.metadata_props if p.key == STACKED_INPUTS_KEY), "")
    return [n for n in value.split(",") if n]


def _keep_metadata(src: Path, dst: Path) -> None:
    """Carry the float model's metadata (e.g. the stacked token-input order) over to the quantized file.

    Pre-processing saves through an onnxruntime session, which drops model-level metadata.
    """
    import onnx

    have = checked_onnx(src).metadata_props
    if not have:
        return
    out = read_onnx(dst)  # protobuf only: external data references stay as they are, in the same folder
    missing = [p for p in have if p.key not in {q.key for q in out.metadata_props}]
    if missing:
        for p in missing:
            entry = out.metadata_props.add()
            entry.key, entry.value = p.key, p.value
        onnx.save(out, str(dst))


def convert_fp16(src: Path, dst: Path, cancel: CancelToken | None = None) -> Path:
    """float16 weights and compute, keeping float32 inputs/outputs (callers feed float32 as before).

    Meant for GPU execution providers; on CPU onnxruntime runs most ops via inserted casts.
    Transpose stays fp32: with fp16 Transposes, onnxruntime 1.32's CPU session *segfaults* at
    optimization level "all" (the transpose optimizer; seen on the zoo transformer). Because a
    crash would take the whole app down, the conversion runs in a child process that also opens
    the result once; the file is refused with an error if that child dies. The child is killed
    when ``cancel`` is set (the conversion never checks it).
    """
    checked_onnx(src)
    try:
        run_in_child(fp16_convert_file, str(src), str(dst), ["Transpose"], cancel=cancel,
                     what=f"fp16 conversion of {Path(src).name}")
    except ChildProcessDied as exc:
        dst.unlink(missing_ok=True)
        raise WorkbenchError(f"fp16 conversion of {src.name}: onnxruntime cannot open the result on this machine "
                             f"({exc.how}); fp16 is meant for GPU providers, keep fp32 or INT8 here") from None
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    return dst


def quantize_torch_dynamic(module: nn.Module) -> nn.Module:
    """PyTorch-side dynamic INT8 for ``nn.Linear`` layers (a quantized copy; the input is untouched).

    Why ``torch.ao.quantization.quantize_dynamic`` and not torchao: torchao 0.18 imports with torch
    2.13 CPU, but its ``Int8DynamicActivationInt8WeightConfig`` was ~3.4x *slower* than fp32 in
    eager mode here (it needs ``torch.compile`` to generate fused int8 kernels), while
    ``torch.ao``'s fbgemm kernels were ~2.5x faster than fp32 on the same Linear stack, and torchao
    would be one more large dependency. ``torch.ao.quantization`` is deprecated and slated for
    removal; when it goes, switch this one function to torchao's ``quantize_`` + ``torch.compile``.
    Only Linear layers are quantized (convolutions stay fp32); CPU only.
    """
    q = copy.deepcopy(module).cpu().eval()
    with suppress_warnings(DeprecationWarning, UserWarning):  # thread-safe: filters stay as they are
        q = torch.ao.quantization.quantize_dynamic(q, {nn.Linear}, dtype=torch.qint8)
    for m in q.modules():
        if isinstance(m, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
            # Its inference fast path reads ``linear1.weight`` as a tensor; on a quantized Linear that is a
            # method and forward crashes. Any hook on the layer disables the fast path (per-module, not global).
            m.register_forward_pre_hook(_no_op_hook)
    return q


# ----------------------------------------------------------------------------- orchestration


@dataclass
class QuantizeOutcome:
    """What ``quantize_onnx`` / ``quantize_with_budget`` produced; ``to_dict`` goes into the stage record."""

    method: str
    path: Path
    float_path: Path
    format: str
    preprocessed: bool
    excluded_nodes: list[str] = field(default_factory=list)
    excluded_modules: dict[str, list[str]] = field(default_factory=dict)
    kept_float: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    accuracy: float | None = None  # on ``split``, the data the fallback chose on
    split: str = "validation"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"], d["float_path"] = str(self.path), str(self.float_path)
        d["sensitivity"] = self.sensitivity[:20]
        return d


def quantize_onnx(src: str | Path, dst: str | Path, *, method: str = "dynamic", per_channel: bool = True,
                  calibration: str = "minmax", batches: Sequence[np.ndarray] | None = None,
                  preprocess: bool = True, exclude_modules: Sequence[str] = (),
                  nodes_to_exclude: Sequence[str] = (), reduce_range: bool = False,
                  reporter: Reporter | None = None, cancel: CancelToken | None = None) -> QuantizeOutcome:
    """Quantize one ONNX file (``method`` dynamic/static/fp16) into ``dst``; no accuracy loop.

    The pre-processed float model is kept next to ``dst`` as ``<stem>.pre.onnx`` (the sensitivity
    analysis compares against it). ``exclude_modules`` are PyTorch module names kept in float.
    """
    src, dst = Path(src), Path(dst)
    model = checked_onnx(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    float_path = src
    if preprocess and method in ("dynamic", "static"):
        float_path = preprocess_onnx(src, dst.with_name(dst.stem + ".pre.onnx"), reporter, cancel)
    if float_path != src:
        model = checked_onnx(float_path)
    excluded_modules = nodes_for_modules(model, exclude_modules) if exclude_modules else {}
    nodes = list(dict.fromkeys([*nodes_to_exclude, *(n for ns in excluded_modules.values() for n in ns)]))
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        if method == "dynamic":
            quantize_dynamic_onnx(float_path, tmp, per_channel=per_channel, nodes_to_exclude=nodes,
                                  reduce_range=reduce_range)
            fmt = "QOperator (dynamic, MatMulInteger)"
        elif method == "static":
            if batches is None:
                raise WorkbenchError("static INT8 needs calibration batches")
            quantize_static_onnx(float_path, tmp, batches, per_channel=per_channel, calibration=calibration,
                                 nodes_to_exclude=nodes, reduce_range=reduce_range, cancel=cancel)
            fmt = "QDQ"
        elif method == "fp16":
            convert_fp16(float_path, tmp, cancel)
            fmt = "float16"
            notes.append("fp16 targets GPUs (CUDA/TensorRT); CPU figures are shown for honesty, not as a goal")
        else:
            raise WorkbenchError(f"quantize method {method!r}: expected dynamic, static or fp16 for ONNX files")
        _keep_metadata(src, tmp)
        tmp.replace(dst)
    except (WorkbenchError, Cancelled):
        raise
    except Exception as exc:
        raise WorkbenchError(f"{method} quantization of {src.name} failed: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return QuantizeOutcome(method, dst, float_path, fmt, float_path != src, nodes, excluded_modules, notes=notes)


def quantize_with_budget(src: str | Path, dst: str | Path, *, method: str, evaluate: Callable[[Path], float],
                         float_accuracy: float, max_accuracy_drop: float, per_channel: bool = True,
                         calibration: str = "minmax", batches: Sequence[np.ndarray] | None = None,
                         preprocess: bool = True, exclude_modules: Sequence[str] = (),
                         sensitivity_batches: int = 2, max_attempts: int = 5, split: str = "validation",
                         reporter: Reporter | None = None, cancel: CancelToken | None = None) -> QuantizeOutcome:
    """``quantize_onnx``, then (if ``max_accuracy_drop > 0`` and the drop is larger) keep layers float.

    ``evaluate(path) -> accuracy`` (0..1) scores a candidate file on ``split`` (the validation split:
    never the one the result is reported on) and ``float_accuracy`` is the float model's accuracy on
    that same split; drops are in points (0..100).
    Attempts keep the top 1, 2, 4, ... most sensitive layers in float, at most ``max_attempts``
    times; the best attempt is kept even when none meets the budget (the record says so).
    """
    dst = Path(dst)
    kw: dict[str, Any] = dict(method=method, per_channel=per_channel, calibration=calibration, batches=batches,
                              exclude_modules=exclude_modules)
    out = quantize_onnx(src, dst, preprocess=preprocess, reporter=reporter, cancel=cancel, **kw)
    out.split = split
    out.accuracy = evaluate(dst)
    drop = (float_accuracy - out.accuracy) * 100
    out.attempts.append({"kept_float": 0, "accuracy": out.accuracy, "drop_points": drop})
    if max_accuracy_drop <= 0 or within_budget(drop, max_accuracy_drop) or method not in ("dynamic", "static"):
        return out
    if reporter is not None:
        reporter.log(f"quantized {split} accuracy drop {drop:.2f} pts > budget {max_accuracy_drop:g}; "
                     "ranking layer sensitivity")
    sens_batches = list(batches[:sensitivity_batches]) if batches else []
    if not sens_batches:
        raise WorkbenchError("accuracy-aware quantization needs calibration/eval batches for the sensitivity run")
    sens = layer_sensitivity(out.float_path, dst, sens_batches)
    out.sensitivity = [s.to_dict() for s in sens]
    ranked = [s for s in sens if s.node not in out.excluded_nodes]
    best = (drop, out.accuracy, 0)
    k = 1
    attempt_path = dst.with_name(dst.stem + ".attempt.onnx")
    best_path = dst.with_name(dst.stem + ".best.onnx")
    shutil.copyfile(dst, best_path)
    try:
        for _ in range(max_attempts):
            if not ranked or k > len(ranked) * 2:
                break
            if cancel is not None:
                cancel.raise_if_cancelled()
            keep = ranked[: min(k, len(ranked))]
            nodes = [*out.excluded_nodes, *(s.node for s in keep)]
            quantize_onnx(out.float_path, attempt_path, preprocess=False, nodes_to_exclude=nodes, cancel=cancel, **kw)
            acc = evaluate(attempt_path)
            d = (float_accuracy - acc) * 100
            out.attempts.append({"kept_float": len(keep), "accuracy": acc, "drop_points": d,
                                 "nodes": [s.node for s in keep]})
            if reporter is not None:
                reporter.log(f"keeping {len(keep)} layer(s) float: {split} accuracy {acc:.4f} (drop {d:.2f} pts)")
            if d < best[0]:
                best = (d, acc, len(keep))
                shutil.copyfile(attempt_path, best_path)
            if within_budget(d, max_accuracy_drop) or len(keep) == len(ranked):
                break
            k *= 2
    finally:
        attempt_path.unlink(missing_ok=True)
    best_path.replace(dst)
    kept = ranked[: best[2]]
    out.accuracy = best[1]
    out.kept_float = [s.to_dict() for s in kept]
    out.excluded_nodes = [*out.excluded_nodes, *(s.node for s in kept)]
    if over_budget(best[0], max_accuracy_drop):
        out.notes.append(f"accuracy budget {max_accuracy_drop:g} pts not met on the {split} split: best drop "
                         f"{best[0]:.2f} pts with {best[2]} layer(s) kept float")
    elif kept:
        out.notes.append(f"kept {len(kept)} layer(s) in float to stay within {max_accuracy_drop:g} pts "
                         f"on the {split} split: "
                         + ", ".join(s.module or s.node for s in kept))
    return out


# ------------------------------------------------------------------------------------- stage


def _no_op_hook(module: nn.Module, args: Any) -> None:
    return None
