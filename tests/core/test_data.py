"""Data sources, transforms and loaders: every source loads a real file the test writes."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.core.data import default_dataset as dd
from workbench.core.data.arrays import read_idx
from workbench.core.data.datasets import ImageFolderDataset, sample_previews
from workbench.core.data.loader import build_loader, measure_loader_throughput
from workbench.core.data.sources import load_dataset
from workbench.core.data.splits import stratified_split
from workbench.core.data.transforms import ImageTransform, normalize, random_crop, random_hflip
from workbench.core.events import CancelToken
from workbench.errors import Cancelled, DataLoadError
from workbench.recipe import DataSection, LoaderSection

SPC = 20  # smallest samples_per_class the recipe allows: keeps generation well under a second


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(h))
    return h


# ------------------------------------------------------------------------------------------ helpers


def make_image_folder(root: Path, classes: int = 3, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (30 + c, 40, 3), dtype=np.uint8)  # non-square: exercises the resize
            img = Image.fromarray(arr)
            if i % 2:
                img.save(d / f"{i}.jpg", quality=90)
            else:
                img.save(d / f"{i}.png")
    return root


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    code = {np.uint8: 0x08}[arr.dtype.type]
    data = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_mnist(folder: Path, gz: bool, n: int = 40, with_test: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    sfx = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz)
    write_idx(folder / f"train-labels-idx1-ubyte{sfx}", (np.arange(n) % 10).astype(np.uint8), gz)
    if with_test:
        write_idx(
            folder / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), gz
        )
        write_idx(folder / f"t10k-labels-idx1-ubyte{sfx}", (np.arange(20) % 10).astype(np.uint8), gz)
    return folder


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def numeric_csv(path: Path, n: int = 40, string_labels: bool = False) -> Path:
    rng = np.random.default_rng(2)
    lines = ["a,b,label,c"]
    for i in range(n):
        lab = ["cat", "dog"][i % 2] if string_labels else str(i % 3)
        lines.append(f"{rng.normal() * 10 + 5:.4f},{rng.normal():.4f},{lab},{i}")
    return write_csv(path, "\n".join(lines) + "\n")


def first(ds: torch.utils.data.Dataset) -> tuple[torch.Tensor, int]:
    return ds[0]


# ------------------------------------------------------------------------------------ default dataset


def test_default_dataset_is_deterministic_and_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = dd.ensure_default_dataset(SPC)
    assert a.name == f"shapes-v{dd.VERSION}-{SPC}" and dd.VERSION >= 2  # v1 caches (too easy) are not reused
    classes = sorted(p.name for p in a.iterdir() if p.is_dir())
    assert classes == sorted(dd.CLASS_NAMES) and len(classes) == 10
    assert all(len(list((a / c).glob("*.png"))) == SPC for c in classes)
    assert not [p for p in a.parent.iterdir() if p.name.startswith(".")]  # no temp folders left behind

    mtime = (a / "circle" / "00000.png").stat().st_mtime_ns
    assert dd.ensure_default_dataset(SPC) == a  # reused, not regenerated
    assert (a / "circle" / "00000.png").stat().st_mtime_ns == mtime

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "other"))
    b = dd.ensure_default_dataset(SPC)
    assert b != a
    for c in ("circle", "star", "dot_grid"):
        for i in (0, SPC - 1):
            pa, pb = (
                np.asarray(Image.open(a / c / f"{i:05d}.png")),
                np.asarray(Image.open(b / c / f"{i:05d}.png")),
            )
            assert pa.shape == (32, 32, 3)
            assert np.array_equal(pa, pb)


def test_shape_colour_sits_at_the_asked_distance_inside_the_gamut() -> None:
    """Faint and clear shapes get exactly the colour distance the generator drew (or the farthest corner)."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        background = rng.uniform(0, 255, 3).astype(np.float32)
        distance = float(rng.uniform(*dd.FAINT_CONTRAST) if rng.random() < 0.5 else rng.uniform(*dd.CONTRAST))
        colour = dd._colour_at_distance(rng, background, distance)
        assert np.all(colour >= 0) and np.all(colour <= 255)
        farthest = np.linalg.norm(np.where(background < 128, 255.0, 0.0) - background)
        assert np.linalg.norm(colour - background) == pytest.approx(min(distance, farthest), rel=1e-4)


