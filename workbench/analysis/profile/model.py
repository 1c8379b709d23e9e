"""What a per-layer profile holds: one row per layer (torch) or executed node (ONNX), plus totals.

Plain dataclasses that round-trip through JSON, so a profile can be stored with a run, read back
by the report and the GUI, and built by hand in tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["COMPUTE_OPS", "INT8_OPS", "OTHER", "QDQ_OPS", "LayerProfile", "Profile"]

#: The layer key for work outside every submodule (functional ops in a container's or the model's forward).
OTHER = "(other)"

#: Ops that do a layer's matrix work; the ones whose precision decides whether INT8 pays off.
COMPUTE_OPS = frozenset({
    "Conv", "FusedConv", "ConvTranspose", "Gemm", "MatMul", "FusedMatMul", "FusedGemm", "Attention",
    "QLinearConv", "ConvInteger", "MatMulInteger", "QGemm", "QLinearMatMul", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "QAttention",
    # torch module types
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "Linear", "MultiheadAttention",
    "DynamicQuantizedLinear", "QuantizedLinear", "QuantizedConv2d", "LinearPackedParams",
})
#: Ops that run integer kernels (or convert to/from them): their precision is int8 whatever their inputs.
INT8_OPS = frozenset({
    "QLinearConv", "ConvInteger", "MatMulInteger", "QGemm", "QLinearMatMul", "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention", "QLinearAdd", "QLinearMul",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearSoftmax", "QuantizeLinear", "DequantizeLinear",
})
#: The conversions around INT8 islands; time spent here is overhead, not layer work.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


@dataclass
class LayerProfile:
    """One row: a torch leaf module, or one node onnxruntime executed.

    ``layer`` is the key rows are matched on across profiles (the torch module path; for ONNX the
    module the node came from); ``fused`` lists layers whose work runs inside this row.
    """

    name: str
    layer: str
    op: str
    time_ms: float
    share: float
    macs: int | None = None
    params: int | None = None
    output_shape: list[int] | str | None = None
    precision: str = "float"
    kernels: list[str] = field(default_factory=list)
    executed: bool = True
    fused: list[str] = field(default_factory=list)
    weight_bytes: int | None = None
    activation_bytes: int | None = None
    calls: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerProfile:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Profile:
    """A model's per-layer time at one batch size on one runtime (times are per forward call)."""

    source: str
    kind: str  # "torch" | "onnx"
    runtime: str
    batch: int
    total_ms: float
    threads: int
    iters: int
    input_shape: list[int] = field(default_factory=list)
    layers: list[LayerProfile] = field(default_factory=list)
    #: layers in the model that never ran (constant-folded, eliminated, or an unused module)
    not_executed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def precisions(self) -> set[str]:
        """Precisions of the compute rows (e.g. {"int8", "float"} for a partly quantized model)."""
        return {r.precision for r in self.layers if r.op in COMPUTE_OPS and r.executed}

    def top(self, k: int) -> list[LayerProfile]:
        return sorted(self.layers, key=lambda r: r.time_ms, reverse=True)[:k]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [r.to_dict() for r in self.layers]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "layers"}
        return cls(**known, layers=[LayerProfile.from_dict(r) for r in data.get("layers") or []])
