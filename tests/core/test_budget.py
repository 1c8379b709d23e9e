"""Budget checks tolerate float rounding: a drop of exactly the budget is within it, everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.analysis.sweep import best_within_budget
from workbench.core.budget import BUDGET_TOLERANCE, over_budget, within_budget
from workbench.techniques.prune.sensitivity import SensitivityResult, SensitivityRow

EXACT_ONE_POINT = (0.9 - 0.89) * 100  # 90 % -> 89 %: one point, computed as 1.0000000000000009


def test_exact_one_point_drop_is_within_a_one_point_budget() -> None:
    assert EXACT_ONE_POINT > 1.0  # the rounding this module exists for
    assert within_budget(EXACT_ONE_POINT, 1.0) and not over_budget(EXACT_ONE_POINT, 1.0)
    assert within_budget(1.0, 1.0) and within_budget(-0.5, 1.0) and within_budget(0.0, 0.0)


def test_a_real_excess_is_over_budget() -> None:
    assert over_budget(1.01, 1.0) and not within_budget(1.01, 1.0)
    assert over_budget(1.0 + 10 * BUDGET_TOLERANCE, 1.0)  # the tolerance is rounding, not leniency
    assert over_budget((0.9 - 0.8) * 100, 9.99)


def _row(group: str, drop: float) -> SensitivityRow:
    return SensitivityRow(group, "Conv2d", 1, 8, 4, 100, 0.9 - drop / 100, drop)


def test_sensitivity_suggestions_keep_groups_at_exactly_the_threshold() -> None:
    result = SensitivityResult(0.5, "l2", 0.9, 1000, rows=[_row("edge", EXACT_ONE_POINT), _row("hot", 2.5),
                                                          _row("cool", 0.2)])
    assert result.most_sensitive(1.0) == ["hot"]
    assert result.most_sensitive(0.1) == ["hot", "edge", "cool"]


def test_sweep_latency_budget_tolerates_rounding() -> None:
    points = [{"p95_ms": 0.1 + 0.2, "throughput": 100.0}, {"p95_ms": 0.31, "throughput": 500.0}]
    assert points[0]["p95_ms"] > 0.3
    assert best_within_budget(points, 0.3) == points[0]


def test_quantize_fallback_accepts_a_drop_of_exactly_the_budget(tmp_path: Path) -> None:
    """A first INT8 attempt that loses exactly 1 point meets a 1-point budget: no layer is kept float."""
    import torch

    from workbench.core.models import build_zoo_model
    from workbench.core.onnx_export import export_onnx
    from workbench.techniques.quantize.methods import quantize_with_budget, synthetic_batches

    torch.manual_seed(0)
    shape = (3, 16, 16)
    fp32 = export_onnx(build_zoo_model("small_cnn", 4, shape, width=0.25), shape, tmp_path / "m.onnx")
    scored: list[Path] = []

    def evaluate(path: Path) -> float:
        scored.append(path)
        return 0.89

    out = quantize_with_budget(fp32, tmp_path / "q.onnx", method="static", evaluate=evaluate, float_accuracy=0.9,
                               max_accuracy_drop=1.0, batches=synthetic_batches(shape, 16, 8))
    assert out.attempts[0]["drop_points"] > 1.0  # computed with the rounding error ...
    assert len(scored) == 1 and len(out.attempts) == 1  # ... yet no fallback attempt was made
    assert not out.kept_float and not out.sensitivity and out.notes == []

    def worse(path: Path) -> float:  # a real 1.5-point loss still triggers the fallback
        return 0.885

    out = quantize_with_budget(fp32, tmp_path / "q2.onnx", method="static", evaluate=worse, float_accuracy=0.9,
                               max_accuracy_drop=1.0, batches=synthetic_batches(shape, 16, 8))
    assert len(out.attempts) > 1 and any("not met" in n for n in out.notes)


def test_cli_sensitivity_suggestions_use_the_same_rule(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import workbench.techniques.prune.sensitivity as sens
    from workbench.cli import main

    rows = [_row("hot", 2.5), _row("mid", 1.5), _row("edge", EXACT_ONE_POINT)]
    monkeypatch.setattr(sens, "sensitivity_for_recipe", lambda *a, **k: SensitivityResult(0.5, "l2", 0.9, 1000,
                                                                                          rows=rows))
    recipe = Path(__file__).resolve().parents[2] / "resources" / "recipes" / "prune_structured.toml"
    assert main(["sensitivity", str(recipe), "--max-drop", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["suggested_skip_layers"] == ["hot", "mid"] and out["split"] == "validation"
    assert main(["sensitivity", str(recipe), "--max-drop", "1"]) == 0
    text = capsys.readouterr().out
    assert "unpruned validation" in text and 'suggested: [prune] skip_layers = ["hot", "mid"]' in text
