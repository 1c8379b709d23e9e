from __future__ import annotations

from pathlib import Path

import pytest

from workbench import RESOURCES
from workbench.errors import RecipeError
from workbench.recipe import (
    DistillSection,
    PruneSection,
    Recipe,
    check_device_support,
    dumps_recipe,
    load_recipe,
    loads_recipe,
    save_recipe,
)


def test_round_trip_is_identical(tmp_path: Path) -> None:
    r = Recipe(name="rt")
    r.batching.batch_size = 32
    r.prune = PruneSection(ratio=0.3, skip_layers=["fc"])
    r.distill = DistillSection(teacher="zoo:resnet", control=True)
    path = tmp_path / "r.toml"
    save_recipe(r, path)
    again = load_recipe(path)
    assert again == r
    save_recipe(again, tmp_path / "r2.toml")
    assert (tmp_path / "r2.toml").read_text() == path.read_text()


def test_every_shipped_recipe_is_valid() -> None:
    recipes = sorted((RESOURCES / "recipes").glob("*.toml"))
    assert recipes, "no recipes shipped"
    for p in recipes:
        load_recipe(p)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[batching]\nbatch_size = 0", "batching.batch_size = 0"),
        ("[batching]\nbatch_size = 'big'", "batching.batch_size = 'big'"),
        ("[train]\nlr = -1.0", "train.lr = -1.0"),
        ("[train]\nepochz = 3", "unknown key 'train.epochz'; allowed keys here: "),
        ("[precision]\nautocast = 'int4'", "'none', 'bf16' or 'fp16'"),
        ("[data]\neval_fraction = 1.5", "data.eval_fraction = 1.5"),
        ("[model]\nzoo = 'vgg'", "model.zoo = 'vgg'"),
        ("[prune]\nratio = 1.0", "prune.ratio = 1.0"),
        ("[prune]\nratio = 0.0", "prune.ratio = 0.0"),
        ("version = 7", "this Workbench reads version 1"),
        ("[model]\nsource = 'onnx'\npath = 'm.onnx'", "cannot be trained"),
        ("[model]\nsource = 'python'", "model.path is required"),
        ("[data]\nsource = 'csv'", "data.path is required"),
        ("[precision]\ndevice = 'cpu'\nautocast = 'fp16'", "needs CUDA"),
        ("[distill]\nalpha = 2.0", "distill.alpha = 2.0"),
        ("[bench]\nbatch_sizes = []", "bench.batch_sizes = []"),
        ("[[batching]]\nbatch_size = 3", "batching"),
        ("this is not toml", "invalid TOML"),
    ],
)
def test_bad_recipes_name_the_field(text: str, expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        loads_recipe(text, "bad.toml")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_fp16_on_cpu_only_machine_is_rejected() -> None:
    r = loads_recipe("[precision]\nautocast = 'fp16'")  # device auto: valid in general
    with pytest.raises(RecipeError, match="fp16.*needs CUDA.*bf16"):
        check_device_support(r, cuda_available=False)
    check_device_support(r, cuda_available=True)


def test_missing_and_folder_recipe(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(RecipeError, match="is a folder"):
        load_recipe(tmp_path)


def test_techniques_labels() -> None:
    r = Recipe()
    r.precision.autocast = "bf16"
    r.prune = PruneSection(method="structured", ratio=0.5)
    assert "bf16" in r.techniques and "prune-structured-0.5" in r.techniques
    assert "version = 1" in dumps_recipe(r)
