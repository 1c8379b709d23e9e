"""Quantization leaves no intermediate files behind: onnxruntime's symbolic shape inference drops
``sym_shape_infer_temp.onnx`` (and a ``<uuid>.data`` for large models) in the current directory when it
cannot infer every shape; pre-processing runs in a child whose working folder is a removed temp folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.cli import main
from workbench.techniques.quantize.methods import preprocess_onnx


def _incomplete_shapes_model(path: Path) -> Path:
    """x[b,4,4] -> com.microsoft.Inverse -> MatMul(W): symbolic shape inference gives up on Inverse."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32) + 4 * np.eye(4,
                                dtype=np.float32), "W")
    nodes = [helper.make_node("Inverse", ["x"], ["inv"], domain="com.microsoft"),
             helper.make_node("MatMul", ["inv", "W"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4, 4])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, str(path))
    return path


def test_onnxruntime_would_litter_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The premise: called in-process, onnxruntime leaves its temp file in the current directory."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = _incomplete_shapes_model(tmp_path / "m.onnx")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(Exception, match="Incomplete symbolic shape inference"):
        quant_pre_process(str(src), str(tmp_path / "pre.onnx"), skip_symbolic_shape=False)
    assert "sym_shape_infer_temp.onnx" in {p.name for p in cwd.iterdir()}


def test_preprocessing_leaves_nothing_in_the_working_directory(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = _incomplete_shapes_model(tmp_path / "m.onnx")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = preprocess_onnx(src, tmp_path / "pre.onnx")
    assert out == tmp_path / "pre.onnx" and out.is_file()  # retried without symbolic shape inference
    assert list(cwd.iterdir()) == []
    dst_dir = tmp_path / "out"
    dst_dir.mkdir()
    assert main(["quantize", str(src), "--method", "dynamic", "--out", str(dst_dir / "q.onnx"), "--json"]) == 0
    assert list(cwd.iterdir()) == [] and [p.name for p in dst_dir.iterdir()] == ["q.onnx"]
