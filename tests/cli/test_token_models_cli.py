"""Transformers as people bring them: an ONNX encoder with three int64 inputs and dynamic batch/sequence axes
through `workbench bench` and `workbench quantize` (dynamic, static calibrated on an NPZ of token ids)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.token_models import export_tiny_bert, token_npz
from workbench.cli import main
from workbench.core.measure.runtimes import OrtRuntime
from workbench.errors import WorkbenchError

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bert")
    export_tiny_bert(d / "bert.onnx")
    token_npz(d / "tokens.npz")
    return d


@pytest.fixture()
def work(bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder with the model and tokens, set as the current directory (intermediate files must not land)."""
    w = tmp_path / "work"
    w.mkdir()
    for name in ("bert.onnx", "tokens.npz"):
        (w / name).write_bytes((bert_dir / name).read_bytes())
    monkeypatch.chdir(w)
    return w


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_bench_synthesises_ids_inside_the_vocabulary(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "bert.onnx", "--batch-sizes", "1,3", "--iters", "5", "--seq-len", "12", "--json"]) == 0
    res = _json(capsys)
    assert res["inputs"] == {n: {"dtype": "int64", "shape": [12]} for n in NAMES}
    assert [s["batch_size"] for s in res["runtimes"]["onnxruntime"]] == [1, 3]
    line = res["synthesised"]
    assert "ids in 1..99 (vocabulary 100 from 'word.weight')" in line
    assert "attention_mask int64[batch,12] all ones" in line and "token_type_ids int64[batch,12] zeros" in line
    assert "--seq-len 12" in line
    # the table output says the same, on one line
    assert main(["bench", "bert.onnx", "--batch-sizes", "2", "--iters", "3", "--seq-len", "8"]) == 0
    out = capsys.readouterr().out
    assert sum("synthesised inputs:" in ln for ln in out.splitlines()) == 1
    assert _files(work) == {"bert.onnx", "tokens.npz"}


def test_bench_says_when_max_time_cut_the_iterations(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "bert.onnx", "--batch-sizes", "1", "--iters", "100000", "--max-time", "0.05",
                 "--seq-len", "8", "--json"]) == 0
    res = _json(capsys)
    timed = res["runtimes"]["onnxruntime"][0]["iters"]
    assert 3 <= timed < 100000
    assert any(f"--iters 100000 cut to {timed}" in n and "--max-time 0.05" in n for n in res["notes"])
    assert main(["bench", "bert.onnx", "--batch-sizes", "1", "--iters", "5", "--seq-len", "8", "--json"]) == 0
    assert not any("cut to" in n for n in _json(capsys)["notes"])
    assert main(["bench", "bert.onnx", "--max-time", "0"]) == 2
    assert "--max-time" in capsys.readouterr().err


def test_dynamic_int8_quantizes_embeddings_and_checks_cosine(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = work / "out" / "q.onnx"
    out.parent.mkdir()
    assert main(["quantize", "bert.onnx", "--method", "dynamic", "--seq-len", "16", "--out", str(out), "--bench",
                 "--batch-sizes", "2", "--max-time", "1", "--json"]) == 0
    rep = _json(capsys)
    row = rep["speedup"]["batches"]["2"]  # float and quantized timed paired on synthesised token inputs
    assert list(row) == ["float", "dynamic quantized"] and row["float"]["ratio"] == 1.0
    assert row["dynamic quantized"]["p50_ms"] > 0 and row["dynamic quantized"]["ratio"] > 0
    assert rep["inputs"] == dict.fromkeys(NAMES, "int64")
    par = rep["parity_vs_float"]
    assert 0.99 <= par["cosine_min"] <= par["cosine_mean"] <= 1.0 and rep["parity_ok"] is True
    assert rep["size_bytes"]["quantized"] < 0.7 * rep["size_bytes"]["float"]
    model = onnx.load(str(out))
    floats = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert not any(a.shape == (100, 32) for a in floats.values())  # the word embedding table is INT8 now
    assert any(t.name.startswith("word.weight") and t.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)
               for t in model.graph.initializer)
    rt = OrtRuntime(out)
    ids = np.array([[5, 7, 9, 0]], dtype=np.int64)
    y = rt.predict({"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64),
                    "token_type_ids": np.zeros_like(ids)})
    rt.close()
    assert y.shape == (1, 4, 32) and np.isfinite(y).all()
    assert _files(work) == {"bert.onnx", "tokens.npz", "out"} and _files(out.parent) == {"q.onnx"}


