"""Per-layer profiles (torch.profiler, onnxruntime), the per-layer diff and the verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.profile_models import INPUT_SHAPE, tiny_model, tiny_onnx_pair
from workbench.analysis.profile import LayerProfile, Profile, diff_profiles, profile_module, profile_onnx
from workbench.analysis.profile.onnx_profile import base_op, layer_from_node_name, strip_node_suffixes
from workbench.analysis.profile.verdicts import (
    collect_verdicts,
    cpu_features_verdict,
    float_layers_verdict,
    gpu_clock_verdict,
    gpu_clocks,
    memory_bound_verdict,
    qdq_verdict,
    threads_verdict,
)
from workbench.core.hardware import CpuCapabilities


def _row(layer: str, op: str, ms: float, precision: str = "float", **kw: Any) -> LayerProfile:
    return LayerProfile(name=kw.pop("name", layer), layer=layer, op=op, time_ms=ms, share=0.0, precision=precision,
                        **kw)


def _profile(kind: str, rows: list[LayerProfile], batch: int = 1, threads: int = 1, **kw: Any) -> Profile:
    total = sum(r.time_ms for r in rows) or 1.0
    for r in rows:
        r.share = r.time_ms / total
    return Profile(source=kind, kind=kind, runtime="torch eager cpu" if kind == "torch" else "onnxruntime CPU",
                   batch=batch, total_ms=total, threads=threads, iters=10, layers=rows, **kw)


def _caps(**kw: Any) -> CpuCapabilities:
    base: dict[str, Any] = dict(model="Test CPU", avx2=True, avx512=True, avx512_bf16=True, vnni=True,
                                amx_tile=False, amx_fp16=False, source="torch")
    return CpuCapabilities(**{**base, **kw})


# ------------------------------------------------------------------------------------------ names


def test_node_names_map_to_module_paths() -> None:
    assert layer_from_node_name("/layer1/layer1.0/conv1/Conv_quant") == "layer1.0.conv1"
    assert layer_from_node_name("/layer1/conv/Conv") == "layer1.conv"
    assert layer_from_node_name("node_Conv_69") is None
    assert strip_node_suffixes("/layer1/conv/Conv_quant") == "/layer1/conv/Conv"
    assert strip_node_suffixes("relu_QuantizeLinear") == "relu"
    assert strip_node_suffixes("node_Conv_69_token_1") == "node_Conv_69"
    assert strip_node_suffixes("fused /a/Conv") == "/a/Conv"
    assert base_op("QLinearConv") == "Conv" and base_op("NhwcMaxPool") == "MaxPool"
    assert base_op("ConvInteger") == "Conv" and base_op("QGemm") == "Gemm"
    assert base_op("QuantizeLinear") == "QuantizeLinear" and base_op("MatMulInteger") == "MatMul"
    assert base_op("DynamicQuantizeMatMul") == "MatMul" and base_op("FusedMatMul") == "MatMul"
    assert strip_node_suffixes("node_MatMul_80/MatMulScaleFusion/") == "node_MatMul_80"
    assert strip_node_suffixes("classifier.weight_Transposed") == "classifier.weight"


# ------------------------------------------------------------------------------------------ diff


def test_diff_statuses_from_synthetic_profiles() -> None:
    before = _profile("torch", [
        _row("module.conv", "Conv2d", 4.0, macs=100), _row("bn", "BatchNorm2d", 1.0), _row("relu", "ReLU", 0.5),
        _row("conv2", "Conv2d", 2.0), _row("fc", "Linear", 1.0), _row("head", "Linear", 1.0),
        _row("drop", "Dropout", 0.2),
    ], not_executed=["unused"])
    after = _profile("onnx", [
        _row("(input)", "QuantizeLinear", 0.3, "int8"),
        _row("conv", "QLinearConv", 1.0, "int8", macs=100, fused=["bn"]),
        _row("conv2", "QLinearConv", 1.95, "int8"),
        _row("fc", "Gemm", 2.0),
        _row("fc", "DequantizeLinear", 0.1, "int8", name="fc_DequantizeLinear"),
    ], not_executed=["drop"])
    d = diff_profiles(before, after)
    by = {r.layer: r for r in d.rows}
    assert by["conv"].status == "faster" and by["conv"].speedup == pytest.approx(4.0)
    assert (by["conv"].before_precision, by["conv"].after_precision) == ("float", "int8")
    assert by["conv"].before_macs == by["conv"].after_macs == 100
    assert by["bn"].status == "fused" and by["bn"].fused_into == "conv"  # from the node's fused list
    assert by["relu"].status == "fused" and by["relu"].fused_into == "conv"  # an activation next to a match
    assert by["conv2"].status == "same"
    assert by["fc"].status == "slower" and by["fc"].after_ms == pytest.approx(2.1)
    assert by["fc"].after_op == "Gemm+DequantizeLinear"
    assert by["head"].status == "removed"
    assert by["drop"].status == "not executed"
    assert by["unused"].status == "not executed"
    assert by["(input)"].status == "added" and by["(input)"].before_ms is None
    assert [r.layer for r in d.rows][:3] == ["conv", "bn", "relu"]  # the before model's order
    assert d.counts()["fused"] == 2 and d.speedup == pytest.approx(before.total_ms / after.total_ms)
    assert Profile.from_dict(after.to_dict()) == after


def test_diff_between_two_torch_profiles_does_not_invent_fusions() -> None:
    before = _profile("torch", [_row("conv", "Conv2d", 2.0), _row("relu", "ReLU", 1.0)])
    after = _profile("torch", [_row("conv", "Conv2d", 1.0)])
    by = {r.layer: r.status for r in diff_profiles(before, after).rows}
    assert by == {"conv": "faster", "relu": "removed"}


def test_diff_folds_children_and_containers_the_other_side_times_as_one() -> None:
    """Torch times MultiheadAttention as one module and a block's residual adds outside every leaf."""
    before = _profile("torch", [_row("blocks.0.self_attn", "MultiheadAttention", 4.0, macs=300),
                                _row("blocks.0.linear1", "Linear", 2.0, macs=50), _row("(other)", "(ops)", 1.0)])
    after = _profile("onnx", [
        _row("blocks.0.self_attn", "DynamicQuantizeMatMul", 1.0, "int8", macs=200),
        _row("blocks.0.self_attn", "MatMul", 0.5, macs=50),
        _row("blocks.0.self_attn.out_proj", "DynamicQuantizeMatMul", 0.5, "int8", macs=50),
        _row("blocks.0", "Add", 0.25), _row("(other)", "Add", 0.25),
        _row("blocks.0.linear1", "DynamicQuantizeMatMul", 1.0, "int8", macs=50),
    ])
    by = {r.layer: r for r in diff_profiles(before, after).rows}
    assert set(by) == {"blocks.0.self_attn", "blocks.0.linear1", "(other)"}  # nothing "added"
    attn = by["blocks.0.self_attn"]
    assert attn.after_ms == pytest.approx(2.0) and attn.after_macs == 300 and attn.after_precision == "mixed"
    assert by["(other)"].after_ms == pytest.approx(0.5) and by["(other)"].status == "faster"


