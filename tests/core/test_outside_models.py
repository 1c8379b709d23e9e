"""Outside models and data (issue 10): classic CIFAR-style model files, factory functions, labels,
per-kind augmentation switches, and a data log line that says what the images became."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.core.data import load_dataset
from workbench.core.data.transforms import ImageTransform
from workbench.core.models import load_model
from workbench.errors import ModelLoadError
from workbench.recipe import DataSection, ModelSection, Recipe, recipe_from_dict

# The shape of the classic kuangliu/pytorch-cifar files: classes, factory functions, and a test()
# helper at the bottom that builds a model and prints its output (channels shrunk to stay fast).
CIFAR_STYLE = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        return F.relu(self.bn1(self.conv1(x)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 4
        self.conv1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        layers = []
        for planes, n in zip((4, 8), num_blocks):
            for s in [2] + [1] * (n - 1):
                layers.append(block(self.in_planes, planes, s))
                self.in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(8, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.conv1(x)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def ResNet18():
    return ResNet(BasicBlock, [2, 2])


def ResNet34(num_classes=10):
    net = ResNet(BasicBlock, [3, 4], num_classes=num_classes)
    return net


def make_tiny() -> nn.Module:
    return _opaque_builder()


def _opaque_builder():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


def count() -> int:
    return 3


def test():
    open(MARKER, "w").close()
    net = ResNet18()
    y = net(torch.randn(1, 3, 8, 8))
    print(y.size())
'''


@pytest.fixture
def cifar_file(tmp_path: Path) -> Path:
    path = tmp_path / "resnet.py"
    path.write_text(f"MARKER = {str(tmp_path / 'TEST_RAN')!r}\n" + CIFAR_STYLE)
    return path


def _load(path: Path, class_name: str, classes: int = 10, **kwargs: object) -> object:
    section = ModelSection(source="python", path=str(path), class_name=class_name, kwargs=kwargs)
    return load_model(section, classes, (3, 8, 8))


def test_factory_functions_load_and_are_listed(cifar_file: Path) -> None:
    loaded = _load(cifar_file, "ResNet18")
    assert loaded.label == "ResNet18 from resnet.py"  # type: ignore[attr-defined]
    assert loaded.module(torch.zeros(2, 3, 8, 8)).shape == (2, 10)  # type: ignore[attr-defined]
    loaded = _load(cifar_file, "ResNet34", classes=4)  # num_classes passed to a factory that takes it
    assert loaded.module(torch.zeros(2, 3, 8, 8)).shape == (2, 4)  # type: ignore[attr-defined]
    assert _load(cifar_file, "make_tiny").module is not None  # type: ignore[attr-defined]
    with pytest.raises(ModelLoadError) as exc:
        _load(cifar_file, "")
    msg = str(exc.value)
    assert "nn.Module classes defined in this file: BasicBlock, ResNet" in msg
    assert "model factories (functions returning one): ResNet18, ResNet34, make_tiny" in msg
    assert "test" not in msg.split("factories")[1] and "count" not in msg


def test_a_typo_gets_close_matches(cifar_file: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no class or factory 'ResNet81' \(did you mean 'ResNet18'"):
        _load(cifar_file, "ResNet81")


@pytest.mark.parametrize("name, why", [("test", "not a model factory"), ("count", "not a model factory"),
                                       ("F", "not an nn.Module class or factory")])
def test_functions_that_are_not_factories_are_never_called(cifar_file: Path, name: str, why: str) -> None:
    with pytest.raises(ModelLoadError, match=why):
        _load(cifar_file, name)
    assert not (cifar_file.parent / "TEST_RAN").exists(), "test() ran"


def test_runs_weights_and_bundles_name_the_file_model(cifar_file: Path, tmp_path: Path) -> None:
    """Not "small_cnn": the runs table, the weights' metadata and the bundle's metrics.json name ResNet18."""
    from safetensors import safe_open

    from workbench.core.store import RunStore
    from workbench.recipe import ExportSection
    from workbench.techniques import run_recipe

    r = Recipe(name="outside")
    r.model = ModelSection(source="python", path=str(cifar_file), class_name="ResNet18")
    r.data = DataSection(source="synthetic", synthetic_shape=[3, 8, 8], synthetic_classes=10, synthetic_samples=64)
    r.train.epochs = 0
    r.bench.enabled = False
    r.export = ExportSection(formats=["onnx", "safetensors"], bundle_dir=str(tmp_path / "bundle"))
    with RunStore() as store:
        outcome = run_recipe(r, store=store)
        assert outcome.status == "completed", outcome.error
        run = store.get_run(outcome.run_id)
        assert run is not None and run.model == "ResNet18 from resnet.py"
        weights = store.artifacts(outcome.run_id, "weights")[-1]
    assert weights.meta["model"] == "ResNet18 from resnet.py"
    with safe_open(str(weights.path), "pt") as f:
        assert f.metadata()["model"] == "ResNet18 from resnet.py"
    metrics = json.loads((tmp_path / "bundle" / "metrics.json").read_text())
    assert metrics["model"] == "ResNet18 from resnet.py"
    with safe_open(str(tmp_path / "bundle" / "weights.safetensors"), "pt") as f:
        assert f.metadata()["model"] == "ResNet18 from resnet.py"


# ------------------------------------------------------------------------------------- augmentation


def test_augment_switches_and_the_old_meaning_of_augment_true() -> None:
    assert DataSection().augmentations == ["crop"]  # new default: no flip
    old = recipe_from_dict({"data": {"augment": True}})  # a recipe written before the switches
    assert old.data.augmentations == ["crop", "flip"]
    assert recipe_from_dict({"data": {"augment": False}}).data.augmentations == []
    new = recipe_from_dict({"data": {"augment": True, "augment_flip": False}})
    assert new.data.augmentations == ["crop"]
    flip_only = recipe_from_dict({"data": {"augment_crop": False, "augment_flip": True}})
    assert flip_only.data.augmentations == ["flip"]
    assert recipe_from_dict(old.model_dump(mode="json")).data.augmentations == ["crop", "flip"]  # round trip


def test_each_augmentation_does_only_its_own_thing() -> None:
    torch.manual_seed(0)
    img = torch.arange(3 * 6 * 6, dtype=torch.uint8).reshape(3, 6, 6)  # no symmetry: flips and shifts show
    base = ImageTransform(train=False)(img)
    mirrored = ImageTransform(train=False)(img.flip(-1))
    flip_only = ImageTransform(train=True, crop=False, flip=True)
    outs = [flip_only(img) for _ in range(40)]
    assert all(torch.equal(o, base) or torch.equal(o, mirrored) for o in outs)
    assert any(torch.equal(o, mirrored) for o in outs) and any(torch.equal(o, base) for o in outs)
    crop_only = ImageTransform(train=True, crop=True, flip=False)
    outs = [crop_only(img) for _ in range(40)]
    assert not any(torch.equal(o, mirrored) for o in outs)
    assert any(not torch.equal(o, base) for o in outs)  # shifted
    batch = crop_only(img.unsqueeze(0).repeat(8, 1, 1, 1))
    assert not any(torch.equal(b, mirrored) for b in batch)
    assert ImageTransform(train=True, crop=False, flip=False).augmentations() == []


# ---------------------------------------------------------------------------------------- data log


def test_the_data_line_says_what_images_were_and_became(tmp_path: Path) -> None:
    """scikit-learn's digits as PNGs: 8x8 greyscale silently became 3x32x32 (16x the MACs)."""
    for k in ("zero", "one"):
        for i in range(4):
            (tmp_path / "digits" / k).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), i * 40, np.uint8), "L").save(tmp_path / "digits" / k / f"{i}.png")
    bundle = load_dataset(DataSection(source="image_folder", path=str(tmp_path / "digits"), image_size=32))
    assert "8x8 L images -> 3x32x32" in bundle.source_desc
    assert "train augmentation: crop" in bundle.source_desc
    Image.fromarray(np.zeros((16, 12, 3), np.uint8), "RGB").save(tmp_path / "digits" / "one" / "big.png")
    bundle = load_dataset(DataSection(source="image_folder", path=str(tmp_path / "digits"), image_size=16,
                                      augment=False))
    assert "2 sizes from 8x8 to 12x16 L/RGB images -> 3x16x16" in bundle.source_desc
    assert "no augmentation" in bundle.source_desc


def test_cache_is_a_technique_only_where_it_does_something() -> None:
    assert "cache" in Recipe().techniques  # the built-in image set decodes files: the cache helps
    folder = recipe_from_dict({"data": {"source": "image_folder", "path": "x"}})
    assert "cache" in folder.techniques
    for source in ("npz", "csv", "mnist", "synthetic"):
        r = recipe_from_dict({"data": {"source": source, "path": "x", "cache": True}})
        assert "cache" not in r.techniques, source
