"""Runtimes agree with each other, and bench_runtime times any of them the same way."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.core.events import RecordingReporter
from workbench.core.measure.runtimes import (
    OrtRuntime,
    Runtime,
    TorchRuntime,
    available_providers,
    bench_runtime,
    export_onnx_for_bench,
)
from workbench.core.measure.timing import LatencyStats
from workbench.errors import ModelLoadError, WorkbenchError

SHAPE = (3, 16, 16)


def _tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    )
    # non-trivial BN statistics so a wrong eval/train mode would show up in parity
    m[1].running_mean.uniform_(-0.5, 0.5)
    m[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    m = _tiny_cnn()
    path = export_onnx_for_bench(m, SHAPE, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return m, path


def test_providers_exclude_azure_and_include_cpu() -> None:
    p = available_providers()
    assert "CPUExecutionProvider" in p
    assert "AzureExecutionProvider" not in p


def test_export_has_named_dynamic_batch(onnx_model: tuple[torch.nn.Module, Path]) -> None:
    m, path = onnx_model
    assert path.is_file() and not m.training
    rt = OrtRuntime(path)
    assert rt.input_name == "input" and rt.output_names == ["logits"]
    assert isinstance(rt.input_shape[0], str)  # symbolic batch
    assert rt.input_shape[1:] == list(SHAPE)
    assert rt.input_dtype is np.float32
    assert rt.provider == "CPUExecutionProvider"  # no GPU here
    assert isinstance(rt, Runtime)


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_eager_and_onnxruntime_agree(onnx_model: tuple[torch.nn.Module, Path], batch: int) -> None:
    m, path = onnx_model
    x = np.random.default_rng(batch).standard_normal((batch, *SHAPE), dtype=np.float32)
    eager = TorchRuntime(m)
    ort_rt = OrtRuntime(path, threads=1, optimization="all")
    y_eager, y_ort = eager.predict(x), ort_rt.predict(torch.from_numpy(x))
    assert y_ort.shape == y_eager.shape == (batch, 5)
    np.testing.assert_allclose(y_ort, y_eager, rtol=1e-4, atol=1e-5)
    ort_rt.close()
    with pytest.raises(WorkbenchError):
        ort_rt.predict(x)


def test_bf16_channels_last_eager_is_close() -> None:
    m = _tiny_cnn()
    x = torch.randn(4, *SHAPE)
    ref = TorchRuntime(m).predict(x)
    y = TorchRuntime(m, autocast_dtype=torch.bfloat16, channels_last=True).predict(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=0.05, atol=0.05)


def test_bench_runtime_side_by_side(onnx_model: tuple[torch.nn.Module, Path]) -> None:
    m, path = onnx_model
    rep = RecordingReporter()
    rows: dict[str, list[LatencyStats]] = {}
    for rt in (TorchRuntime(m), OrtRuntime(path, threads=1)):
        rows[rt.name] = bench_runtime(rt, SHAPE, [1, 3], warmup=1, iters=5, threads=1, reporter=rep)
        rt.close()
    assert set(rows) == {"eager", "onnxruntime"}
    for stats in rows.values():
        assert [s.batch_size for s in stats] == [1, 3]
        assert all(s.iters >= 5 and s.p50_ms > 0 for s in stats)
    assert len(rep.of("metrics")) == 4


def test_ort_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        OrtRuntime(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load"):
        OrtRuntime(bad)
    with pytest.raises(WorkbenchError, match="not available"):
        OrtRuntime(bad, providers=["NoSuchExecutionProvider"])


def test_ort_wrong_shape_is_explained(onnx_model: tuple[torch.nn.Module, Path]) -> None:
    _, path = onnx_model
    with pytest.raises(WorkbenchError, match="expects shape"):
        OrtRuntime(path).predict(np.zeros((1, 3, 8, 8), np.float32))


@pytest.mark.slow  # inductor's first CPU compile takes ~20 s on a 2-core machine
@pytest.mark.skipif(
    not hasattr(torch, "compile") or not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
    reason="torch.compile on CPU needs a C++ compiler",
)
def test_compile_runtime_matches_eager() -> None:
    m = _tiny_cnn()
    x = np.random.default_rng(0).standard_normal((2, *SHAPE), dtype=np.float32)
    ref = TorchRuntime(m).predict(x)
    rt = TorchRuntime(m, compile=True)
    assert rt.name == "compile" and rt.min_warmup > 0
    np.testing.assert_allclose(rt.predict(x), ref, rtol=1e-4, atol=1e-5)
    stats = bench_runtime(rt, SHAPE, [2], warmup=0, iters=3)  # min_warmup absorbs any recompile
    assert stats[0].iters >= 3
    rt.close()


def test_compile_without_compiler_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(WorkbenchError, match="C\\+\\+ compiler"):
        TorchRuntime(_tiny_cnn(), compile=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runtimes_agree(onnx_model: tuple[torch.nn.Module, Path]) -> None:
    m, path = onnx_model
    x = np.random.default_rng(0).standard_normal((8, *SHAPE), dtype=np.float32)
    ref = TorchRuntime(_tiny_cnn()).predict(x)
    gpu = TorchRuntime(_tiny_cnn(), device="cuda")
    np.testing.assert_allclose(gpu.predict(x), ref, rtol=1e-3, atol=1e-4)
    stats = bench_runtime(gpu, SHAPE, [1, 32], warmup=3, iters=10)
    assert all(s.peak_mem_bytes and s.peak_mem_bytes > 0 for s in stats)
    if "CUDAExecutionProvider" in available_providers():
        ort_rt = OrtRuntime(path, providers=["CUDAExecutionProvider"])
        np.testing.assert_allclose(ort_rt.predict(x), ref, rtol=1e-3, atol=1e-4)
        assert bench_runtime(ort_rt, SHAPE, [32], warmup=3, iters=10)[0].iters >= 10


def test_compile_failure_on_first_call_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(module: torch.nn.Module, mode: str = "default") -> object:
        def fn(_x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("CppCompileError: C++ compile error\nhundreds of lines")

        return fn

    monkeypatch.setattr(shutil, "which", lambda _name: "/usr/bin/g++")
    monkeypatch.setattr(torch, "compile", broken_compile)
    rt = TorchRuntime(_tiny_cnn(), compile=True)
    with pytest.raises(WorkbenchError, match=r"^torch.compile failed: CppCompileError: C\+\+ compile error$"):
        rt.predict(np.zeros((1, *SHAPE), np.float32))
