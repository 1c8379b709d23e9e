"""Pruning: structured (DepGraph) shrinks coupled layers into a smaller dense model that trains, saves,
reloads and exports; unstructured reaches the requested sparsity and leaves no masks behind."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import tiny_recipe
from workbench.core.measure.runtimes import export_onnx_for_bench
from workbench.core.models import build_zoo_model, save_weights
from workbench.core.models.resize import load_pruned_weights
from workbench.core.precision import PrecisionPlan
from workbench.core.store import RunStore
from workbench.errors import WorkbenchError
from workbench.recipe import PruneSection
from workbench.techniques import run_recipe
from workbench.techniques.prune.sensitivity import sensitivity_analysis
from workbench.techniques.prune.structured import classifier_layers, layer_table, prune_structured
from workbench.techniques.prune.unstructured import (
    has_pruning_leftovers,
    make_permanent,
    prune_unstructured,
    sparsity_rows,
    unstructured_targets,
)

SHAPE = (3, 32, 32)


@pytest.mark.parametrize("name", ["mobilenet", "resnet"])
def test_structured_half_prunes_runs_trains_saves_reloads_exports(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_zoo_model(name, 10, SHAPE)
    original_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    before = layer_table(model)
    rows = prune_structured(model, SHAPE, ratio=0.5, importance="l2")
    after = layer_table(model)

    # fewer channels; the classifier keeps its 10 outputs; residual/depthwise partners shrink together
    shrunk = [r for r in rows if r["out_after"] < r["out_before"]]
    assert len(shrunk) >= len(before) // 2
    assert after["classifier"]["out"] == 10
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels, n  # depthwise stays depthwise
    assert sum(p.numel() for p in model.parameters()) < 0.4 * original_bytes / 4

    x = torch.randn(4, *SHAPE)
    model.train()  # one optimizer step works on the pruned model
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        expected = model(x)
    assert expected.shape == (4, 10)

    # save as plain safetensors; rebuild = original architecture resized to the saved shapes
    path = tmp_path / "pruned.safetensors"
    save_weights(model, path)
    rebuilt = build_zoo_model(name, 10, SHAPE)
    resized = load_pruned_weights(rebuilt, path, SHAPE)
    assert resized
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), expected)

    onnx_path = export_onnx_for_bench(rebuilt, SHAPE, tmp_path / "pruned.onnx")
    assert onnx_path.stat().st_size < original_bytes  # the unpruned ONNX file holds at least these bytes


def test_load_pruned_weights_accepts_unpruned_weights(tmp_path: Path) -> None:
    model = build_zoo_model("small_cnn", 10, SHAPE)
    save_weights(model, tmp_path / "w.safetensors")
    other = build_zoo_model("small_cnn", 10, SHAPE)
    assert load_pruned_weights(other, tmp_path / "w.safetensors", SHAPE) == []
    torch.testing.assert_close(other.state_dict()["classifier.weight"], model.state_dict()["classifier.weight"])


@pytest.mark.parametrize("scope", ["global", "uniform"])
def test_unstructured_reaches_sparsity_and_leaves_no_masks(scope: str) -> None:
    model = build_zoo_model("small_cnn", 10, SHAPE)
    keys = set(model.state_dict())
    targets = unstructured_targets(model, SHAPE)
    assert all(n != "classifier" for n, _ in targets)
    prune_unstructured(model, targets, ratio=0.5, scope=scope, steps=2)
    rows, totals = sparsity_rows(model, targets)
    assert abs(totals["pruned_layers_sparsity"] - 0.5) <= 0.01
    if scope == "uniform":
        assert all(abs(r["sparsity"] - 0.5) <= 0.01 for r in rows)
    assert has_pruning_leftovers(model)  # masks are there while fine-tuning
    assert make_permanent(model) == len(targets)
    assert has_pruning_leftovers(model) == []
    assert set(model.state_dict()) == keys  # no weight_orig / weight_mask
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert all(len(m._forward_pre_hooks) == 0 for m in model.modules())
    _, totals = sparsity_rows(model, targets)
    assert abs(totals["pruned_layers_sparsity"] - 0.5) <= 0.01  # zeros survive making it permanent


def test_classifier_is_found_by_execution_order() -> None:
    model = build_zoo_model("resnet", 10, SHAPE)
    assert classifier_layers(model, SHAPE) == [model.classifier]


class _Scale(nn.Module):
    """Hard-codes 16 channels: pruning its input makes it fail, which the error must name."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.ones(1, 16, 1, 1)


class _Hardcoded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.scale = _Scale()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.scale(self.bn(self.conv(x)))).flatten(1))


def test_model_that_breaks_after_pruning_names_the_layer() -> None:
    with pytest.raises(WorkbenchError) as err:
        prune_structured(_Hardcoded(), SHAPE, ratio=0.5)
    msg = str(err.value)
    assert "'scale'" in msg and "\n" not in msg


