"""onnxruntime INT8 (dynamic, static QDQ), fp16, torch dynamic INT8, module->node mapping, accuracy-aware mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from workbench.core.data import load_dataset
from workbench.core.measure.runtimes import OrtRuntime
from workbench.core.models import build_zoo_model
from workbench.core.onnx_export import export_onnx, ort_predict_fn, parity, torch_predict_fn
from workbench.errors import ModelLoadError, WorkbenchError
from workbench.recipe import DataSection
from workbench.techniques.quantize.layers import layer_sensitivity, nodes_for_modules
from workbench.techniques.quantize.methods import (
    BatchCalibrationReader,
    calibration_batches,
    checked_onnx,
    convert_fp16,
    cpu_has_vnni,
    int8_speed_note,
    quantize_onnx,
    quantize_torch_dynamic,
    quantize_with_budget,
)

SHARED_DATASETS = Path(__file__).resolve().parents[2] / ".pytest_cache" / "workbench-datasets"


def _train(model: torch.nn.Module, data: Any, steps: int, lr: float) -> torch.nn.Module:
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(data.train, batch_size=32, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    done = 0
    while done < steps:
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    return model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Default data (small) and a briefly trained CNN and transformer, exported to ONNX."""
    home = tmp_path_factory.mktemp("qhome")
    SHARED_DATASETS.mkdir(parents=True, exist_ok=True)
    (home / "datasets").symlink_to(SHARED_DATASETS, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(home))
        data = load_dataset(DataSection(samples_per_class=40, augment=False, cache=True))
    out: dict[str, Any] = {"data": data, "dir": tmp_path_factory.mktemp("q")}
    all_x = torch.stack([data.train[i][0] for i in range(len(data.train))] +
                        [data.eval[i][0] for i in range(len(data.eval))]).numpy()
    all_y = np.array([data.train[i][1] for i in range(len(data.train))] +
                     [data.eval[i][1] for i in range(len(data.eval))])
    out["xy"] = (all_x, all_y)
    # Small enough to train in seconds; the transformer is the zoo ViT at depth 1 / dim 64 (same ops:
    # patch conv, attention MatMuls, LayerNorm, GELU MLP), which learns far faster than the default.
    configs: tuple[tuple[str, dict[str, Any], int], ...] = (
        ("small_cnn", {}, 150),
        ("transformer", {"depth": 1, "dim": 64, "dropout": 0.0, "patch_size": 4}, 100),
    )
    for name, kwargs, steps in configs:
        torch.manual_seed(0)
        m = _train(build_zoo_model(name, data.num_classes, data.input_shape, **kwargs), data, steps, 3e-3)
        out[name] = (m, export_onnx(m, data.input_shape, out["dir"] / f"{name}.onnx"))
    out["calib"] = calibration_batches(data.train, data.eval, 128)
    return out


