"""Exports of every zoo model reproduce PyTorch; bundles reload, predict.py runs, nothing is overwritten."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.core.measure.runtimes import OrtRuntime
from workbench.core.models import ZOO, build_zoo_model
from workbench.core.onnx_export import FP32_TOLERANCE, parity, torch_predict_fn
from workbench.errors import WorkbenchError
from workbench.techniques.export.bundle import (
    BundleInfo,
    check_bundle_target,
    read_bundle,
    resolve_bundle_dir,
    write_bundle,
)
from workbench.techniques.export.formats import export_model

SHAPE = (3, 32, 32)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_zoo_model(name, 10, SHAPE)
    for mod in m.modules():  # non-trivial BN statistics: a train/eval mix-up would break parity
        if isinstance(mod, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _batches(n: int = 2, b: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, (b, *SHAPE)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_model_exports_to_onnx_with_parity(name: str, tmp_path: Path) -> None:
    m = _model(name)
    out = export_model(m, SHAPE, tmp_path, ["onnx"], batches=_batches())
    rec = out["onnx"]
    assert rec.parity.max_abs_err <= FP32_TOLERANCE, rec.parity
    assert rec.parity.top1_agreement == 1.0 and rec.ok
    rt = OrtRuntime(rec.path)
    try:
        assert rt.input_name == "input" and rt.output_names == ["logits"]
        assert not isinstance(rt.input_shape[0], int)  # dynamic batch axis
        assert rt.predict(_batches(1, 3)[0]).shape == (3, 10)
    finally:
        rt.close()
    assert not m.training


def test_pt2_and_safetensors_reload_exactly(tmp_path: Path) -> None:
    m = _model("small_cnn")
    out = export_model(m, SHAPE, tmp_path, ["pt2", "safetensors"], batches=_batches())
    assert out["pt2"].parity.max_abs_err <= FP32_TOLERANCE and out["pt2"].path.suffix == ".pt2"
    assert out["safetensors"].parity.max_abs_err == 0.0
    program = torch.export.load(str(out["pt2"].path))
    x = torch.randn(5, *SHAPE)  # another batch size: the batch axis is dynamic
    torch.testing.assert_close(program.module()(x), m(x), atol=1e-4, rtol=1e-4)


def test_parity_report_measures_disagreement() -> None:
    ref = lambda x: np.eye(3, dtype=np.float32)[: len(x)]  # noqa: E731
    cand = lambda x: np.eye(3, dtype=np.float32)[: len(x)][:, ::-1]  # noqa: E731
    rep = parity(ref, cand, [np.zeros((3, 1), np.float32)])
    assert rep.max_abs_err == 1.0 and rep.top1_agreement == pytest.approx(1 / 3) and rep.samples == 3
    with pytest.raises(WorkbenchError, match="at least one batch"):
        parity(ref, ref, [])


@pytest.fixture()
def bundle_parts(tmp_path: Path) -> tuple[dict[str, Path], BundleInfo, torch.nn.Module]:
    m = _model("small_cnn")
    out = export_model(m, SHAPE, tmp_path / "exp", ["onnx"], batches=_batches())
    info = BundleInfo(name="t", input_shape=list(SHAPE), class_names=[f"c{i}" for i in range(10)],
                      preprocess={"scale": 1 / 255, "mean": [0.5], "std": [0.5]}, image_size=32,
                      optimization=["exported"])
    return {"model.onnx": out["onnx"].path}, info, m


def test_bundle_reloads_and_predict_py_runs(tmp_path: Path, bundle_parts) -> None:  # type: ignore[no-untyped-def]
    files, info, m = bundle_parts
    metrics = {"deployed": {"accuracy": 0.5, "latency_ms_p50": 1.0, "size_bytes": 100}, "baseline": {}}
    target = write_bundle(tmp_path / "bundle", files, info, recipe_text="version = 1\n", metrics=metrics)
    got = read_bundle(target)
    assert {"model.onnx", "predict.py", "README.md", "metrics.json", "recipe.toml", "preprocess.json"} <= set(
        got["files"])
    assert got["metrics"]["deployed"]["accuracy"] == 0.5
    assert "Preprocessing" in (target / "README.md").read_text() and "c9" in (target / "README.md").read_text()
    assert not list(tmp_path.glob(".bundle.*"))  # no staging folder left behind
    raw = (np.random.default_rng(1).random((2, *SHAPE)) * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", raw)
    res = subprocess.run([sys.executable, str(target / "predict.py"), str(tmp_path / "x.npy"), "--top", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    expected = torch_predict_fn(m)(((raw / 255.0 - 0.5) / 0.5).astype(np.float32)).argmax(1)
    assert [r["top"][0]["class"] for r in rows] == expected.tolist()
    from PIL import Image

    Image.fromarray(raw[0].transpose(1, 2, 0)).save(tmp_path / "x.png")
    res = subprocess.run([sys.executable, str(target / "predict.py"), str(tmp_path / "x.png")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["top"][0]["class"] == int(expected[0])


def test_bundle_never_overwritten_without_force(tmp_path: Path, bundle_parts) -> None:  # type: ignore[no-untyped-def]
    files, info, _ = bundle_parts
    target = write_bundle(tmp_path / "b", files, info, recipe_text="a", metrics={})
    (target / "keep.txt").write_text("user file")
    with pytest.raises(WorkbenchError, match=r"export.force = true.*--force"):
        write_bundle(target, files, info, recipe_text="b", metrics={})
    assert (target / "recipe.toml").read_text() == "a" and (target / "keep.txt").exists()
    write_bundle(target, files, info, recipe_text="b", metrics={}, force=True)
    assert (target / "recipe.toml").read_text() == "b" and not (target / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # old copy and staging removed
    check_bundle_target(tmp_path / "new", force=False)  # a missing folder is fine


def test_relative_bundle_dir_resolves_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_bundle_dir("bundles/x") == tmp_path / "bundles" / "x"
    assert resolve_bundle_dir(tmp_path / "abs") == tmp_path / "abs"