def test_unknown_skip_layer_is_a_clear_error() -> None:
    model = build_zoo_model("small_cnn", 10, SHAPE)
    with pytest.raises(WorkbenchError, match=r"prune.skip_layers: no module named 'feature.0.0'.*'features.0.0'"):
        prune_structured(model, SHAPE, ratio=0.5, skip_layers=["feature.0.0"])


def test_skip_layers_keep_their_channels() -> None:
    model = build_zoo_model("small_cnn", 10, SHAPE)
    prune_structured(model, SHAPE, ratio=0.5, skip_layers=["features.0.0"], scope="global")
    assert model.features[0][0].out_channels == 32
    assert model.features[2][0].out_channels < 64


def test_sensitivity_rows_one_per_group() -> None:
    torch.manual_seed(0)
    model = build_zoo_model("small_cnn", 4, SHAPE, width=0.5)
    before = copy.deepcopy(model.state_dict())
    loader = [(torch.randn(8, *SHAPE), torch.randint(0, 4, (8,))) for _ in range(2)]
    result = sensitivity_analysis(model, SHAPE, loader, PrecisionPlan(torch.device("cpu")), ratio=0.5)
    assert {r.group for r in result.rows} == {"features.0.0", "features.2.0", "features.4.0", "features.5.0"}
    assert all(r.params_removed > 0 and r.channels_removed == r.channels // 2 for r in result.rows)
    assert all(abs(r.drop - (result.base_accuracy - r.accuracy) * 100) < 1e-9 for r in result.rows)
    for k, v in model.state_dict().items():  # the analysis never touches the model itself
        torch.testing.assert_close(v, before[k])


def test_sensitivity_for_recipe_trains_and_chooses_on_the_validation_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-group drops are a choice (prune.skip_layers): measured on val, never on the eval split."""
    import workbench.core.train as train_module
    import workbench.techniques.prune.sensitivity as sens
    from workbench.core.data import load_dataset

    seen: dict[str, object] = {}

    def record_train(module: nn.Module, train_loader: object, val_loader: object, *args: object, **kw: object) -> None:
        seen["training curve"] = val_loader.dataset  # type: ignore[attr-defined]

    def record_analysis(module: nn.Module, shape: object, val_loader: object, plan: object, **kw: object) -> object:
        seen["analysis"] = val_loader.dataset  # type: ignore[attr-defined]
        return sens.SensitivityResult(0.5, "l2", 0.5, 1)

    monkeypatch.setattr(train_module, "train", record_train)
    monkeypatch.setattr(sens, "sensitivity_analysis", record_analysis)
    recipe = tiny_recipe(epochs=1, samples_per_class=20)
    result = sens.sensitivity_for_recipe(recipe)
    data = load_dataset(recipe.data)
    assert set(seen) == {"training curve", "analysis"}
    for what, ds in seen.items():
        assert ds.paths == data.val.paths, what  # type: ignore[attr-defined]
    assert result.split == "validation" and result.to_dict()["split"] == "validation"


def _prune_recipe(method: str) -> object:
    r = tiny_recipe("prune", epochs=0, samples_per_class=20)  # fine-tuning is the training here: fast
    r.model.width = 0.5
    r.bench.batch_sizes = [1]
    r.bench.iters = 3
    r.prune = PruneSection(method=method, ratio=0.5, finetune_epochs=1, scope="global")
    return r


def test_prune_stage_records_before_after_prune_and_after() -> None:
    with RunStore() as store:
        outcome = run_recipe(_prune_recipe("structured"), store=store)
    assert outcome.status == "completed", outcome.error
    stage = outcome.summary["stages"][0]
    assert stage["name"] == "prune" and stage["method"] == "structured"
    for key in ("before", "after_prune", "after"):
        assert {"accuracy", "params", "macs", "size_bytes", "latency_ms_p50", "throughput"} <= set(stage[key]), key
    assert stage["after"]["params"] < stage["before"]["params"] / 2
    assert stage["after"]["macs"] < stage["before"]["macs"] / 2
    assert stage["per_layer"] and "structured pruning removed" in stage["note"]
    assert outcome.summary["final"] == stage["after"]


def test_unstructured_stage_says_it_is_not_faster() -> None:
    with RunStore() as store:
        outcome = run_recipe(_prune_recipe("unstructured"), store=store)
    assert outcome.status == "completed", outcome.error
    stage = outcome.summary["stages"][0]
    assert "do not speed up dense kernels or shrink dense files" in stage["note"]
    assert "latency p50" in stage["note"]
    assert stage["after"]["params"] == stage["before"]["params"]
    assert stage["after"]["size_bytes"] == stage["before"]["size_bytes"]
    assert abs(stage["sparsity"]["pruned_layers_sparsity"] - 0.5) <= 0.01
