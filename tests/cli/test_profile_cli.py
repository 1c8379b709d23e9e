"""`workbench profile` and `workbench diff` in-process: ONNX files, a static INT8 run, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import tiny_recipe
from tests.profile_models import tiny_onnx_pair
from workbench.cli import main
from workbench.core.store import RunStore


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_onnx_pair(tmp_path_factory.mktemp("cli-profile"))


def test_profile_and_diff_of_two_onnx_files(onnx_pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    fp32, int8 = onnx_pair
    assert main(["profile", str(int8), "--json", "--batch", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    prof = out["profile"]
    assert prof["kind"] == "onnx" and prof["batch"] == 2 and out["stored"] is None
    conv = next(r for r in prof["layers"] if r["layer"] == "conv" and r["op"] not in ("QuantizeLinear",
                                                                                       "DequantizeLinear"))
    assert conv["precision"] == "int8" and conv["macs"] == 2 * 8 * 16 * 16 * 27
    assert main(["profile", str(fp32), "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert "batch 1" in text and "Layer" in text
    assert sum(1 for line in text.splitlines() if line.startswith("│")) >= 2

    assert main(["diff", str(fp32), str(int8), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    rows = {r["layer"]: r for r in res["diff"]["rows"]}
    assert rows["conv"]["before_precision"] == "float" and rows["conv"]["after_precision"] == "int8"
    assert rows["(input)"]["status"] == "added"
    assert res["diff"]["before_total_ms"] > 0 and res["diff"]["after_total_ms"] > 0
    assert main(["diff", str(fp32), str(int8)]) == 0
    text = capsys.readouterr().out
    assert "conv" in text and "added" in text and ("why:" in text or "nothing stands out" in text)


@pytest.mark.parametrize("argv, expected", [
    (["profile", "missing.onnx"], "not found"),
    (["profile", "run:999"], "no such run"),
    (["profile", "run:abc"], "run:ID"),
    (["diff", "run:1", "missing.onnx"], ""),
    (["profile", "model.txt"], "need ONNX"),
    (["profile", "x.onnx", "--batch", "0"], "must be >= 1"),
    (["profile", "truncated.onnx"], "not a valid ONNX file"),
    (["diff", "truncated.onnx", "truncated.onnx", "--json"], "not a valid ONNX file"),
])
def test_bad_inputs_fail_in_one_line(argv: list[str], expected: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.txt").write_text("not a model")
    (tmp_path / "truncated.onnx").write_bytes(b"\x08\x07\x12\x05garbage")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0]


def test_static_int8_run_against_its_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.analysis.profile import latest_profile
    from workbench.recipe import QuantizeSection
    from workbench.techniques import run_recipe

    recipe = tiny_recipe("profile-int8", epochs=1, samples_per_class=20)
    recipe.bench.enabled = False
    recipe.quantize = QuantizeSection(method="static", calibration_samples=32)
    store = RunStore()
    outcome = run_recipe(recipe, store=store)
    assert outcome.status == "completed", outcome.error
    run_id = outcome.run_id

    assert main(["profile", f"run:{run_id}", "--json", "--top", "5"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["profile"]["kind"] == "onnx" and "static" in res["profile"]["source"]
    assert "int8" in {r["precision"] for r in res["profile"]["layers"]}
    diff = res["diff"]
    assert diff is not None and diff["before_total_ms"] > 0
    statuses = {r["status"] for r in diff["rows"]}
    assert statuses & {"same", "faster", "slower"} and "fused" in statuses  # BN/ReLU merged into convs
    stored = latest_profile(store, run_id)
    assert stored is not None and Path(res["stored"]).is_file()
    assert stored["profile"]["total_ms"] == res["profile"]["total_ms"]

    assert main(["diff", str(run_id), f"run:{run_id}"]) == 0  # the same run twice: every layer matches
    text = capsys.readouterr().out
    assert "removed" not in text and "added" not in text


def test_a_run_without_a_saved_model_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with RunStore() as store:
        rid = store.create_run("broken", "[model]\n", "small_cnn", [])
        store.finish_run(rid, "failed", {}, error="boom")
    assert main(["profile", str(rid)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"run {rid} (failed)" in err[0]


def test_fixed_batch_graph_refuses_another_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["out"], name="/act/Relu")], "g", [x], [y])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert main(["profile", str(path), "--batch", "4"]) == 2
    assert "fixes the batch size to 1" in capsys.readouterr().err
    assert main(["profile", str(path), "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["profile"]["layers"]
    assert [(r["layer"], r["op"]) for r in layers] == [("act", "Relu")]  # /act/Relu -> module "act"