def test_static_int8_calibrates_on_int64_token_ids(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = work / "out" / "s.onnx"
    assert main(["quantize", "bert.onnx", "--method", "static", "--calib", "tokens.npz", "--batch", "8",
                 "--out", str(out), "--json"]) == 0
    rep = _json(capsys)
    assert rep["format"] == "QDQ" and rep["parity_vs_float"]["samples"] == 24  # parity on the calibration tokens
    assert rep["parity_vs_float"]["cosine_min"] >= 0.99
    assert not any("synthetic" in n for n in rep["notes"])
    model = onnx.load(str(out))
    assert {n.op_type for n in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.INT64] * 3
    assert _files(work) == {"bert.onnx", "tokens.npz", "out"} and _files(out.parent) == {"s.onnx"}
    # a threshold the user sets: the file is written but the command says the outputs moved too far
    out2 = work / "out" / "s2.onnx"
    assert main(["quantize", "bert.onnx", "--method", "static", "--calib", "tokens.npz", "--out", str(out2),
                 "--min-cosine", "1"]) == 2
    err = capsys.readouterr().err
    assert "--min-cosine 1" in err and "cosine min" in err and out2.is_file()


def test_transformer_optimizer_is_an_option_timed_paired(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = work / "out" / "o.onnx"
    assert main(["quantize", "bert.onnx", "--method", "dynamic", "--seq-len", "16", "--transformer-optimizer",
                 "--bench", "--batch-sizes", "1", "--max-time", "1", "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "transformer optimizer: fused" in text.err and "parity is against the original float model" in text.err
    line = next(ln for ln in text.out.splitlines() if ln.startswith("paired, batch 1:"))
    assert "float" in line and "float, transformer-optimized" in line and "dynamic quantized" in line and "95 % CI" in line
    assert "cosine similarity min" in text.out
    assert _files(work) == {"bert.onnx", "tokens.npz", "out"} and _files(out.parent) == {"o.onnx"}


def test_failing_static_run_leaves_nothing_behind(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import workbench.techniques.quantize.methods as methods

    seen: list[Path] = []

    def broken(src: Path, dst: Path, *a: object, **kw: object) -> Path:
        seen.append(Path(src))  # the pre-processed model, which must not outlive the run
        Path(dst).write_bytes(b"half a model")
        raise WorkbenchError("calibration exploded")

    monkeypatch.setattr(methods, "quantize_static_onnx", broken)
    out_dir = work / "out"
    out_dir.mkdir()
    assert main(["quantize", "bert.onnx", "--method", "static", "--calib", "tokens.npz",
                 "--out", str(out_dir / "s.onnx")]) == 2
    assert "calibration exploded" in capsys.readouterr().err
    assert seen and seen[0].name.endswith(".pre.onnx") and not seen[0].exists()
    assert _files(work) == {"bert.onnx", "tokens.npz", "out"} and _files(out_dir) == set()


def test_token_inputs_with_labels_are_scored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = export_tiny_bert(tmp_path / "cls.onnx", num_labels=2)
    data = token_npz(tmp_path / "t.npz", labels=True)
    assert main(["bench", str(model), "--batch-sizes", "2", "--iters", "3", "--seq-len", "16", "--data", str(data),
                 "--json"]) == 0
    acc = _json(capsys)["accuracy"]["onnxruntime"]
    assert 0.0 <= acc <= 1.0
    assert main(["quantize", str(model), "--method", "dynamic", "--data", str(data), "--json"]) == 0
    rep = _json(capsys)
    assert rep["parity_vs_float"]["samples"] == 24  # parity on the given tokens
    assert rep["accuracy"]["float"] == acc and 0.0 <= rep["accuracy"]["quantized"] <= 1.0


@pytest.mark.parametrize("arrays, needle", [
    ({"attention_mask": np.ones((4, 8), np.int64)}, "no array named 'input_ids'"),
    ({"input_ids": np.full((4, 8), 500, np.int64)}, "vocabulary has 100 rows"),
    ({"input_ids": np.ones((4, 8), np.int64), "attention_mask": np.ones((4, 6), np.int64)}, "pad them to one length"),
    ({"input_ids": np.ones((4, 8), np.int64), "labels": np.zeros(3)}, "'labels' has 3 entries"),
    ({"input_ids": np.ones(8, np.int64)}, "has shape [8]"),
])
def test_bad_token_files_get_one_clear_line(work: Path, capsys: pytest.CaptureFixture[str], arrays: dict,
                                            needle: str) -> None:
    np.savez(work / "bad.npz", **arrays)
    assert main(["quantize", "bert.onnx", "--method", "static", "--calib", "bad.npz"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.npz" in err and needle in err, err
    assert _files(work) == {"bert.onnx", "tokens.npz", "bad.npz"}


def test_shape_option_on_a_token_model_points_to_seq_len(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "bert.onnx", "--shape", "16"]) == 2
    assert "--seq-len" in capsys.readouterr().err
    # longer than the position table (64 rows): refused up front, not an onnxruntime error mid-run
    assert main(["bench", "bert.onnx", "--seq-len", "65"]) == 2
    err = capsys.readouterr().err
    assert "--seq-len 65" in err and "64 position embeddings ('position.weight')" in err
    token_npz(work / "long.npz", seq=80)
    assert main(["quantize", "bert.onnx", "--method", "static", "--calib", "long.npz"]) == 2
    err = capsys.readouterr().err
    assert "long.npz" in err and "sequence length of 80" in err and "64 tokens or fewer" in err
    (work / "tokens.txt").write_text("hello")
    assert main(["quantize", "bert.onnx", "--calib", "tokens.txt"]) == 2
    err = capsys.readouterr().err
    assert "tokens.txt" in err and ".npz" in err