# ------------------------------------------------------------------------------------------ verdicts


def test_float_layers_verdict() -> None:
    mixed = _profile("onnx", [_row("a", "QLinearConv", 1.0, "int8"), _row("b", "Conv", 3.0),
                              _row("c", "Relu", 5.0)])
    v = float_layers_verdict(mixed)
    assert v is not None and v.layers == ["b"] and v.share == pytest.approx(3 / 9)
    assert float_layers_verdict(_profile("onnx", [_row("b", "Conv", 3.0)])) is None  # not a quantized model
    assert float_layers_verdict(_profile("onnx", [_row("a", "QLinearConv", 1.0, "int8")])) is None


def test_qdq_verdict_ignores_the_model_boundary() -> None:
    rows = [_row("(input)", "QuantizeLinear", 1.0, "int8"), _row("a", "QLinearConv", 5.0, "int8"),
            _row("a", "DequantizeLinear", 1.0, "int8"), _row("b", "Softmax", 1.0),
            _row("b", "QuantizeLinear", 1.0, "int8"), _row("c", "QLinearConv", 5.0, "int8"),
            _row("c", "DequantizeLinear", 1.0, "int8")]
    v = qdq_verdict(_profile("onnx", rows))
    assert v is not None and v.share == pytest.approx(2 / 15) and v.layers == ["a", "b"]
    boundary_only = [_row("(input)", "QuantizeLinear", 1.0, "int8"), _row("a", "QLinearConv", 20.0, "int8"),
                     _row("a", "DequantizeLinear", 1.0, "int8")]
    assert qdq_verdict(_profile("onnx", boundary_only)) is None


