"""`workbench bench / quantize / export` on files Workbench has never seen, and on its own runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from workbench.cli import main
from workbench.core.measure.runtimes import OrtRuntime, export_onnx_for_bench


class Mystery(torch.nn.Module):
    """Not a zoo model: a tabular gated MLP with a residual and a LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(12, 32)
        self.gate = torch.nn.Linear(32, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.head = torch.nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        h = self.norm(h + torch.sigmoid(self.gate(h)) * h)
        return self.head(h)


@pytest.fixture()
def mystery_onnx(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return export_onnx_for_bench(Mystery().eval(), (12,), tmp_path / "mystery.onnx")


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_unknown_model_is_benchmarked_and_quantized(mystery_onnx: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(mystery_onnx), "--batch-sizes", "1,4", "--iters", "5", "--json"]) == 0
    res = _json(capsys)
    assert res["input_shape"] == [12] and [s["batch_size"] for s in res["runtimes"]["onnxruntime"]] == [1, 4]
    assert 1 <= res["threads"]["threads"] <= res["threads"]["cores"]  # auto: never more threads than cores
    assert isinstance(res["contention"]["contended"], bool) and res["contention"]["wall_s"] > 0
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(mystery_onnx), "--method", "dynamic", "--out", str(out), "--json"]) == 0
    rep = _json(capsys)
    assert rep["size_bytes"]["quantized"] < rep["size_bytes"]["float"]
    assert rep["parity_vs_float"]["top1_agreement"] >= 0.9
    calib = np.random.default_rng(0).standard_normal((64, 12)).astype(np.float32)
    np.save(tmp_path / "calib.npy", calib)
    out2 = tmp_path / "qs.onnx"
    assert main(["quantize", str(mystery_onnx), "--method", "static", "--calib", str(tmp_path / "calib.npy"),
                 "--out", str(out2), "--json"]) == 0
    assert _json(capsys)["format"] == "QDQ"
    rt = OrtRuntime(out2)
    assert rt.predict(calib[:3]).shape == (3, 4)
    rt.close()
    assert main(["quantize", str(mystery_onnx), "--method", "dynamic", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    # labelled data: accuracy before/after
    x = np.random.default_rng(1).standard_normal((80, 12)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(80) % 4)
    assert main(["quantize", str(mystery_onnx), "--method", "dynamic", "--out", str(out), "--force",
                 "--data", str(tmp_path / "d.npz"), "--json"]) == 0
    acc = _json(capsys)["accuracy"]
    assert 0.0 <= acc["quantized"] <= 1.0 and abs(acc["float"] - acc["quantized"]) < 0.1


def _symbolic_model(path: Path, location: str | None = None) -> Path:
    """[N, 3, H, W] -> GlobalAveragePool -> MatMul: spatial dims are symbolic."""
    w = numpy_helper.from_array(np.ones((3, 2), np.float32), "w")
    if location is not None:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "24")):
            e = w.external_data.add()
            e.key, e.value = k, v
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 3])
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["p"]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], [w, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_symbolic_dims_need_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _symbolic_model(tmp_path / "sym.onnx")
    assert main(["bench", str(path), "--batch-sizes", "2", "--iters", "3"]) == 2
    assert "symbolic" in capsys.readouterr().err
    assert main(["bench", str(path), "--batch-sizes", "2", "--iters", "3", "--shape", "3,8,8", "--json"]) == 0
    assert _json(capsys)["input_shape"] == [3, 8, 8]


def test_outside_external_data_and_truncated_files_are_refused(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 24)
    (tmp_path / "m").mkdir()
    bad = _symbolic_model(tmp_path / "m" / "bad.onnx", "../secret.bin")
    for argv in (["bench", str(bad), "--shape", "3,8,8"], ["quantize", str(bad), "--shape", "3,8,8"]):
        assert main(argv) == 2
        assert "outside the model's folder" in capsys.readouterr().err
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(_symbolic_model(tmp_path / "ok.onnx").read_bytes()[:50])
    for argv in (["bench", str(trunc)], ["quantize", str(trunc)]):
        assert main(argv) == 2
        assert "truncated" in capsys.readouterr().err


TINY = """
version = 1
name = "tiny"
[model]
zoo = "small_cnn"
width = 0.25
[data]
samples_per_class = 20
[train]
epochs = 1
[bench]
batch_sizes = [2]
iters = 3
warmup = 1
"""


def test_export_run_to_bundle_and_refuse_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    assert main(["run", str(recipe), "--json"]) == 0
    run_id = _json(capsys)["run_id"]
    argv = ["export", str(run_id), "--formats", "onnx,safetensors", "--bundle", "out/b", "--quantize", "static",
            "--json"]
    assert main(argv) == 0
    res = _json(capsys)
    assert res["status"] == "completed", res["error"]
    bundle = tmp_path / "out" / "b"  # relative --bundle resolves against the current directory
    assert Path(res["bundle"]) == bundle
    assert res["formats"]["onnx"]["parity"]["max_abs_err"] <= 1e-4
    assert res["final"]["runtime"] == "onnxruntime"
    assert res["final"]["size_bytes"] == (bundle / "model.onnx").stat().st_size
    quant = next(s for s in res["stages"] if s["name"] == "quantize")
    assert quant["before"]["accuracy"] is not None and "parity" in quant
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["environment"]["torch"] and metrics["deployed"]["accuracy"] is not None
    np.save(tmp_path / "x.npy", np.zeros((3, 32, 32), np.uint8))
    run = subprocess.run([sys.executable, str(bundle / "predict.py"), str(tmp_path / "x.npy")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "probability" in run.stdout, run.stderr
    before = (bundle / "metrics.json").read_text()
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert (bundle / "metrics.json").read_text() == before
    assert main([*argv, "--force", "--no-bench"]) == 0
