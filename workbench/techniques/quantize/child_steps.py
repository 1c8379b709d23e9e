"""ONNX file transforms that run in a killable child process (``isolate.run_in_child``).

Static INT8 calibration and the fp16 graph conversion are long native calls that never look at a
cancel token; ``engine.quantize`` runs them through ``run_in_child`` so Stop kills them at once. This
module is what the child imports, so it stays light: onnx and onnxruntime only, no torch (the child
then starts in about a second instead of several). Validation and messages stay in ``quantize``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class BatchCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over a list of ready batches.

    A batch is one array (single-input models; float inputs are fed as float32) or a dict of named
    arrays, each kept in its own dtype (a transformer's int64 ids and mask stay int64: casting them
    to float fails in onnxruntime with "Unexpected input data type"). Subclassing is not needed:
    onnxruntime checks for ``get_next`` (``__subclasshook__``).
    """

    def __init__(self, input_name: str | None, batches: Sequence[Any]) -> None:
        self.input_name = input_name
        self.batches = [self._feed(b) for b in batches]
        self._it: Iterator[dict[str, np.ndarray]] = iter(self.batches)

    def _feed(self, batch: Any) -> dict[str, np.ndarray]:
        if isinstance(batch, dict):
            return {k: np.ascontiguousarray(v) for k, v in batch.items()}
        if self.input_name is None:
            raise ValueError("a single-array calibration batch needs the model's input name")
        a = np.asarray(batch)
        return {self.input_name: np.ascontiguousarray(a, dtype=np.float32 if a.dtype.kind == "f" else a.dtype)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.batches)


def _in_folder(workdir: str | None) -> None:
    """chdir into ``workdir`` for the rest of this (child) process: onnxruntime's tools drop files in the cwd.

    Symbolic shape inference writes ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` beside it into
    the current directory when it cannot infer every shape. Only ever called in a child process:
    the working directory is process-wide.
    """
    if workdir:
        os.chdir(workdir)


def preprocess_file(src: str, dst: str, workdir: str | None = None) -> bool:
    """``quant_pre_process`` of ``src`` into ``dst``; True when symbolic shape inference was used.

    Falls back to no symbolic shape inference when it gives up on the graph; raises when both fail.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _in_folder(workdir)  # src and dst are absolute paths (the caller resolved them in its own cwd)
    try:
        quant_pre_process(src, dst, skip_symbolic_shape=False)
        return True
    except Exception:
        quant_pre_process(src, dst, skip_symbolic_shape=True)
        return False


def transformer_optimize_file(src: str, dst: str, model_type: str = "bert", workdir: str | None = None) -> list[str]:
    """onnxruntime's transformer graph optimizer (attention, LayerNorm, GELU and embedding fusions) of
    ``src`` into ``dst``, CPU kernels only; returns the fused op types it produced."""
    from onnxruntime.transformers.optimizer import optimize_model

    _in_folder(workdir)
    opt = optimize_model(src, model_type=model_type, num_heads=0, hidden_size=0, opt_level=0, use_gpu=False)
    opt.save_model_to_file(dst)
    return sorted({n.op_type for n in opt.model.graph.node if n.domain == "com.microsoft"})


def static_quantize_file(src: str, dst: str, input_name: str | None, batches: Sequence[Any], *,
                         ops: Sequence[str], per_channel: bool, calibration: str,
                         nodes_to_exclude: Sequence[str], reduce_range: bool, extra: dict[str, Any],
                         workdir: str | None = None) -> str:
    """onnxruntime ``quantize_static`` (QDQ, activations U8, weights S8) of ``src`` into ``dst``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    _in_folder(workdir)  # src and dst are absolute paths (the caller resolved them in its own cwd)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration]
    quantize_static(src, dst, BatchCalibrationReader(input_name, batches), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(ops), per_channel=per_channel, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(nodes_to_exclude), calibrate_method=method, extra_options=extra)
    return dst


def fp16_convert_file(src: str, dst: str, keep_fp32_ops: Sequence[str]) -> str:
    """float16 weights and compute with float32 inputs/outputs, then open the result once.

    Opening it here, in the child, is the crash test: onnxruntime has segfaulted on some fp16 graphs
    at optimization level "all"; a crash kills this child, not the app. The graph is read through the
    one model-file door (``models.loaders.read_onnx``), which keeps external data inside its folder.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from workbench.core.models.loaders import read_onnx

    converted = convert_float_to_float16(read_onnx(src, external_data=True), keep_io_types=True,
                                         op_block_list=[*DEFAULT_OP_BLOCK_LIST, *keep_fp32_ops])
    onnx.save(converted, dst)
    ort.InferenceSession(str(Path(dst)), providers=["CPUExecutionProvider"])
    return dst
