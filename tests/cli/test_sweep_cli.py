"""``workbench sweep`` and ``workbench report`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.core.store import RunStore
from workbench.recipe import Recipe, save_recipe


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    r = Recipe.model_validate({"name": "cli-sweep", "model": {"zoo": "mlp"},
                               "data": {"source": "synthetic", "synthetic_samples": 128},
                               "batching": {"batch_size": 16},
                               "bench": {"iters": 3, "warmup": 1, "threads": 1, "max_time_s": 2.0}})
    path = tmp_path / "sweep.toml"
    save_recipe(r, path)
    return path


def test_sweep_json_stores_one_run_and_report_exports_it(recipe_file: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", str(recipe_file), "--batch-sizes", "1,2,4,8", "--precisions", "fp32,fp16",
                 "--latency-budget", "500", "--train-steps", "3", "--workers", "0", "--cache", "off",
                 "--loader-batches", "3", "--loader-steps", "3", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "completed"
    sw = result["sweep"]
    assert [p["batch_size"] for p in sw["inference"]] == [1, 2, 4, 8]
    assert {p["batch_size"] for p in sw["train"]} == {2, 4, 8}  # BatchNorm cannot train on one sample
    assert any(s["what"] == "train fp32 batch 1" for s in sw["skipped"])
    assert sw["budget"]["best"]["batch_size"] in (1, 2, 4, 8)
    assert sw["loader"]["points"][0]["verdict"]["kind"] in ("loader-bound", "compute-bound", "balanced")
    runs = RunStore().list_runs()
    assert [(r.id, r.kind) for r in runs] == [(result["run_id"], "sweep")]

    assert main(["show", str(result["run_id"]), "--json"]) == 0  # re-opens like any run
    shown = json.loads(capsys.readouterr().out)
    assert shown["sweep"]["inference"] == sw["inference"]

    out = tmp_path / "r.html"
    assert main(["report", str(result["run_id"]), "--out", str(out), "--csv", "--json", "--no-predictions"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    html = out.read_text()
    assert 'id="sweeps"' in html and html.count('data-chart="') >= 4
    assert out.with_suffix(".csv").exists() and json.loads(out.with_suffix(".json").read_text())["sweeps"]


def test_sweep_prints_tables_without_json(recipe_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", str(recipe_file), "--batch-sizes", "2,4", "--no-train", "--iters", "3"]) == 0
    out = capsys.readouterr().out
    assert "batch size x precision" in out and "inference" in out


def test_bad_arguments_are_one_line_user_errors(recipe_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", str(recipe_file), "--workers", "-1"]) == 2
    assert main(["sweep", str(recipe_file), "--precisions", "int4"]) == 2
    err = capsys.readouterr().err
    assert "fp32,bf16,fp16" in err and len(err.strip().splitlines()) == 2
    assert main(["report", "999", "--out", "x.html"]) == 2
    assert "no run with ID 999" in capsys.readouterr().err