def _accuracy(predict: Any, xy: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = xy
    preds = np.concatenate([predict(x[i:i + 128]).argmax(1) for i in range(0, len(x), 128)])
    return float((preds == y).mean())


@pytest.mark.parametrize("name", ["small_cnn", "transformer"])
@pytest.mark.parametrize("method", ["dynamic", "static"])
def test_int8_loads_runs_and_keeps_accuracy(setup: dict[str, Any], name: str, method: str) -> None:
    model, fp32 = setup[name]
    out = quantize_onnx(fp32, setup["dir"] / f"{name}-{method}.onnx", method=method, batches=setup["calib"])
    assert out.path.is_file() and out.preprocessed
    # INT8 weights: static quantizes every weighted op; dynamic leaves Gemm (no dynamic form) in float
    assert out.path.stat().st_size < fp32.stat().st_size * (0.6 if method == "static" else 0.7)
    float_acc = _accuracy(torch_predict_fn(model), setup["xy"])
    rt = OrtRuntime(out.path)
    try:
        q_acc = _accuracy(ort_predict_fn(rt), setup["xy"])
    finally:
        rt.close()
    assert float_acc > 0.2, f"{name} did not learn ({float_acc:.3f}, chance 0.1); the test would prove nothing"
    assert abs(float_acc - q_acc) * 100 <= 2.0, (name, method, float_acc, q_acc)
    agree = parity(torch_predict_fn(model), ort_predict_fn(OrtRuntime(out.path)), setup["calib"][:2])
    assert agree.top1_agreement >= 0.9
    ops = {n.op_type for n in onnx.load(str(out.path)).graph.node}
    assert ("QuantizeLinear" in ops) if method == "static" else ("DynamicQuantizeLinear" in ops)


def test_module_names_map_to_onnx_nodes(setup: dict[str, Any]) -> None:
    cnn = onnx.load(str(setup["small_cnn"][1]))
    mapping = nodes_for_modules(cnn, ["classifier", "features.0.0", "features.2"])
    ops = {n.name: n.op_type for n in cnn.graph.node}
    assert [ops[n] for n in mapping["classifier"]] == ["Gemm"]
    assert [ops[n] for n in mapping["features.0.0"]] == ["Conv"]  # Conv+BN folded: found via its weight
    assert {ops[n] for n in mapping["features.2"]} == {"Conv", "Relu"}
    vit = onnx.load(str(setup["transformer"][1]))
    attn = nodes_for_modules(vit, ["blocks.0.self_attn"])["blocks.0.self_attn"]
    vops = {n.name: n.op_type for n in vit.graph.node}
    assert "MatMul" in {vops[n] for n in attn} and "Softmax" in {vops[n] for n in attn}
    mlp = nodes_for_modules(vit, ["blocks.0.linear1"])["blocks.0.linear1"]
    assert mlp and not set(attn) & set(mlp)
    assert set(attn) | set(mlp) <= set(nodes_for_modules(vit, ["blocks.0"])["blocks.0"])
    with pytest.raises(WorkbenchError, match="no ONNX node comes from module 'nope'.*classifier"):
        nodes_for_modules(cnn, ["nope"])


def test_exclude_keeps_module_float(setup: dict[str, Any]) -> None:
    _, fp32 = setup["small_cnn"]
    out = quantize_onnx(fp32, setup["dir"] / "excl.onnx", method="static", batches=setup["calib"],
                        exclude_modules=["classifier"])
    q = onnx.load(str(out.path))
    gemm = next(n for n in q.graph.node if n.op_type == "Gemm")
    assert gemm.name in out.excluded_nodes
    inits = {t.name for t in q.graph.initializer}
    assert gemm.input[1] in inits  # float weight straight from an initializer, no DequantizeLinear
    conv = next(n for n in q.graph.node if n.op_type == "Conv")
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    assert producers.get(conv.input[1]) == "DequantizeLinear"


def test_sensitivity_and_accuracy_budget_keep_layers_float(setup: dict[str, Any]) -> None:
    _, fp32 = setup["small_cnn"]
    dst = setup["dir"] / "budget.onnx"

    def fake_eval(path: Path) -> float:  # pretend INT8 costs 10 points unless some layer stays float
        model = onnx.load(str(path))
        inits = {t.name for t in model.graph.initializer}
        float_layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits]
        return 0.9 if float_layers else 0.8

    out = quantize_with_budget(fp32, dst, method="static", evaluate=fake_eval, float_accuracy=0.9,
                               max_accuracy_drop=1.0, batches=setup["calib"])
    assert out.sensitivity and out.sensitivity[0]["added_error"] >= out.sensitivity[-1]["added_error"]
    assert all(s["module"] for s in out.sensitivity)  # every layer named after its PyTorch module
    assert len(out.attempts) == 2 and out.attempts[-1]["drop_points"] == pytest.approx(0.0)
    assert len(out.kept_float) == 1 and out.accuracy == 0.9
    assert "kept 1 layer(s) in float" in out.notes[0]
    sens = layer_sensitivity(out.float_path, dst, setup["calib"][:1])
    assert sens and all(s.error >= 0 and s.added_error >= 0 for s in sens)
    assert {s.op_type for s in sens} <= {"Conv", "Gemm", "MatMul", "ConvTranspose"}


def test_quantize_stage_chooses_on_validation_and_reports_on_eval() -> None:
    """The accuracy-aware fallback scores candidates on the val split; before/after stay eval accuracy."""
    from tests.helpers import tiny_recipe
    from workbench.core.data import build_loader
    from workbench.core.measure.runtimes import evaluate_runtime
    from workbench.core.store import RunStore
    from workbench.recipe import QuantizeSection
    from workbench.techniques import run_recipe

    recipe = tiny_recipe(epochs=1, samples_per_class=24)
    recipe.data.eval_fraction, recipe.data.val_fraction = 0.3, 0.25
    recipe.bench.enabled = False
    recipe.quantize = QuantizeSection(method="static", calibration_samples=64, max_accuracy_drop=0.01)
    outcome = run_recipe(recipe, store=RunStore())
    assert outcome.status == "completed", outcome.error
    record = outcome.summary["stages"][-1]
    data = load_dataset(recipe.data)

    def accuracy(path: str, split: Any) -> float:
        rt = OrtRuntime(Path(path))
        try:
            return evaluate_runtime(rt, build_loader(split, 64, recipe.loader, train=False))
        finally:
            rt.close()

    sel = record["selection"]
    assert sel["split"] == "validation" and record["quantization"]["split"] == "validation"
    assert sel["float_accuracy"] == pytest.approx(accuracy(record["float_onnx_path"], data.val))
    assert sel["quantized_accuracy"] == pytest.approx(accuracy(record["onnx_path"], data.val))
    assert record["before"]["accuracy"] == pytest.approx(accuracy(record["float_onnx_path"], data.eval))
    assert record["after"]["accuracy"] == pytest.approx(accuracy(record["onnx_path"], data.eval))


