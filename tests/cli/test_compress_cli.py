"""CLI side of pruning and distillation: a chained recipe end to end, `workbench sensitivity`, the
example recipes, and bad inputs that must fail in one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import tiny_recipe
from workbench import RESOURCES
from workbench.cli import main
from workbench.recipe import DistillSection, PruneSection, load_recipe, save_recipe


def _write(tmp_path: Path, recipe: object, name: str = "r.toml") -> Path:
    path = tmp_path / name
    save_recipe(recipe, path)  # type: ignore[arg-type]
    return path


def test_chained_recipe_runs_from_the_cli_and_records_every_stage(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    r = tiny_recipe("chain", epochs=1, samples_per_class=20)
    r.model.width = 0.5
    r.bench.batch_sizes = [1]
    r.bench.iters = 3
    r.prune = PruneSection(method="structured", ratio=0.5, finetune_epochs=1, finetune_distill=True)
    assert main(["run", str(_write(tmp_path, r)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "completed"
    assert out["baseline"]["label"] == "baseline" and out["final"]["label"] == "prune-after"
    names = [s["name"] for s in out["stages"]]
    assert names[0] == "prune"
    prune = out["stages"][0]
    assert prune["finetune_distill"] is True and prune["finetune"]
    for key in ("before", "after_prune", "after"):
        assert prune[key]["params"] and prune[key]["latency_ms_p50"] is not None
    assert prune["after"]["params"] < prune["before"]["params"]
    assert out["final"] == out["stages"][-1]["after"]


def test_sensitivity_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = tiny_recipe("sens", epochs=1, samples_per_class=20)
    r.model.width = 0.5
    path = _write(tmp_path, r)
    assert main(["sensitivity", str(path), "--ratio", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ratio"] == 0.5 and len(out["rows"]) == 4
    assert {"group", "params_removed", "accuracy", "drop"} <= set(out["rows"][0])
    assert isinstance(out["suggested_skip_layers"], list)
    r.model.weights = ""
    r.train.epochs = 0  # untrained: still a table, with a warning
    assert main(["sensitivity", str(_write(tmp_path, r, "u.toml")), "--ratio", "0.3"]) == 0
    captured = capsys.readouterr()
    assert "Pruning sensitivity" in captured.out and "features.0.0" in captured.out


@pytest.mark.parametrize("name", ["prune_structured", "prune_unstructured", "distill", "chain"])
def test_example_recipes_are_valid(name: str) -> None:
    recipe = load_recipe(RESOURCES / "recipes" / f"{name}.toml")
    assert recipe.prune is not None or recipe.distill is not None
    if name == "distill":
        assert recipe.distill is not None and recipe.distill.control
    if name == "chain":
        assert recipe.prune is not None and recipe.prune.finetune_distill


def test_bad_inputs_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[prune]\nratio = 1.0\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "prune.ratio = 1.0" in err and err.count("\n") == 0

    assert main(["sensitivity", str(bad), "--ratio", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err

    r = tiny_recipe("bad-teacher", epochs=1, samples_per_class=20)
    r.bench.enabled = False
    r.distill = DistillSection(teacher="run:4242")
    assert main(["run", str(_write(tmp_path, r, "t.toml"))]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: distill.teacher = 'run:4242': no run with that ID")

    r = tiny_recipe("bad-skip", epochs=0, samples_per_class=20)
    r.bench.enabled = False
    r.prune = PruneSection(skip_layers=["nope"], finetune_epochs=0)
    assert main(["run", str(_write(tmp_path, r, "s.toml"))]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: prune.skip_layers: no module named 'nope'")
