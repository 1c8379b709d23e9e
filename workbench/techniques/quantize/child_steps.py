"""ONNX file transforms that run in a killable child process (``isolate.run_in_child``).

Static INT8 calibration and the fp16 graph conversion are long native calls that never look at a
cancel token; ``engine.quantize`` runs them through ``run_in_child`` so Stop kills them at once. This
module is what the child imports, so it stays light: onnx and onnxruntime only, no torch (the child
then starts in about a second instead of several). Validation and messages stay in ``quantize``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class BatchCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over a list of ready batches (numpy, float32).

    Subclassing is not needed: onnxruntime checks for ``get_next`` (``__subclasshook__``).
    """

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        self._it: Iterator[np.ndarray] = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter({self.input_name: b} for b in self.batches)


def static_quantize_file(src: str, dst: str, input_name: str, batches: Sequence[np.ndarray], *,
                         ops: Sequence[str], per_channel: bool, calibration: str,
                         nodes_to_exclude: Sequence[str], reduce_range: bool, extra: dict[str, Any]) -> str:
    """onnxruntime ``quantize_static`` (QDQ, activations U8, weights S8) of ``src`` into ``dst``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

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
