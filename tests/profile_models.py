"""A tiny conv model and its fp32 / INT8 ONNX files, shared by the per-layer profile tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_SHAPE = (3, 16, 16)


class TinyNet(nn.Module):
    """Conv-BN-ReLU, pooling and a classifier, plus a head that forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 10)
        self.unused = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.conv2(self.relu(self.bn(self.conv(x)))))))


def tiny_model() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


def tiny_onnx_pair(folder: Path) -> tuple[Path, Path]:
    """fp32 ONNX (the project's exporter) and its static INT8 (QDQ) version, quantized right here."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from workbench.core.onnx_export import export_onnx

    fp32 = export_onnx(tiny_model(), INPUT_SHAPE, folder / "tiny-fp32.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((4, *INPUT_SHAPE)).astype(np.float32)}
                                 for _ in range(2)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    int8 = folder / "tiny-int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return fp32, int8