def test_default_dataset_draws_faint_shapes_and_clutter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 2 is hard on purpose: about FAINT_P of the shapes are faint, and specks clutter the images."""
    distances: list[float] = []
    specks: list[int] = []
    real_colour, real_speck = dd._colour_at_distance, dd._draw_speck

    def record_colour(rng: np.random.Generator, background: np.ndarray, distance: float) -> np.ndarray:
        distances.append(distance)
        return real_colour(rng, background, distance)

    def record_speck(d: object, rng: np.random.Generator) -> None:
        specks.append(1)
        real_speck(d, rng)  # type: ignore[arg-type]

    monkeypatch.setattr(dd, "_colour_at_distance", record_colour)
    monkeypatch.setattr(dd, "_draw_speck", record_speck)
    n = 600
    for i in range(n):
        dd.render_sample(i % len(dd.CLASS_NAMES), i)
    faint = sum(d < dd.CONTRAST[0] for d in distances) / n
    assert len(distances) == n and 0.5 * dd.FAINT_P < faint < 2 * dd.FAINT_P
    assert 0.5 * dd.MAX_SPECKS / 2 < len(specks) / n < 1.5 * dd.MAX_SPECKS / 2


def test_default_dataset_replaces_incomplete_folder() -> None:
    a = dd.ensure_default_dataset(SPC)
    victim = a / "ring" / "00003.png"
    victim.unlink()
    again = dd.ensure_default_dataset(SPC)
    assert again == a and victim.exists()


def test_load_default_source() -> None:
    b = load_dataset(DataSection(source="default", samples_per_class=SPC))
    assert b.kind == "image" and b.num_classes == 10 and b.input_shape == (3, 32, 32)
    assert sorted(b.class_names) == sorted(dd.CLASS_NAMES)
    assert len(b.train) + len(b.val) + len(b.eval) == 10 * SPC
    assert len(b.eval) == 10 * round(SPC * 0.2)  # stratified: same share of every class
    assert len(b.val) == 10 * round((SPC - SPC * 0.2) * 0.1)  # val_fraction of what eval left
    x, y = b.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert float(x.min()) >= -1.0 - 1e-6 and float(x.max()) <= 1.0 + 1e-6  # mean = std = 0.5


# -------------------------------------------------------------------------------------------- sources


def test_image_folder_png_and_jpg(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    b = load_dataset(DataSection(source="image_folder", path=str(root), image_size=16, eval_fraction=0.34))
    assert b.class_names == ["class_0", "class_1", "class_2"] and b.num_classes == 3
    assert b.input_shape == (3, 16, 16)
    assert len(b.train) + len(b.val) + len(b.eval) == 18 and len(b.eval) == 6 and len(b.val) == 3
    assert {Path(p).suffix for p in b.train.paths} == {".png", ".jpg"}
    for ds in (b.train, b.val, b.eval):
        x, _ = ds[0]
        assert x.shape == (3, 16, 16)


def test_image_folder_limit(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", classes=2, per_class=10)
    b = load_dataset(DataSection(source="image_folder", path=str(root), limit=8))
    assert len(b.train) + len(b.val) + len(b.eval) == 8


def test_csv_numeric_and_string_labels(tmp_path: Path) -> None:
    b = load_dataset(DataSection(source="csv", path=str(numeric_csv(tmp_path / "d.csv"))))
    assert b.kind == "tabular" and b.input_shape == (3,) and b.class_names == ["0", "1", "2"]
    assert len(b.train) + len(b.val) + len(b.eval) == 40
    feats = torch.stack([b.train[i][0] for i in range(len(b.train))])
    assert torch.allclose(feats.mean(0), torch.zeros(3), atol=1e-5)  # standardised with train stats

    b2 = load_dataset(
        DataSection(
            source="csv", path=str(numeric_csv(tmp_path / "s.csv", string_labels=True)), normalize=False
        )
    )
    assert b2.class_names == ["cat", "dog"] and b2.num_classes == 2


def test_npz_variants(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    p = tmp_path / "tab.npz"
    np.savez(p, x=rng.normal(size=(30, 5)).astype(np.float32), y=np.arange(30) % 3)
    b = load_dataset(DataSection(source="npz", path=str(p)))
    assert b.kind == "tabular" and b.input_shape == (5,) and b.num_classes == 3

    p = tmp_path / "img.npz"
    np.savez(p, images=rng.integers(0, 256, (24, 12, 12, 3), dtype=np.uint8), labels=np.arange(24) % 2)
    b = load_dataset(DataSection(source="npz", path=str(p)))
    assert b.kind == "image" and b.input_shape == (3, 12, 12)
    assert b.train[0][0].shape == (3, 12, 12)

    p = tmp_path / "split.npz"
    np.savez(
        p,
        x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
        y_train=np.array(["a", "b"] * 10),
        x_test=rng.integers(0, 256, (6, 8, 8), dtype=np.uint8),
        y_test=np.array(["a", "b", "c"] * 2),
    )
    b = load_dataset(DataSection(source="npz", path=str(p)))
    assert (len(b.train), len(b.val), len(b.eval)) == (18, 2, 6)  # the file's own test split wins; val from train
    assert b.class_names == ["a", "b", "c"] and b.input_shape == (1, 8, 8)


def test_npz_own_validation_arrays_are_the_val_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x_val = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    arrays = dict(
        x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
        y_train=np.array(["a", "b"] * 10),
        x_val=x_val,
        y_val=np.array(["b", "c", "b", "c"]),
    )
    p = tmp_path / "tvt.npz"
    np.savez(p, **arrays, x_test=rng.integers(0, 256, (6, 8, 8), dtype=np.uint8), y_test=np.array(["a", "b"] * 3))
    b = load_dataset(DataSection(source="npz", path=str(p)))
    assert (len(b.train), len(b.val), len(b.eval)) == (20, 4, 6)
    assert b.class_names == ["a", "b", "c"]  # a class only the validation arrays hold still gets its code
    assert b.val.targets.tolist() == [1, 2, 1, 2]
    assert torch.equal(b.val.raw_image(0), torch.from_numpy(x_val[0])[None])

    p = tmp_path / "tv.npz"  # no test arrays: eval is carved from train, val stays the file's own
    np.savez(p, **arrays)
    b = load_dataset(DataSection(source="npz", path=str(p), eval_fraction=0.2))
    assert (len(b.train), len(b.val), len(b.eval)) == (16, 4, 4)

    p = tmp_path / "bad.npz"
    np.savez(p, **{**arrays, "x_val": rng.integers(0, 256, (4, 9, 9), dtype=np.uint8)})
    with pytest.raises(DataLoadError, match="x_val samples are"):
        load_dataset(DataSection(source="npz", path=str(p)))


@pytest.mark.parametrize("source", ["default", "image_folder", "csv", "npz", "mnist", "synthetic"])
def test_every_source_has_a_disjoint_stratified_validation_split(tmp_path: Path, source: str) -> None:
    """Choices (accuracy budgets, sensitivity) are made on ``val``: it must be real, separate and balanced."""
    rng = np.random.default_rng(5)
    path = ""
    if source == "image_folder":
        path = str(make_image_folder(tmp_path / "imgs", classes=3, per_class=20))
    elif source == "csv":
        path = str(numeric_csv(tmp_path / "d.csv", n=90))
    elif source == "npz":
        path = str(tmp_path / "d.npz")
        np.savez(path, x=rng.integers(0, 256, (90, 8, 8, 3), dtype=np.uint8), y=np.arange(90) % 3)
    elif source == "mnist":
        path = str(make_mnist(tmp_path / "mnist", gz=False, n=100, with_test=False))
    section = DataSection(source=source, path=path, samples_per_class=SPC, synthetic_samples=300,
                          synthetic_classes=3, val_fraction=0.25, image_size=8)
    b = load_dataset(section)
    assert len(b.val) > 0 and "val" in b.source_desc
    tr, va, ev = (np.asarray(ds.targets) for ds in (b.train, b.val, b.eval))
    n_val = np.bincount(va, minlength=b.num_classes)
    n_rest = n_val + np.bincount(tr, minlength=b.num_classes)
    assert n_val.min() >= 1  # every class is validated
    assert np.all(np.abs(n_val - 0.25 * n_rest) <= 1)  # stratified: val_fraction of each class that eval left
    if source in ("default", "image_folder"):  # disjoint files, and no augmentation on the val split
        assert not set(b.val.paths) & set(b.train.paths) and not set(b.val.paths) & set(b.eval.paths)
        assert not b.val.transform.augment
    x0, y0 = b.val[0]
    again = load_dataset(section)  # deterministic for a given data.seed
    assert torch.equal(again.val[0][0], x0) and again.val[0][1] == y0
    assert np.array_equal(np.asarray(again.val.targets), va)


def test_too_few_samples_for_a_validation_split_names_the_field(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", classes=2, per_class=2)  # 1 eval + 1 train per class
    with pytest.raises(DataLoadError, match=r"train, validation and eval \(2 / 0 / 2\).*data.val_fraction"):
        load_dataset(DataSection(source="image_folder", path=str(root)))


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_folder(tmp_path: Path, gz: bool) -> None:
    folder = make_mnist(tmp_path / "mnist", gz)
    b = load_dataset(DataSection(source="mnist", path=str(folder)))
    assert (len(b.train), len(b.val), len(b.eval)) == (30, 10, 20)
    assert b.num_classes == 10 and b.input_shape == (1, 28, 28) and b.class_names[3] == "3"
    assert b.train[0][0].shape == (1, 28, 28)


def test_mnist_images_file_with_labels_beside(tmp_path: Path) -> None:
    folder = make_mnist(tmp_path / "m", gz=True, with_test=False)
    b = load_dataset(
        DataSection(source="mnist", path=str(folder / "train-images-idx3-ubyte.gz"), eval_fraction=0.25)
    )
    assert (len(b.train), len(b.val), len(b.eval)) == (20, 10, 10)
    assert read_idx(folder / "train-labels-idx1-ubyte.gz").tolist()[:3] == [0, 1, 2]


def test_synthetic_is_deterministic() -> None:
    sec = DataSection(
        source="synthetic", synthetic_shape=[3, 8, 8], synthetic_classes=4, synthetic_samples=64
    )
    a, b = load_dataset(sec), load_dataset(sec)
    assert a.kind == "tensor" and a.input_shape == (3, 8, 8) and a.num_classes == 4
    assert len(a.train) + len(a.val) + len(a.eval) == 64
    assert torch.equal(a.train[5][0], b.train[5][0]) and a.train[5][1] == b.train[5][1]
    assert not torch.equal(a.train[5][0], a.train[6][0])


def test_stratified_split_keeps_class_shares() -> None:
    targets = np.array([0] * 50 + [1] * 10)
    tr, ev = stratified_split(targets, 0.2, seed=0)
    assert len(tr) + len(ev) == 60 and not set(tr) & set(ev)
    assert (targets[ev] == 0).sum() == 10 and (targets[ev] == 1).sum() == 2
    assert np.array_equal(stratified_split(targets, 0.2, seed=0)[1], ev)


# ------------------------------------------------------------------------------------------ transforms


def test_transforms_keep_shapes_and_are_seeded() -> None:
    x = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = random_crop(x, 16, padding=4, generator=g1)
    b = random_crop(x, 16, padding=4, generator=g2)
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert random_crop(x.float(), 12, generator=g1).shape == (3, 12, 12)

    batch = torch.rand(8, 3, 16, 16)
    assert random_crop(batch, 16, 2, torch.Generator().manual_seed(0)).shape == batch.shape
    flipped = random_hflip(batch, p=1.0)
    assert torch.equal(flipped, batch.flip(-1))
    assert torch.equal(random_hflip(x, p=0.0), x)

    n = normalize(torch.full((3, 2, 2), 255, dtype=torch.uint8), [0.5], [0.5])
    assert n.dtype == torch.float32 and torch.allclose(n, torch.ones(3, 2, 2))
    assert torch.allclose(
        normalize(torch.zeros(2, 3, 1, 1), [0.0, 0.5, 1.0], [1.0, 0.5, 1.0])[0].flatten(),
        torch.tensor([0.0, -1.0, -1.0]),
    )


def test_image_transform_train_and_eval() -> None:
    x = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    tr = ImageTransform(train=True, augment=True)
    ev = ImageTransform(train=False)
    torch.manual_seed(0)
    a = tr(x)
    torch.manual_seed(0)
    assert torch.equal(a, tr(x)) and a.shape == (3, 16, 16) and a.dtype == torch.float32
    e = ev(x)
    assert torch.allclose(e, (x.float() / 255 - 0.5) / 0.5, atol=1e-6)  # fused ops: tiny rounding near 0
    assert torch.allclose(ImageTransform(train=False, normalize=False)(x), x.float() / 255)
    f = torch.rand(3, 16, 16)
    assert torch.equal(ev(f), f)  # float input is taken as already scaled
    clone = pickle.loads(pickle.dumps(tr))
    assert repr(clone) == repr(tr)


# -------------------------------------------------------------------------------- pickling and loaders


def test_every_dataset_pickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(20, 4)), y=np.arange(20) % 2)
    sections = [
        DataSection(source="default", samples_per_class=SPC),
        DataSection(source="synthetic", synthetic_shape=[3, 8, 8], synthetic_samples=32),
        DataSection(source="image_folder", path=str(make_image_folder(tmp_path / "imgs")), image_size=16),
        DataSection(source="csv", path=str(numeric_csv(tmp_path / "d.csv"))),
        DataSection(source="npz", path=str(tmp_path / "d.npz")),
        DataSection(source="mnist", path=str(make_mnist(tmp_path / "mnist", gz=True))),
    ]
    for sec in sections:
        b = load_dataset(sec)
        for ds in (b.train, b.eval):
            clone = pickle.loads(pickle.dumps(ds))
            assert len(clone) == len(ds)
        x, y = b.eval[0]
        cx, cy = pickle.loads(pickle.dumps(b.eval))[0]
        assert torch.equal(x, cx) and y == cy, sec.source


def test_cache_avoids_second_decode() -> None:
    for cache, expected in ((True, 1), (False, 2)):
        b = load_dataset(DataSection(source="default", samples_per_class=SPC, cache=cache))
        ds = b.train
        assert isinstance(ds, ImageFolderDataset) and ds.cache_enabled is cache
        loader = build_loader(ds, 16, LoaderSection(num_workers=0), train=False)
        for _ in range(2):
            assert sum(len(y) for _, y in loader) == len(ds)
        assert ds.decode_count == expected * len(ds)


def test_worker_loader_fills_shared_cache_and_reports_errors_in_one_line(tmp_path: Path) -> None:
    b = load_dataset(DataSection(source="default", samples_per_class=SPC))
    ds = b.train
    assert isinstance(ds, ImageFolderDataset)
    cfg = LoaderSection(num_workers=1, mp_context="forkserver", persistent_workers=False)
    loader = build_loader(ds, 32, cfg, train=True, seed=0)
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    batches = list(loader)
    assert batches and batches[0][0].shape == (32, 3, 32, 32) and batches[0][1].dtype == torch.int64
    assert all(len(y) == 32 for _, y in batches)  # drop_last on train
    # The worker decoded into shared memory: the main process sees the filled cache without decoding.
    assert ds.decode_count == 0 and ds.cached_count == len(batches) * 32

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    broken = ImageFolderDataset([bad, bad], [0, 1], 32, ImageTransform(train=False), cache=False)
    with pytest.raises(DataLoadError) as err:
        list(build_loader(broken, 2, cfg, train=False))
    assert "bad.png" in str(err.value) and "\n" not in str(err.value)


def test_build_loader_options() -> None:
    b = load_dataset(DataSection(source="synthetic", synthetic_shape=[4], synthetic_samples=100))
    cfg = LoaderSection(num_workers=0, pin_memory=True, drop_last=True)
    tr = build_loader(b.train, 32, cfg, train=True, seed=1)
    ev = build_loader(b.eval, 32, cfg, train=False)
    assert tr.drop_last and not ev.drop_last
    assert not tr.persistent_workers and tr.prefetch_factor is None
    assert tr.pin_memory is torch.cuda.is_available()
    assert sum(len(y) for _, y in ev) == len(b.eval)
    order1 = [y.tolist() for _, y in build_loader(b.train, 32, cfg, train=True, seed=1)]
    order2 = [y.tolist() for _, y in build_loader(b.train, 32, cfg, train=True, seed=1)]
    assert order1 == order2  # seeded shuffle
    big = build_loader(b.eval, 10_000, cfg, train=True)
    assert not big.drop_last  # would otherwise yield an empty epoch


def test_measure_loader_throughput_and_cancel() -> None:
    b = load_dataset(DataSection(source="synthetic", synthetic_shape=[3, 8, 8], synthetic_samples=256))
    loader = build_loader(b.train, 16, LoaderSection(), train=True)
    assert measure_loader_throughput(loader, 5) > 0
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        measure_loader_throughput(loader, 5, token)


def test_sample_previews(tmp_path: Path) -> None:
    b = load_dataset(DataSection(source="default", samples_per_class=SPC))
    prev = sample_previews(b, n=12)
    assert len(prev) == 12
    img, name = prev[0]
    assert img is not None and img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert len({n for _, n in prev[:10]}) == 10  # round-robin over classes

    m = load_dataset(DataSection(source="mnist", path=str(make_mnist(tmp_path / "m", gz=False))))
    mi, _ = sample_previews(m, 1)[0]
    assert mi is not None and mi.shape == (28, 28, 3)

    t = load_dataset(DataSection(source="csv", path=str(numeric_csv(tmp_path / "d.csv"))))
    assert (
        all(img is None for img, _ in sample_previews(t, 4)) and sample_previews(t, 4)[0][1] in t.class_names
    )


# -------------------------------------------------------------------------------------------- errors


def _err(section: DataSection) -> str:
    with pytest.raises(DataLoadError) as exc:
        load_dataset(section)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_error_missing_path(tmp_path: Path) -> None:
    for src in ("image_folder", "csv", "npz", "mnist"):
        msg = _err(DataSection(source=src, path=str(tmp_path / "nope")))
        assert "nope" in msg and "not found" in msg


def test_error_empty_image_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert "no class sub-folders" in _err(DataSection(source="image_folder", path=str(tmp_path / "empty")))
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "notes.txt").write_text("hi")
    assert "hold no images" in _err(DataSection(source="image_folder", path=str(tmp_path / "noimg")))
    one = make_image_folder(tmp_path / "one", classes=1)
    assert "at least 2 classes" in _err(DataSection(source="image_folder", path=str(one)))


def test_error_corrupt_image(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", classes=2, per_class=3)
    (root / "class_1" / "broken.png").write_bytes(b"this is not a png")
    msg = _err(DataSection(source="image_folder", path=str(root)))
    assert "broken.png" in msg

    truncated = tmp_path / "trunc.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 7).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    ds = ImageFolderDataset([truncated], [0], 32, None, cache=True)
    with pytest.raises(DataLoadError, match="trunc.png"):
        ds[0]


def test_error_csv(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "a.csv", "f1,f2,target\n1,2,0\n3,4,1\n")
    msg = _err(DataSection(source="csv", path=str(p)))
    assert "'label'" in msg and "f1, f2, target" in msg
    p = write_csv(tmp_path / "b.csv", "f1,color,label\n1,red,0\n3,blue,1\n")
    assert "'color'" in _err(DataSection(source="csv", path=str(p)))
    p = write_csv(tmp_path / "c.csv", "f1,label\n1,0\n3,0\n4,0\n")
    assert "at least 2 classes" in _err(DataSection(source="csv", path=str(p)))


def test_error_npz(tmp_path: Path) -> None:
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([{"a": 1}, {"b": 2}], dtype=object), y=np.array([0, 1]))
    assert "dtype=object" in _err(DataSection(source="npz", path=str(p)))
    p = tmp_path / "names.npz"
    np.savez(p, foo=np.zeros((4, 2)), bar=np.zeros(4))
    msg = _err(DataSection(source="npz", path=str(p)))
    assert "foo" in msg and "bar" in msg
    p = tmp_path / "len.npz"
    np.savez(p, x=np.zeros((4, 2)), y=np.array([0, 1, 0]))
    assert "must match" in _err(DataSection(source="npz", path=str(p)))
    p = tmp_path / "notzip.npz"
    p.write_bytes(b"garbage")
    assert "not an .npz" in _err(DataSection(source="npz", path=str(p)))


def test_error_mnist(tmp_path: Path) -> None:
    folder = make_mnist(tmp_path / "bad", gz=False, with_test=False)
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + b"\0" * 100)
    msg = _err(DataSection(source="mnist", path=str(folder)))
    assert "bad magic" in msg and "train-images-idx3-ubyte" in msg

    folder = make_mnist(tmp_path / "count", gz=False, with_test=False)
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(7, np.uint8), gz=False)
    assert "7 labels" in _err(DataSection(source="mnist", path=str(folder)))

    (tmp_path / "nofiles").mkdir()
    assert "train-images-idx3-ubyte" in _err(DataSection(source="mnist", path=str(tmp_path / "nofiles")))


def test_preload_fills_cache_once() -> None:
    b = load_dataset(DataSection(source="default", samples_per_class=SPC))
    ds = b.eval
    assert isinstance(ds, ImageFolderDataset)
    assert ds.preload(threads=2) == len(ds) and ds.preload() == 0
    decoded = ds.decode_count
    for i in range(len(ds)):
        ds[i]
    assert ds.decode_count == decoded == len(ds)
