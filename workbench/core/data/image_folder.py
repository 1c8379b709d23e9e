"""Image folders (one sub-folder per class): scan, verify every file up front, split, decode lazily."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.core.data.datasets import IMAGE_EXTS, DatasetBundle, ImageFolderDataset, augment_note
from workbench.core.data.splits import (
    carve_validation,
    check_split,
    need_two_classes,
    stratified_split,
    subsample,
)
from workbench.core.data.transforms import ImageTransform
from workbench.errors import DataLoadError
from workbench.recipe import DataSection


def _scan_image_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    if not root.is_dir():
        raise DataLoadError(f"{root}: is a file; image_folder needs a folder with one sub-folder per class")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS]
        hint = (
            f" ({len(loose)} images lie directly in it: move them into {root}/<class_name>/)" if loose else ""
        )
        raise DataLoadError(
            f"{root}: no class sub-folders{hint}; expected {root}/<class_name>/*.png|jpg|jpeg|bmp"
        )
    paths: list[Path] = []
    labels: list[int] = []
    names: list[str] = []
    for d in subdirs:
        files = sorted(
            p
            for p in d.rglob("*")
            if p.suffix.lower() in IMAGE_EXTS
            and not any(part.startswith(".") for part in p.relative_to(d).parts)
        )
        odd = next((f for f in files if not f.is_file()), None)
        if odd is not None:
            raise DataLoadError(f"{odd}: not a regular file (a folder, pipe or device with an image name); "
                                "remove it from the dataset folder")
        if not files:
            continue
        names.append(d.name)
        paths.extend(files)
        labels.extend([len(names) - 1] * len(files))
    if not paths:
        raise DataLoadError(
            f"{root}: class sub-folders hold no images; put .png/.jpg/.jpeg/.bmp files in {root}/<class_name>/"
        )
    need_two_classes(names, str(root))
    return paths, labels, names


VALIDATE_ALL_UP_TO = 20_000


def _validate_images(paths: Sequence[Path], seed: int = 0) -> dict[tuple[int, int, str], int]:
    """A cheap full verify pass, so broken or truncated files fail before training, naming the file.

    PNG: ``verify()`` walks every chunk and checks its CRC (a truncated file fails); JPEG: the
    end-of-image marker must be there (truncation cuts it off); other formats are decoded (they are
    small or raw). Up to ``VALIDATE_ALL_UP_TO`` files all are checked; beyond that a seeded sample of
    that size is, and the rest are caught when decoded (still one DataLoadError naming the file).
    Returns how many files had each (width, height, mode), for the data log line.
    """
    if len(paths) > VALIDATE_ALL_UP_TO:
        pick = np.random.default_rng(seed).choice(len(paths), VALIDATE_ALL_UP_TO, replace=False)
        paths = [paths[i] for i in np.sort(pick)]
    seen: dict[tuple[int, int, str], int] = {}
    for p in paths:
        try:
            with Image.open(p) as im:
                key = (*im.size, im.mode)
                if im.format == "PNG":
                    im.verify()
                elif im.format == "JPEG":
                    _require_jpeg_end(p)
                else:
                    im.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataLoadError(f"{p}: not a readable image ({exc}); replace or remove this file") from None
        seen[key] = seen.get(key, 0) + 1
    return seen


def _require_jpeg_end(path: Path) -> None:
    """A complete JPEG ends with the EOI marker FFD9 (some writers pad a few bytes after it)."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 1024))
        if b"\xff\xd9" not in f.read():
            raise OSError("truncated JPEG: no end-of-image marker")


def _describe_sources(seen: dict[tuple[int, int, str], int], size: int) -> str:
    """'8x8 L images -> 3x32x32' (or a range when sizes differ): what the model really gets."""
    if not seen:
        return ""
    sizes = sorted({(w, h) for w, h, _ in seen})
    modes = "/".join(sorted({m for *_, m in seen}))
    if len(sizes) == 1:
        orig = f"{sizes[0][0]}x{sizes[0][1]}"
    else:
        lo, hi = min(sizes, key=lambda wh: wh[0] * wh[1]), max(sizes, key=lambda wh: wh[0] * wh[1])
        orig = f"{len(sizes)} sizes from {lo[0]}x{lo[1]} to {hi[0]}x{hi[1]}"
    return f"{orig} {modes} images -> 3x{size}x{size}"


def load_image_folder(
    root: Path, section: DataSection, validate: bool = True, desc: str | None = None
) -> DatasetBundle:
    paths, labels, names = _scan_image_folder(root)
    targets = np.asarray(labels, dtype=np.int64)
    keep = subsample(len(paths), section.limit, section.seed)
    if len(keep) < len(paths):
        paths = [paths[i] for i in keep]
        targets = targets[keep]
    seen = _validate_images(paths, section.seed) if validate else _validate_images(paths[:1], section.seed)
    tr, ev = stratified_split(targets, section.eval_fraction, section.seed)
    tr, va = carve_validation(tr, targets, section.val_fraction, section.seed)
    check_split(tr, va, ev, str(root))
    s = section.image_size
    t_train = ImageTransform(train=True, augment=section.augment, normalize=section.normalize,
                             crop=section.augment_crop, flip=section.augment_flip)
    t_eval = ImageTransform(train=False, normalize=section.normalize)
    train = ImageFolderDataset([paths[i] for i in tr], targets[tr], s, t_train, cache=section.cache)
    val = ImageFolderDataset([paths[i] for i in va], targets[va], s, t_eval, cache=section.cache)
    eval_ = ImageFolderDataset([paths[i] for i in ev], targets[ev], s, t_eval, cache=section.cache)
    if validate:
        train.decode(0)  # one full decode catches e.g. truncated files early and cheaply
    note = f"; {train.cache_note}" if train.cache_note else ""
    label = desc or f"image folder {root}"
    return DatasetBundle(
        train=train,
        val=val,
        eval=eval_,
        num_classes=len(names),
        input_shape=(3, s, s),
        class_names=names,
        kind="image",
        source_desc=f"{label}: {len(tr)} train / {len(va)} val / {len(ev)} eval images, {len(names)} classes, "
        f"{_describe_sources(seen, s) or f'{s}x{s}'}{augment_note(t_train)}{note}",
        preprocess=t_eval.describe(),
    )
