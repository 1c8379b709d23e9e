"""One safety policy for every path that opens a model file (issue 10, "Security").

A crafted .pt2 (its pickled sample inputs run ``open(marker, "w")`` when torch.export.load reads
them) and a crafted pickle .pt are fed through EVERY entry point: ``bench``, ``run`` (model and
weights), the distillation teacher (file and teacher weights), ``sensitivity``, ``export``,
``sweep``, ``quantize`` (model and calibration data), ``report`` (rebuilding stored runs) and the
GUI model panel's loading function. Each must refuse with one line (exit 2 on the CLI), record a
failed run where one is created, and leave no marker file behind.
"""

from __future__ import annotations

import ast
import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.hostile import evil_npy, evil_pt, evil_pt2, good_pt2, tabular_recipe_text, tiny_onnx
from workbench.cli import main
from workbench.core.store import RunStore
from workbench.errors import ModelLoadError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    marker = d / "PWNED"
    return {"dir": d, "marker": marker, "pt2": evil_pt2(d / "evil.pt2", marker), "pt": evil_pt(d / "evil.pt", marker),
            "npy": evil_npy(d / "evil.npy", marker), "onnx": tiny_onnx(d / "tiny.onnx"),
            "good_pt2": good_pt2(d / "good.pt2")}


def _recipe(tmp_path: Path, model: str, extra: str = "", epochs: int = 0) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(tabular_recipe_text(model, extra, epochs=epochs))
    return path


def _refused(capsys: pytest.CaptureFixture[str], rc: int, marker: Path, *expected: str) -> str:
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2, err
    assert len(errors) == 1, err
    assert all(e in errors[0] for e in expected), errors[0]
    assert "Traceback" not in err
    assert not marker.exists(), "loading the hostile file ran its code"
    return errors[0]


def _last_run_failed(word: str) -> None:
    with RunStore() as store:
        run = store.list_runs()[0]
    assert run.status == "failed" and word in run.error, (run.status, run.error)


PT2_MODEL = 'source = "export"\npath = "{pt2}"'
ZOO_WITH_WEIGHTS = 'source = "zoo"\nzoo = "mlp"\nweights = "{pt}"'
ZOO = 'source = "zoo"\nzoo = "mlp"'


def test_bench_refuses_the_crafted_files(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", str(files["pt2"]), "--shape", "4", "--iters", "3", "--batch-sizes", "1"])
    _refused(capsys, rc, files["marker"], "evil.pt2: refused")
    rc = main(["bench", str(files["pt"]), "--shape", "4", "--iters", "3", "--batch-sizes", "1"])
    _refused(capsys, rc, files["marker"], "evil.pt: not a TorchScript archive")


@pytest.mark.parametrize("model, word", [(PT2_MODEL, "evil.pt2: refused"), (ZOO_WITH_WEIGHTS, "evil.pt: refused")])
def test_run_refuses_model_and_weights(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       model: str, word: str) -> None:
    recipe = _recipe(tmp_path, model.format(**files))
    _refused(capsys, main(["run", str(recipe), "--json"]), files["marker"], word)
    _last_run_failed(word)


@pytest.mark.parametrize("distill, word", [
    ('teacher = "{pt2}"', "evil.pt2: refused"),
    ('teacher = "zoo:mlp"\nteacher_weights = "{pt}"', "evil.pt: refused"),
    ('teacher = "{pt}"', "evil.pt: not a TorchScript archive"),  # .pt teachers are TorchScript: jit.load never unpickles code
])
def test_distillation_teacher_refuses(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      distill: str, word: str) -> None:
    recipe = _recipe(tmp_path, ZOO, "[distill]\n" + distill.format(**files) + "\n", epochs=1)
    _refused(capsys, main(["run", str(recipe), "--json"]), files["marker"], word)
    _last_run_failed(word)


@pytest.mark.parametrize("model, word", [(PT2_MODEL, "evil.pt2: refused"), (ZOO_WITH_WEIGHTS, "evil.pt: refused")])
def test_sensitivity_export_and_sweep_refuse(files: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], model: str, word: str) -> None:
    recipe = _recipe(tmp_path, model.format(**files))
    _refused(capsys, main(["sensitivity", str(recipe), "--json"]), files["marker"], word)
    _refused(capsys, main(["export", str(recipe), "--json", "--no-bench"]), files["marker"], word)
    _last_run_failed(word)
    _refused(capsys, main(["sweep", str(recipe), "--json", "--batch-sizes", "1", "--iters", "3"]),
             files["marker"], word)
    _last_run_failed(word)