def test_memory_bound_verdict() -> None:
    fc = _row("fc", "Linear", 5.0, macs=1_000_000, weight_bytes=4_000_000, activation_bytes=8_000)
    conv = _row("conv", "Conv2d", 5.0, macs=50_000_000, weight_bytes=100_000, activation_bytes=200_000)
    v = memory_bound_verdict(_profile("torch", [fc, conv]))
    assert v is not None and v.layers == ["fc"] and "batch 1" in v.message
    assert memory_bound_verdict(_profile("torch", [fc, conv], batch=32)) is None


def test_cpu_features_verdict() -> None:
    int8 = _profile("onnx", [_row("a", "QLinearConv", 1.0, "int8")])
    v = cpu_features_verdict(int8, _caps(vnni=False, amx_tile=False))
    assert v is not None and v.code == "cpu_no_int8"
    assert cpu_features_verdict(int8, _caps(vnni=True)) is None
    bf16 = _profile("torch", [_row("a", "Linear", 1.0, "bf16")])
    v = cpu_features_verdict(bf16, _caps(avx512_bf16=False, amx_tile=False))
    assert v is not None and v.code == "cpu_no_bf16"
    assert cpu_features_verdict(bf16, _caps()) is None
    fp32 = _profile("torch", [_row("a", "Linear", 1.0)])
    assert cpu_features_verdict(fp32, _caps(vnni=False, avx512_bf16=False)) is None


def test_threads_verdict() -> None:
    v = threads_verdict(4, cores=2, others_cores=1.0)
    assert v is not None and "1.0 of 2" in v.message
    assert threads_verdict(1, cores=2, others_cores=1.0) is None
    assert threads_verdict(2, cores=2, others_cores=0.1) is None


class _FakeNvml:
    NVML_CLOCK_SM = 1

    def __init__(self, reasons: int, fail: bool = False) -> None:
        self.reasons, self.fail, self.shut = reasons, fail, False

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: int) -> int:
        return self.reasons

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:
        return 900

    def nvmlDeviceGetMaxClockInfo(self, h: int, kind: int) -> int:
        return 1980


def test_gpu_clock_verdict_with_and_without_nvml() -> None:
    hot = _FakeNvml(0x40 | 0x1)  # thermal slowdown (+ idle, which does not count)
    clocks = gpu_clocks(hot)
    assert clocks == [{"index": 0, "sm_mhz": 900, "max_sm_mhz": 1980, "reasons": ["thermal (hardware)"]}]
    assert hot.shut
    v = gpu_clock_verdict(clocks)
    assert v is not None and "900 of 1980 MHz" in v.message
    assert gpu_clock_verdict(gpu_clocks(_FakeNvml(0x1))) is None
    assert gpu_clocks(_FakeNvml(0, fail=True)) == []  # no driver: skipped, never raised