def test_fp16_and_torch_dynamic(setup: dict[str, Any]) -> None:
    model, fp32 = setup["transformer"]
    half = convert_fp16(fp32, setup["dir"] / "fp16.onnx")
    assert half.stat().st_size < fp32.stat().st_size * 0.7
    batches = setup["calib"][:2]
    rt, ref = OrtRuntime(half), OrtRuntime(fp32)
    try:
        assert parity(ort_predict_fn(ref), ort_predict_fn(rt), batches).top1_agreement >= 0.95
    finally:
        rt.close()
        ref.close()
    q = quantize_torch_dynamic(model)
    assert any("quantized" in type(m).__module__ for m in q.modules())
    assert parity(torch_predict_fn(model), torch_predict_fn(q), batches).top1_agreement >= 0.95
    assert not any("quantized" in type(m).__module__ for m in model.modules())  # original untouched


def test_calibration_reader_and_notes() -> None:
    batches = [np.zeros((2, 3), np.float32), np.ones((1, 3), np.float32)]
    r = BatchCalibrationReader("input", batches)
    assert r.get_next()["input"].shape == (2, 3) and r.get_next() is not None and r.get_next() is None
    r.rewind()
    assert len(list(r)) == 2
    assert cpu_has_vnni() in (True, False, None)
    slow = int8_speed_note({"latency_ms_p50": 1.0, "throughput": 100.0},
                           {"latency_ms_p50": 2.0, "throughput": 50.0, "latency_batch": 1}, "dynamic")
    assert "slower" in slow and "static" in slow
    assert int8_speed_note({"latency_ms_p50": 2.0}, {"latency_ms_p50": 1.0}, "static") == ""
    assert "GPU" in int8_speed_note({"latency_ms_p50": 1.0}, {"latency_ms_p50": 3.0}, "fp16")


def _external_data_model(folder: Path, location: str) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "32")):
        e = w.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], [w])
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_external_data_outside_folder_and_truncated_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 32)
    inner = tmp_path / "m"
    inner.mkdir()
    bad = _external_data_model(inner, "../secret.bin")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        quantize_onnx(bad, tmp_path / "q.onnx", method="dynamic")
    with pytest.raises(ModelLoadError, match="outside"):
        checked_onnx(bad)
    trunc = tmp_path / "trunc.onnx"
    good = _external_data_model(tmp_path, "w.bin")
    (tmp_path / "w.bin").write_bytes(np.ones((4, 2), np.float32).tobytes())
    trunc.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ModelLoadError, match="truncated"):
        quantize_onnx(trunc, tmp_path / "q2.onnx", method="dynamic")


@pytest.mark.parametrize("method", ["static", "fp16"])
def test_stop_kills_the_native_step_and_leaves_no_output(setup: dict[str, Any], method: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Static calibration and fp16 conversion never check the cancel token: they run in a child process
    that is killed on Stop; the run sees Cancelled (recorded as cancelled, not failed) and no file is left."""
    import workbench.techniques.quantize.methods as quantize
    from workbench.core.events import CancelToken
    from workbench.core.isolate import run_in_child
    from workbench.errors import Cancelled

    isolated: list[str] = []

    def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
        isolated.append(kwargs["what"])
        kwargs["cancel"].cancel()  # Stop pressed while the child works
        return run_in_child(fn, *args, **kwargs)

    monkeypatch.setattr(quantize, "run_in_child", spy)
    _model, fp32 = setup["small_cnn"]
    dst = setup["dir"] / f"cancelled-{method}.onnx"
    with pytest.raises(Cancelled):
        quantize_onnx(fp32, dst, method=method, batches=setup["calib"], preprocess=False, cancel=CancelToken())
    assert len(isolated) == 1 and fp32.name in isolated[0]
    assert not dst.exists() and not list(dst.parent.glob(f".{dst.name}*"))


def test_auto_method_is_static_for_convolutions_and_dynamic_otherwise(tmp_path: Path) -> None:
    from workbench.techniques.quantize.config import QuantizeSection
    from workbench.techniques.quantize.stage import choose_method

    assert QuantizeSection().method == "auto"
    cnn = build_zoo_model("small_cnn", 10, (3, 32, 32))
    mlp = build_zoo_model("mlp", 10, (3, 32, 32))
    assert choose_method("auto", cnn, None)[0] == "static"
    method, why = choose_method("auto", mlp, None)
    assert method == "dynamic" and "no convolutions" in why
    assert choose_method("dynamic", cnn, None) == ("dynamic", "")  # an explicit choice is kept, silently
    path = export_onnx(cnn.eval(), (3, 32, 32), tmp_path / "cnn.onnx", 18)
    assert choose_method("auto", None, path)[0] == "static"  # an ONNX model is read from its graph