def test_quantize_refuses_model_and_calibration_data(files: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q.onnx"
    _refused(capsys, main(["quantize", str(files["pt2"]), "--out", str(out)]), files["marker"], "evil.pt2: refused")
    rc = main(["quantize", str(files["onnx"]), "--method", "static", "--calib", str(files["npy"]),
               "--out", str(out)])
    _refused(capsys, rc, files["marker"], "evil.npy", "Python objects")
    assert not out.exists()


def test_report_does_not_load_hostile_stored_models(files: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A stored run whose recipe points at a hostile file: the report says why, and nothing runs."""
    data = tmp_path / "digits.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.integers(0, 255, (40, 4, 4), dtype=np.uint8), y=np.arange(40) % 2)
    text = (f'name = "stored"\n[model]\nsource = "export"\npath = "{files["pt2"]}"\n'
            f'[data]\nsource = "npz"\npath = "{data}"\n[train]\nepochs = 0\n')
    text_w = text.replace(f'source = "export"\npath = "{files["pt2"]}"', 'source = "zoo"\nzoo = "mlp"')
    with RunStore() as store:
        ids = []
        for recipe_text, weights in ((text, files["pt"]), (text_w, files["pt"])):
            run_id = store.create_run("stored", recipe_text)
            store.add_artifact(run_id, "weights", weights)
            store.finish_run(run_id, "completed", {"final": {"accuracy": 0.5}})
            ids.append(run_id)
    out = tmp_path / "r.html"
    assert main(["report", *map(str, ids), "--out", str(out), "--json", str(tmp_path / "r.json")]) == 0
    capsys.readouterr()
    status = json.loads((tmp_path / "r.json").read_text())["predictions"]["status"]
    assert "evil.pt2: refused" in status[str(ids[0])] and "evil.pt: refused" in status[str(ids[1])]
    assert not files["marker"].exists()


def test_gui_model_panel_loader_refuses(files: dict[str, Path]) -> None:
    from workbench.core.events import CancelToken, Reporter
    from workbench.gui.panels.model import build_model_for, summary_job
    from workbench.recipe import loads_recipe

    for model, word in ((PT2_MODEL, "evil.pt2: refused"), (ZOO_WITH_WEIGHTS, "evil.pt: refused")):
        recipe = loads_recipe(tabular_recipe_text(model.format(**files)))
        with pytest.raises(ModelLoadError, match=word):
            build_model_for(recipe)
        with pytest.raises(ModelLoadError, match=word):
            summary_job(recipe)(Reporter(), CancelToken())
    assert not files["marker"].exists()
    good = loads_recipe(tabular_recipe_text(f'source = "export"\npath = "{files["good_pt2"]}"'))
    loaded, shape, classes = build_model_for(good)  # the same path accepts an honest archive
    assert loaded.kind == "export" and shape == (4,) and classes == 2


def test_the_crafted_files_really_run_code_when_loaded_unsafely(files: dict[str, Path]) -> None:
    """Proof the files above are hostile: torch's own loaders run the payload (so the refusals matter)."""
    marker = files["marker"]
    with contextlib.suppress(Exception):  # torch falls back to weights_only=False, runs it, then trips
        torch.export.load(str(files["pt2"]))
    assert marker.exists()
    marker.unlink()
    torch.load(files["pt"], weights_only=False)
    assert marker.exists()
    marker.unlink()


# Calls that deserialize a model file; only the loaders module (the one door) may make them.
_RAW_LOADS = {("torch", "load"), ("jit", "load"), ("export", "load"), ("onnx", "load"), ("onnx", "load_model"),
              ("pickle", "load"), ("pickle", "loads"), ("torch", "jit_load")}
_THE_DOOR = ROOT / "workbench" / "core" / "models" / "loaders"  # the one package that opens model files


def _is_in_memory_round_trip(call: ast.Call) -> bool:
    """``pickle.loads(pickle.dumps(obj))``: rebuilds an object this process just made; nothing is read."""
    inner = call.args[0] if call.args else None
    return (call.func.attr == "loads" and isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute)
            and inner.func.attr == "dumps")


def test_only_the_loaders_module_deserializes_model_files() -> None:
    offenders = []
    for path in sorted((ROOT / "workbench").rglob("*.py")):
        if path.is_relative_to(_THE_DOOR):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value
            owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if (owner_name, node.func.attr) in _RAW_LOADS and not _is_in_memory_round_trip(node):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if owner_name == "np" and node.func.attr == "load":
                allow = next((k.value for k in node.keywords if k.arg == "allow_pickle"), None)
                if not (isinstance(allow, ast.Constant) and allow.value is False):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} (np.load without allow_pickle=False)")
    assert not offenders, "raw model/pickle loads outside core/models/loaders/: " + ", ".join(offenders)