def test_collect_verdicts_uses_the_given_facts() -> None:
    p = _profile("onnx", [_row("a", "QLinearConv", 1.0, "int8"), _row("b", "Conv", 3.0)], threads=8)
    found = collect_verdicts(p, caps=_caps(vnni=False), cores=2, others_cores=0.0, clocks=lambda: [])
    assert {v.code for v in found} == {"float_layers", "cpu_no_int8", "threads"}


def test_collect_verdicts_probes_this_machine_without_failing() -> None:
    """Real CPU probe, load probe and NVML (absent on most test machines: skipped, not raised)."""
    p = _profile("onnx", [_row("a", "QLinearConv", 1.0, "int8")], threads=1)
    found = collect_verdicts(p)
    assert all(v.code in ("cpu_no_int8", "threads", "gpu_throttled", "memory_bound") for v in found)
    assert all(v.message and v.advice for v in found)


# ------------------------------------------------------------------------------------------ real profiles


def test_torch_profile_groups_ops_by_leaf_module() -> None:
    p = profile_module(tiny_model(), INPUT_SHAPE, batch=2, iters=3)
    rows = {r.layer: r for r in p.layers}
    assert {"conv", "bn", "relu", "conv2", "pool", "flatten", "fc"} <= set(rows)
    assert p.not_executed == ["unused"] and p.batch == 2 and p.iters == 3
    conv = rows["conv"]
    assert conv.macs == 2 * 8 * 16 * 16 * 3 * 3 * 3 and conv.params == 8 * 3 * 3 * 3
    assert conv.output_shape == [2, 8, 16, 16] and conv.precision == "float"
    assert any("conv" in k for k in conv.kernels)
    assert rows["fc"].output_shape == [2, 10]
    assert all(r.time_ms > 0 for r in p.layers)
    assert 0.5 < sum(r.share for r in p.layers) <= 1.0 + 1e-9  # leaf modules plus "(other)" cover the forward


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_onnx_pair(tmp_path_factory.mktemp("profile"))


def test_onnx_profiles_and_their_diff(onnx_pair: tuple[Path, Path]) -> None:
    fp32_path, int8_path = onnx_pair
    fp32 = profile_onnx(fp32_path, batch=2, iters=3)
    int8 = profile_onnx(int8_path, batch=2, iters=3)
    assert fp32.kind == "onnx" and fp32.iters == 3 and fp32.total_ms > 0
    conv = next(r for r in fp32.layers if r.layer == "conv")
    assert conv.op in ("Conv", "FusedConv") and conv.precision == "float"
    assert conv.macs == 2 * 8 * 16 * 16 * 3 * 3 * 3
    assert "bn" in conv.fused  # BatchNorm folded by the exporter into the Conv
    assert conv.output_shape is not None and conv.output_shape[0] == 2
    qconv = [r for r in int8.layers if r.layer == "conv" and r.op not in ("QuantizeLinear", "DequantizeLinear")]
    assert qconv and qconv[0].precision == "int8" and qconv[0].op in ("QLinearConv", "ConvInteger")
    assert qconv[0].macs == conv.macs
    assert conv.params == qconv[0].params == 8 * 3 * 3 * 3  # the weight, float or INT8 behind a DequantizeLinear
    assert any(r.op == "QuantizeLinear" for r in int8.layers)
    d = diff_profiles(fp32, int8)
    by = {r.layer: r for r in d.rows}
    assert (by["conv"].before_precision, by["conv"].after_precision) == ("float", "int8")
    assert by["conv"].status in ("same", "faster", "slower")
    assert by["fc"].after_op.startswith("QGemm") or "int8" in by["fc"].after_precision
    torch_side = diff_profiles(profile_module(tiny_model(), INPUT_SHAPE, 2, iters=2), int8)
    statuses = {r.layer: r.status for r in torch_side.rows}
    assert statuses["bn"] == "fused" and statuses["unused"] == "not executed"
    assert statuses["conv"] in ("same", "faster", "slower")
