"""Early exits: backbone cuts, heads, dynamic inference, threshold choice under an accuracy budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.core.models import build_zoo_model
from workbench.errors import RecipeError
from workbench.techniques.early_exit.exits import (
    DEFAULT_EXITS,
    EarlyExitModel,
    ExitProfile,
    choose_threshold,
    confidence,
    exit_costs,
    exit_loss,
)

SHAPE = (3, 32, 32)


@pytest.mark.parametrize("name", ["resnet", "small_cnn", "mobilenet", "mlp", "transformer"])
def test_segments_compute_exactly_the_full_model(name: str) -> None:
    torch.manual_seed(0)
    model = build_zoo_model(name, 10, SHAPE).eval()
    ee = EarlyExitModel.build(model, DEFAULT_EXITS[name], SHAPE, 10).eval()
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(ee(x), ref, atol=1e-5)
        logits, exits = ee.infer(x, threshold=1.01)  # nobody is that sure: everyone runs to the end
        assert torch.allclose(logits, ref, atol=1e-5) and exits.tolist() == [ee.num_exits - 1] * 4
        _, exits = ee.infer(x, threshold=0.0)  # everyone leaves at the first head
        assert exits.tolist() == [0] * 4
    ee.train()
    outs = ee(x)
    assert isinstance(outs, list) and len(outs) == len(DEFAULT_EXITS[name]) + 1


def test_a_mixed_batch_drops_exited_samples_and_keeps_the_rest_exact() -> None:
    torch.manual_seed(0)
    model = build_zoo_model("resnet", 10, SHAPE).eval()
    ee = EarlyExitModel.build(model, DEFAULT_EXITS["resnet"], SHAPE, 10).eval()
    x = torch.randn(16, *SHAPE)
    with torch.no_grad():
        ee.all_exits = True
        per_exit = ee(x)
        ee.all_exits = False
        conf0 = confidence(per_exit[0], "max_prob")
        t = float(conf0.median())
        logits, exits = ee.infer(x, threshold=t)
    leave_first = conf0 >= t
    assert leave_first.any() and (~leave_first).any()
    assert torch.equal(exits[leave_first], torch.zeros(int(leave_first.sum()), dtype=torch.long))
    assert torch.allclose(logits[leave_first], per_exit[0][leave_first], atol=1e-5)
    stayed = exits == ee.num_exits - 1
    assert torch.allclose(logits[stayed], per_exit[-1][stayed], atol=1e-4)
    # One sample at a time (the latency path) takes the same exit with the same logits.
    with torch.no_grad():
        for i in range(x.shape[0]):
            one, where = ee.infer(x[i:i + 1], threshold=t)
            assert int(where[0]) == int(exits[i]) and torch.allclose(one[0], logits[i], atol=1e-4)


def test_bad_exit_points_are_one_line_recipe_errors() -> None:
    model = build_zoo_model("resnet", 10, SHAPE)
    with pytest.raises(RecipeError, match="'stages.9' is not called"):
        EarlyExitModel.build(model, ["stages.9"], SHAPE, 10)
    with pytest.raises(RecipeError, match="in the order the forward calls them"):
        EarlyExitModel.build(model, ["stages.1", "stages.0"], SHAPE, 10)
    # Inside a residual block the block's input still flows past (the shortcut): not a clean cut.
    with pytest.raises(RecipeError, match="one tensor is passed on"):
        EarlyExitModel.build(model, ["stages.0.0.conv1"], SHAPE, 10)


def test_confidence_rules() -> None:
    sure = torch.tensor([[10.0, 0.0, 0.0]])
    flat = torch.zeros(1, 3)
    assert confidence(sure, "max_prob") > 0.99 and confidence(flat, "max_prob") == pytest.approx(1 / 3)
    assert confidence(sure, "entropy") > 0.99 and confidence(flat, "entropy") == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(RecipeError):
        confidence(sure, "vibes")


def test_threshold_is_the_cheapest_within_the_budget() -> None:
    # 10 samples, 3 exits. Exit 0 is right on samples 0-5, exit 1 on 0-7, the full model on 0-8.
    conf = np.array([[0.95] * 5 + [0.6] * 5, [0.99] * 8 + [0.7] * 2, [1.0] * 10])
    correct = np.array([[1] * 6 + [0] * 4, [1] * 8 + [0] * 2, [1] * 9 + [0]], dtype=bool)
    profile = ExitProfile(conf, correct, exit_macs=[10, 20, 40])
    assert profile.full_accuracy == pytest.approx(0.9)
    none = profile.simulate(1.01)
    assert none["exit_shares"] == [0.0, 0.0, 1.0] and none["mean_macs"] == 40
    mid = profile.simulate(0.9)  # samples 0-4 leave at exit 0, 5-7 at exit 1, 8-9 run to the end
    assert mid["exit_shares"] == pytest.approx([0.5, 0.3, 0.2]) and mid["accuracy"] == pytest.approx(0.9)
    assert mid["mean_macs"] == pytest.approx(0.5 * 10 + 0.3 * 20 + 0.2 * 40)
    best = choose_threshold(profile, max_drop_points=0.0)
    assert best["accuracy"] >= 0.9 and best["mean_macs"] == pytest.approx(19.0)
    loose = choose_threshold(profile, max_drop_points=30.0)  # everyone at exit 0 costs 30 points: allowed
    assert loose["mean_macs"] == 10 and loose["accuracy"] == pytest.approx(0.6)
    exactly = choose_threshold(profile, max_drop_points=(0.9 - 0.6) * 100)  # 30.000000000000004 drop
    assert exactly["mean_macs"] == 10


def test_exit_costs_grow_along_the_network_and_the_joint_loss_weights_exits() -> None:
    model = build_zoo_model("resnet", 10, SHAPE)
    ee = EarlyExitModel.build(model, DEFAULT_EXITS["resnet"], SHAPE, 10)
    costs = exit_costs(ee, SHAPE)
    assert costs.exit_macs == sorted(costs.exit_macs) and costs.exit_macs[0] < costs.exit_macs[-1] / 2
    # Savings count against the plain model (no heads): a sample passing every head costs more than it.
    assert costs.model_macs == sum(costs.segment_macs) < costs.exit_macs[-1]
    outs = [torch.randn(4, 10, requires_grad=True) for _ in range(3)]
    y = torch.tensor([0, 1, 2, 3])
    only_last = exit_loss([0.0, 0.0, 1.0])(outs, y, torch.empty(0))
    assert only_last.item() == pytest.approx(torch.nn.functional.cross_entropy(outs[2], y).item())
    with pytest.raises(ValueError):
        exit_loss([1.0, 1.0])(outs, y, torch.empty(0))


# ------------------------------------------------------------------------------------------ the stage


def _ee_recipe(**section: object) -> object:
    from tests.helpers import tiny_recipe
    from workbench.recipe import EarlyExitSection

    r = tiny_recipe("early-exit", epochs=1, samples_per_class=30, threads=1, rounds=5, max_time_s=1.0)
    r.bench.batch_sizes = [1]  # early exits are a batch-1 technique; the timings stream real samples
    r.model.zoo = "resnet"
    r.early_exit = EarlyExitSection(epochs=1, max_drop=5.0, **section)
    return r


def test_early_exit_stage_chooses_on_validation_reports_on_eval_and_ships_a_checked_bundle(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess
    import sys

    from workbench.core.store import RunStore
    from workbench.techniques import run_recipe

    bundle_dir = tmp_path / "ee-bundle"
    with RunStore(tmp_path / "runs.sqlite") as store:
        out = run_recipe(_ee_recipe(bundle_dir=str(bundle_dir)), store=store)
    assert out.status == "completed", out.error
    rec = next(s for s in out.summary["stages"] if s["name"] == "early_exit")
    assert rec["exits"] == DEFAULT_EXITS["resnet"] and 0.0 <= rec["threshold"] <= 1.01
    val, ev = rec["validation"], rec["eval"]
    assert (val["full_accuracy"] - val["accuracy"]) * 100 <= 5.0 + 1e-9  # the budget holds where it was chosen
    assert sum(ev["exit_shares"]) == pytest.approx(1.0) and len(ev["exit_shares"]) == 3
    # Savings are counted against the plain model, as the load step measured it (no exit heads).
    assert ev["full_macs"] == out.summary["model"]["macs"] and len(val["curve"]) > 10
    assert rec["after"]["accuracy"] == pytest.approx(ev["accuracy"], abs=1e-6)  # eval through the deployed module
    lat = rec["latency"]
    assert lat["paired"]["ci95"][0] <= lat["paired"]["ratio"] <= lat["paired"]["ci95"][1]
    assert lat["early_exit"]["p95_ms"] >= lat["early_exit"]["mean_ms"] * 0.5
    # The run's own paired timing includes the early-exit step, on real samples.
    assert [s["name"] for s in out.summary["speedup"]["steps"]] == ["early_exit"]
    # The bundle: ONNX segments + runner, checked against PyTorch.
    parity = rec["bundle"]["parity"]
    assert parity["top1_agreement"] >= 0.99 and parity["exit_agreement"] >= 0.99
    cfg = json.loads((bundle_dir / "thresholds.json").read_text())
    assert cfg["threshold"] == rec["threshold"] and cfg["segments"] == ["segment_0.onnx", "segment_1.onnx",
                                                                        "segment_2.onnx"]
    x = np.random.default_rng(0).standard_normal((3, *SHAPE)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([sys.executable, str(bundle_dir / "predict_early_exit.py"), str(tmp_path / "x.npy")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("sample ") == 3 and "exit" in run.stdout


def test_early_exit_refuses_what_it_cannot_do_before_any_work(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workbench.core.store import RunStore
    from workbench.recipe import QuantizeSection
    from workbench.techniques import run_recipe

    r = _ee_recipe()
    r.quantize = QuantizeSection()
    existing = tmp_path / "taken"
    existing.mkdir()
    with RunStore(tmp_path / "runs.sqlite") as store:
        out = run_recipe(r, store=store)
        assert out.status == "failed" and "cannot be combined with [quantize]" in out.error
        out = run_recipe(_ee_recipe(bundle_dir=str(existing)), store=store)
        assert out.status == "failed" and "already exists" in out.error
        assert "train" not in out.summary  # refused before training
        r = _ee_recipe(loss_weights=[1.0, 1.0])
        out = run_recipe(r, store=store)
        assert out.status == "failed" and "loss_weights has 2 values" in out.error
