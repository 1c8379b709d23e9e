"""Dataset sources: turn a recipe's ``[data]`` section into picklable train/val/eval datasets.

Sources: ``default`` (generated shapes PNGs), ``synthetic`` (random tensors), ``image_folder``,
``csv`` (tabular), ``npz`` and ``mnist`` (IDX files).

Three splits, always: ``train`` (fitting), ``val`` (choosing: accuracy-aware quantization, pruning
sensitivity, per-epoch curves) and ``eval`` (reporting). Choosing on the split you report on
flatters the result. ``eval`` is ``data.eval_fraction`` of all samples (or the file's own test
split); ``val`` is ``data.val_fraction`` of the rest (or the file's own validation arrays), both
stratified per class and seeded with ``data.seed``. Every problem with the user's data becomes a
one-line ``DataLoadError`` that names the file or folder and says what would work.

Datasets are picklable (DataLoader workers start with spawn/forkserver): they hold paths, arrays and
tensors, never open files or lambdas. Each ``__getitem__`` returns ``(tensor, int_label)``.

Image-folder caching (``data.cache``): decoded uint8 images (before augmentation) go into ONE
preallocated ``(N, 3, S, S)`` uint8 tensor plus a "filled" flag per sample, not a per-process dict.
When a DataLoader sends the dataset to its worker processes, torch moves both tensors into shared
memory, so a sample decoded by any worker is visible to all workers, to later epochs (new or
persistent workers) and to the main process. A plain dict would be copied into every worker and
filled separately: with N workers and shuffling, epoch 2 would hit only ~1/N of the time and use
N times the memory. Caching is skipped (with a note in ``cache_note``) when the tensor would exceed
``cache_budget_bytes()``. Concurrent fills of the same sample write identical bytes, so races are
harmless. ``preload()`` decodes everything up front with a thread pool if you prefer to pay once.

Array sources (npz, mnist, csv, synthetic) live in memory anyway; ``data.cache`` does not apply.
They keep their native image size (``data.image_size`` applies to image folders and the default set).

File layouts:
- npz: ``np.load(allow_pickle=False)``; arrays ``x_train``/``y_train`` (+ ``x_test``/``y_test``, which
  then define the eval split, and ``x_val``/``y_val``, which define the validation split) or one of
  the pairs in ``NPZ_PAIRS`` (x/y, X/y, images/labels, data/target, data/targets, inputs/targets).
  2-D x is tabular; (N,H,W), NHWC or NCHW is images (uint8 is scaled and normalised, float is used
  as is). Object arrays are refused.
- mnist: a folder with ``train-images-idx3-ubyte[.gz]`` + ``train-labels-idx1-ubyte[.gz]`` (optional
  ``t10k-*`` pair = eval split), or the path of an images file with its labels file beside it.
- csv: header row; every column except ``data.label_column`` must be numeric; labels may be ints
  or strings (classes are the sorted unique values). Features are standardised with train stats.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from workbench.core.data.default_dataset import ensure_default_dataset
from workbench.core.data.transforms import ImageTransform
from workbench.errors import DataLoadError
from workbench.recipe import DataSection

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
# Array-name pairs tried in order for single-split npz files (documented in the recipe help).
NPZ_PAIRS: tuple[tuple[str, str], ...] = (
    ("x", "y"),
    ("X", "y"),
    ("images", "labels"),
    ("data", "target"),
    ("data", "targets"),
    ("inputs", "targets"),
)


# --------------------------------------------------------------------------------------------- bundle


@dataclass
class DatasetBundle:
    """Everything the rest of the engine needs to know about the data."""

    train: Dataset
    val: Dataset  # model selection (accuracy budgets, sensitivity); never reported as the result
    eval: Dataset  # reported accuracy
    num_classes: int
    input_shape: tuple[int, ...]  # one sample, no batch dim, after transforms
    class_names: list[str]
    kind: str  # "image" | "tabular" | "tensor"
    source_desc: str
    # How raw inputs become model inputs at eval time (scale/mean/std); recorded with exports.
    preprocess: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- datasets


class _LabelledDataset(Dataset):
    """Common surface: ``targets`` (int64 array) and ``raw_image(i)`` for previews."""

    _targets: np.ndarray

    @property
    def targets(self) -> np.ndarray:
        return self._targets

    def __len__(self) -> int:
        return len(self._targets)

    def raw_image(self, i: int) -> torch.Tensor | None:
        """The sample before transforms as (C, H, W) (uint8 or float), or None if not an image."""
        return None


def cache_budget_bytes() -> int:
    """Largest decoded-image cache we allocate: 25 % of physical RAM, at most 8 GiB."""
    try:
        import psutil

        total = int(psutil.virtual_memory().total)
    except Exception:  # pragma: no cover - psutil is a dependency, but stay usable without it
        total = 8 << 30
    return min(total // 4, 8 << 30)


class ImageFolderDataset(_LabelledDataset):
    """Images on disk, decoded lazily with Pillow to RGB and resized to ``image_size`` squares.

    Resizing keeps the aspect ratio: the largest centred square is cut out and scaled (the usual
    "resize + centre crop"), so objects are not squashed. JPEGs use Pillow's draft mode (DCT
    scaling) so large photos decode at a fraction of the cost.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        targets: Sequence[int] | np.ndarray,
        image_size: int,
        transform: ImageTransform | None,
        cache: bool = True,
        max_cache_bytes: int | None = None,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self._targets = np.asarray(targets, dtype=np.int64)
        self.image_size = int(image_size)
        self.transform = transform
        self.decode_count = 0  # per process; tests and benchmarks read it
        self.cache_note = ""
        self._slab: torch.Tensor | None = None
        self._filled: torch.Tensor | None = None
        if cache:
            budget = cache_budget_bytes() if max_cache_bytes is None else max_cache_bytes
            if self.cache_nbytes_needed <= budget:
                # torch.empty: pages are committed only when written (or moved to shared memory).
                self._slab = torch.empty(
                    (len(self.paths), 3, self.image_size, self.image_size), dtype=torch.uint8
                )
                self._filled = torch.zeros(len(self.paths), dtype=torch.bool)
            else:
                self.cache_note = (
                    f"cache off: {self.cache_nbytes_needed / 2**30:.1f} GiB of decoded images exceeds "
                    f"the {budget / 2**30:.1f} GiB budget"
                )

    @property
    def cache_nbytes_needed(self) -> int:
        return len(self.paths) * 3 * self.image_size * self.image_size

    @property
    def cache_enabled(self) -> bool:
        return self._slab is not None

    @property
    def cached_count(self) -> int:
        return 0 if self._filled is None else int(self._filled.sum())

    def disable_cache(self, reason: str = "") -> None:
        self._slab = self._filled = None
        self.cache_note = f"cache off: {reason}" if reason else "cache off"

    def decode(self, i: int) -> torch.Tensor:
        """Read file ``i`` from disk: (3, S, S) uint8. Raises DataLoadError naming the file."""
        path = self.paths[i]
        s = self.image_size
        try:
            with Image.open(path) as im:
                if im.format == "JPEG":
                    im.draft("RGB", (s, s))
                rgb = im.convert("RGB")
            w, h = rgb.size
            if (w, h) != (s, s):
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                rgb = rgb.resize((s, s), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
            arr = np.array(rgb, dtype=np.uint8)
        except FileNotFoundError:
            raise DataLoadError(f"{path}: image file disappeared; re-create the dataset folder") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataLoadError(f"{path}: cannot decode image ({exc}); replace or remove this file") from None
        self.decode_count += 1
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def raw_image(self, i: int) -> torch.Tensor:
        """Decoded (3, S, S) uint8 image before augmentation, from the cache when possible."""
        slab, filled = self._slab, self._filled
        if slab is not None and filled is not None:
            if bool(filled[i]):
                return slab[i]
            img = self.decode(i)
            slab[i].copy_(img)
            filled[i] = True  # after the pixels: a reader never sees a flag without its image
            return img
        return self.decode(i)

    def preload(self, threads: int | None = None) -> int:
        """Decode every not-yet-cached image now (Pillow releases the GIL while decoding).

        Returns how many were decoded. A no-op when the cache is off.
        """
        if self._slab is None or self._filled is None:
            return 0
        todo = [i for i in range(len(self.paths)) if not bool(self._filled[i])]
        if not todo:
            return 0
        workers = threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(self.raw_image, todo, chunksize=64):
                pass
        return len(todo)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.raw_image(i)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self._targets[i])


class ArrayImageDataset(_LabelledDataset):
    """Images already in memory as an (N, C, H, W) tensor (npz, mnist)."""

    def __init__(self, images: torch.Tensor, targets: np.ndarray, transform: ImageTransform | None) -> None:
        self.images = images
        self._targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform

    def raw_image(self, i: int) -> torch.Tensor:
        return self.images[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        x = self.transform(x) if self.transform is not None else x.to(torch.float32)
        return x, int(self._targets[i])


class TabularDataset(_LabelledDataset):
    """Rows of float32 features (already standardised if requested) with int labels."""

    def __init__(self, features: torch.Tensor, targets: np.ndarray) -> None:
        self.features = features.to(torch.float32)
        self._targets = np.asarray(targets, dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.features[i], int(self._targets[i])


class SyntheticDataset(_LabelledDataset):
    """Random tensors generated per index from a seed: no memory, no I/O, identical everywhere.

    Each sample is N(0, 1) noise plus a per-class offset per leading channel, so a model can
    learn something (loss goes down) while the data costs almost nothing to produce.
    """

    def __init__(
        self, indices: np.ndarray, targets: np.ndarray, shape: Sequence[int], num_classes: int, seed: int
    ):
        self.indices = np.asarray(indices, dtype=np.int64)
        self._targets = np.asarray(targets, dtype=np.int64)
        self.shape = tuple(int(d) for d in shape)
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        self.prototypes = torch.randn((num_classes, self.shape[0]), generator=g)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.indices[i]) + 1)
        x = torch.randn(self.shape, generator=g)
        y = int(self._targets[i])
        x += self.prototypes[y].view((-1,) + (1,) * (len(self.shape) - 1))
        return x, y

    def raw_image(self, i: int) -> torch.Tensor | None:
        if len(self.shape) == 3 and self.shape[0] in (1, 3):
            return self[i][0]
        return None


# --------------------------------------------------------------------------------------------- splits


def stratified_split(targets: np.ndarray, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, shuffle with ``seed`` and send round(fraction * n) samples (>= 1 when n >= 2) to eval."""
    rng = np.random.default_rng(seed)
    train_parts, eval_parts = [], []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        n_eval = int(round(len(idx) * eval_fraction))
        n_eval = min(max(n_eval, 1), len(idx) - 1) if len(idx) >= 2 else 0
        eval_parts.append(idx[:n_eval])
        train_parts.append(idx[n_eval:])
    tr = np.sort(np.concatenate(train_parts)) if train_parts else np.zeros(0, np.int64)
    ev = np.sort(np.concatenate(eval_parts)) if eval_parts else np.zeros(0, np.int64)
    return tr.astype(np.int64), ev.astype(np.int64)


def carve_validation(
    train_idx: np.ndarray, targets: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``train_idx`` into (train, val) indices: per class, ``stratified_split`` of what train holds.

    The shuffle is seeded with ``seed + 1`` so it is independent of the train/eval shuffle.
    """
    keep, val = stratified_split(np.asarray(targets)[train_idx], val_fraction, seed + 1)
    return train_idx[keep], train_idx[val]


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` samples (seeded, sorted); all when limit is 0 or >= n."""
    if not limit or limit >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit]).astype(np.int64)


def _split_caps(limit: int, eval_fraction: float) -> tuple[int, int]:
    """With a predefined train/test split, ``limit`` caps the total; split it by eval_fraction."""
    if not limit:
        return 0, 0
    n_eval = max(1, int(round(limit * eval_fraction)))
    return max(1, limit - n_eval), n_eval


def _encode_labels(values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Map any label array (ints, integral floats, strings) to 0..K-1 with sorted class names."""
    values = np.asarray(values)
    if values.ndim != 1:
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        else:
            raise DataLoadError(f"{where}: labels must be one value per sample, got shape {values.shape}")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise DataLoadError(
                f"{where}: labels are non-integer floats; a classifier needs class ids or names"
            )
        values = values.astype(np.int64)
    if values.dtype.kind == "b":
        values = values.astype(np.int64)
    if values.dtype.kind not in "iuUS":
        raise DataLoadError(f"{where}: labels have unsupported dtype {values.dtype}; use integers or strings")
    uniq, codes = np.unique(values, return_inverse=True)
    names = [v.decode() if isinstance(v, bytes) else str(v) for v in uniq.tolist()]
    return codes.astype(np.int64).reshape(-1), names


def _encode_parts(parts: list[np.ndarray], where: str) -> tuple[list[np.ndarray], list[str]]:
    """``_encode_labels`` over several label arrays at once (one class list for all splits)."""
    codes, names = _encode_labels(np.concatenate([p.reshape(len(p), -1) for p in parts]), where)
    bounds = np.cumsum([len(p) for p in parts])[:-1]
    return np.split(codes, bounds), names


def _need_two_classes(names: list[str], where: str) -> None:
    if len(names) < 2:
        found = names[0] if names else "none"
        raise DataLoadError(
            f"{where}: only {len(names)} class found ({found}); a classifier needs at least 2 classes"
        )


def _check_split(train_idx: np.ndarray, val_idx: np.ndarray, eval_idx: np.ndarray, where: str) -> None:
    if len(train_idx) == 0 or len(val_idx) == 0 or len(eval_idx) == 0:
        raise DataLoadError(
            f"{where}: too few samples to split into train, validation and eval "
            f"({len(train_idx)} / {len(val_idx)} / {len(eval_idx)}); add samples (at least 3 per class) "
            "or raise data.limit, data.val_fraction or data.eval_fraction"
        )


def _path(section: DataSection, what: str) -> Path:
    if not section.path:
        raise DataLoadError(f"data.path is empty; data.source = {section.source!r} needs {what}")
    p = Path(section.path).expanduser()
    if not p.exists():
        raise DataLoadError(f"{p}: not found; data.path should be {what}")
    if not p.is_dir() and not p.is_file():  # a FIFO or device would block (or never end) when read
        raise DataLoadError(f"{p}: not a regular file (a pipe, socket or device); data.path should be {what}")
    return p


# ------------------------------------------------------------------------------------- image folder


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
    _need_two_classes(names, str(root))
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


def _load_image_folder(
    root: Path, section: DataSection, validate: bool = True, desc: str | None = None
) -> DatasetBundle:
    paths, labels, names = _scan_image_folder(root)
    targets = np.asarray(labels, dtype=np.int64)
    keep = _subsample(len(paths), section.limit, section.seed)
    if len(keep) < len(paths):
        paths = [paths[i] for i in keep]
        targets = targets[keep]
    seen = _validate_images(paths, section.seed) if validate else _validate_images(paths[:1], section.seed)
    tr, ev = stratified_split(targets, section.eval_fraction, section.seed)
    tr, va = carve_validation(tr, targets, section.val_fraction, section.seed)
    _check_split(tr, va, ev, str(root))
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
        f"{_describe_sources(seen, s) or f'{s}x{s}'}{_augment_note(t_train)}{note}",
        preprocess=t_eval.describe(),
    )


# ------------------------------------------------------------------------------------- array images


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """(N,H,W) -> (N,1,H,W); NHWC (last dim 1/3/4, dim 1 not) -> NCHW; NCHW kept."""
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = np.transpose(x, (0, 3, 1, 2))
        if x.shape[1] == 4:  # RGBA: drop alpha like the image-folder source does
            x = x[:, :3]
        return x
    raise DataLoadError(f"{where}: images must be (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {x.shape}")


@dataclass
class _Splits:
    """In-memory arrays of the three splits (x: numeric samples, y: class codes 0..K-1)."""

    x_tr: np.ndarray
    y_tr: np.ndarray
    x_va: np.ndarray
    y_va: np.ndarray
    x_ev: np.ndarray
    y_ev: np.ndarray


def _array_bundle(sp: _Splits, names: list[str], section: DataSection, desc: str, where: str) -> DatasetBundle:
    """Build image or tabular datasets from in-memory arrays."""
    if sp.x_tr.ndim == 2:
        feats = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in (sp.x_tr, sp.x_va, sp.x_ev)]
        return _tabular_bundle(feats, [sp.y_tr, sp.y_va, sp.y_ev], names, section, desc, where)
    xs = [_to_nchw(x, where) for x in (sp.x_tr, sp.x_va, sp.x_ev)]
    uint8 = xs[0].dtype == np.uint8
    if not uint8:
        xs = [x.astype(np.float32) for x in xs]
        for split, arr in zip(("train", "validation", "eval"), xs, strict=True):
            _require_finite(arr, where, split)
    t_train = ImageTransform(train=True, augment=section.augment, normalize=section.normalize,
                             crop=section.augment_crop, flip=section.augment_flip)
    t_eval = ImageTransform(train=False, normalize=section.normalize)
    train, val, eval_ = (
        ArrayImageDataset(torch.from_numpy(np.ascontiguousarray(x)), y, t)
        for x, y, t in zip(xs, (sp.y_tr, sp.y_va, sp.y_ev), (t_train, t_eval, t_eval), strict=True)
    )
    shape = tuple(int(d) for d in xs[0].shape[1:])
    pre = t_eval.describe() if uint8 else {"scale": 1.0, "mean": [0.0], "std": [1.0]}
    return DatasetBundle(
        train=train,
        val=val,
        eval=eval_,
        num_classes=len(names),
        input_shape=shape,
        class_names=names,
        kind="image",
        source_desc=f"{desc}: {len(sp.y_tr)} train / {len(sp.y_va)} val / {len(sp.y_ev)} eval images "
        f"{'x'.join(map(str, shape))}, {len(names)} classes{_augment_note(t_train)}",
        preprocess=pre,
    )


def _require_finite(x: np.ndarray, where: str, split: str) -> None:
    """NaN/inf pixels would surface much later as "training diverged"; name the data instead."""
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))[0])
        raise DataLoadError(f"{where}: the {split} images hold {int(np.isnan(x).sum()):,} NaN and "
                            f"{int(np.isinf(x).sum()):,} infinite values (first in sample {first}); replace them "
                            "(e.g. np.nan_to_num) or drop those samples")


def _augment_note(transform: ImageTransform) -> str:
    kinds = transform.augmentations()
    return f", train augmentation: {' + '.join(kinds)}" if kinds else ", no augmentation"


def _tabular_bundle(
    xs: list[torch.Tensor],
    ys: list[np.ndarray],
    names: list[str],
    section: DataSection,
    desc: str,
    where: str,
) -> DatasetBundle:
    """Train / val / eval features; standardised with TRAIN statistics (arbitrary units) when normalize is on."""
    if not all(bool(torch.isfinite(x).all()) for x in xs):
        raise DataLoadError(f"{where}: features contain NaN or infinity; fill or drop those values")
    pre: dict[str, Any] = {"scale": 1.0, "mean": [0.0], "std": [1.0]}
    if section.normalize:
        mean = xs[0].mean(0)
        std = xs[0].std(0, unbiased=False)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        xs = [(x - mean) / std for x in xs]
        pre = {"scale": 1.0, "mean": mean.tolist(), "std": std.tolist()}
    n_feat = int(xs[0].shape[1])
    train, val, eval_ = (TabularDataset(x, y) for x, y in zip(xs, ys, strict=True))
    return DatasetBundle(
        train=train,
        val=val,
        eval=eval_,
        num_classes=len(names),
        input_shape=(n_feat,),
        class_names=names,
        kind="tabular",
        source_desc=f"{desc}: {len(ys[0])} train / {len(ys[1])} val / {len(ys[2])} eval rows, {n_feat} features, "
        f"{len(names)} classes",
        preprocess=pre,
    )


def _split_arrays(
    x: np.ndarray,
    codes: np.ndarray,
    section: DataSection,
    where: str,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> _Splits:
    """One labelled pool: eval and (unless the file has its own ``val``) validation are carved from it."""
    keep = _subsample(len(codes), section.limit, section.seed)
    x, codes = x[keep], codes[keep]
    tr, ev = stratified_split(codes, section.eval_fraction, section.seed)
    if val is None:
        tr, va = carve_validation(tr, codes, section.val_fraction, section.seed)
        _check_split(tr, va, ev, where)
        return _Splits(x[tr], codes[tr], x[va], codes[va], x[ev], codes[ev])
    cap_va = max(1, int(round(len(tr) * section.val_fraction))) if section.limit else 0
    kva = _subsample(len(val[1]), cap_va, section.seed + 2)
    _check_split(tr, kva, ev, where)
    return _Splits(x[tr], codes[tr], val[0][kva], val[1][kva], x[ev], codes[ev])


def _predefined_arrays(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_ev: np.ndarray,
    y_ev: np.ndarray,
    section: DataSection,
    where: str,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> _Splits:
    """The file's own train / test split (and validation arrays, if any); otherwise val is carved from train."""
    cap_tr, cap_ev = _split_caps(section.limit, section.eval_fraction)
    ktr = _subsample(len(y_tr), cap_tr, section.seed)
    kev = _subsample(len(y_ev), cap_ev, section.seed + 1)
    x_tr, y_tr = x_tr[ktr], y_tr[ktr]
    if val is None:
        tr, va = carve_validation(np.arange(len(y_tr)), y_tr, section.val_fraction, section.seed)
        x_va, y_va, x_tr, y_tr = x_tr[va], y_tr[va], x_tr[tr], y_tr[tr]
    else:
        cap_va = max(1, int(round(cap_tr * section.val_fraction))) if cap_tr else 0
        kva = _subsample(len(val[1]), cap_va, section.seed + 2)
        x_va, y_va = val[0][kva], val[1][kva]
    sp = _Splits(x_tr, y_tr, x_va, y_va, x_ev[kev], y_ev[kev])
    _check_split(sp.y_tr, sp.y_va, sp.y_ev, where)
    return sp


def _check_x(x: np.ndarray, where: str, name: str) -> None:
    if x.dtype.kind not in "biuf":
        raise DataLoadError(f"{where}: array {name!r} has dtype {x.dtype}; features/images must be numeric")
    if x.ndim < 2 or x.ndim > 4:
        raise DataLoadError(
            f"{where}: array {name!r} has shape {x.shape}; use (N, features), (N,H,W), (N,H,W,C) or (N,C,H,W)"
        )
    if x.ndim > 2 and x.dtype.kind == "f":
        # Checked on the file's own array, before any split, so the sample index is the user's.
        _require_finite(x, where, f"{name!r}")


# ----------------------------------------------------------------------------------------------- npz


def _load_npz(section: DataSection) -> DatasetBundle:
    path = _path(section, "an .npz file with arrays x and y (or x_train/y_train/x_test/y_test)")
    if path.is_dir():
        raise DataLoadError(f"{path}: is a folder; data.source = 'npz' needs an .npz file")
    if not zipfile.is_zipfile(path):
        raise DataLoadError(
            f"{path}: not an .npz archive; save one with np.savez(path, x=features, y=labels)"
        )
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataLoadError(
            f"{path}: cannot read .npz ({exc}); save one with np.savez(path, x=..., y=...)"
        ) from None

    with npz:
        names_found = list(npz.files)

        def get(name: str) -> np.ndarray:
            try:
                return npz[name]
            except ValueError as exc:
                if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                    raise DataLoadError(
                        f"{path}: array {name!r} holds Python objects (dtype=object), refused because loading "
                        "it could run code; save plain numeric/string arrays instead"
                    ) from None
                raise DataLoadError(f"{path}: cannot read array {name!r} ({exc})") from None
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise DataLoadError(f"{path}: array {name!r} is corrupt ({exc})") from None

        desc = f"npz {path}"
        val: tuple[np.ndarray, np.ndarray] | None = None  # the file's own validation split, raw labels
        if "x_train" in names_found and "y_train" in names_found:
            x_tr, y_tr = get("x_train"), get("y_train")
            _check_x(x_tr, str(path), "x_train")
            _check_len(x_tr, y_tr, path, "x_train", "y_train")
            if "x_val" in names_found and "y_val" in names_found:
                val = get("x_val"), get("y_val")
                _check_x(val[0], str(path), "x_val")
                _check_len(val[0], val[1], path, "x_val", "y_val")
                if val[0].shape[1:] != x_tr.shape[1:] or (val[0].dtype == np.uint8) != (x_tr.dtype == np.uint8):
                    raise DataLoadError(
                        f"{path}: x_train samples are {x_tr.shape[1:]} {x_tr.dtype} but x_val samples are "
                        f"{val[0].shape[1:]} {val[0].dtype}; save both with the same shape and dtype"
                    )
            if "x_test" in names_found and "y_test" in names_found:
                x_ev, y_ev = get("x_test"), get("y_test")
                _check_x(x_ev, str(path), "x_test")
                _check_len(x_ev, y_ev, path, "x_test", "y_test")
                if x_ev.shape[1:] != x_tr.shape[1:]:
                    raise DataLoadError(
                        f"{path}: x_train samples are {x_tr.shape[1:]} but x_test samples are {x_ev.shape[1:]}"
                    )
                coded, names = _encode_parts([y_tr, y_ev] + ([val[1]] if val else []), str(path))
                _need_two_classes(names, str(path))
                coded_val = (val[0], coded[2]) if val else None
                sp = _predefined_arrays(x_tr, coded[0], x_ev, coded[1], section, str(path), coded_val)
                return _array_bundle(sp, names, section, desc, str(path))
            x, y = x_tr, y_tr
        else:
            pair = next(((a, b) for a, b in NPZ_PAIRS if a in names_found and b in names_found), None)
            if pair is None:
                raise DataLoadError(
                    f"{path}: no feature/label arrays found (arrays present: {', '.join(names_found) or 'none'}); "
                    "name them x and y (or X/y, images/labels, data/target, x_train/y_train[/x_test/y_test])"
                )
            x, y = get(pair[0]), get(pair[1])
            _check_x(x, str(path), pair[0])
            _check_len(x, y, path, pair[0], pair[1])
    coded, names = _encode_parts([y] + ([val[1]] if val else []), str(path))
    _need_two_classes(names, str(path))
    sp = _split_arrays(x, coded[0], section, str(path), (val[0], coded[1]) if val else None)
    return _array_bundle(sp, names, section, desc, str(path))


def _check_len(x: np.ndarray, y: np.ndarray, path: Path, xn: str, yn: str) -> None:
    if len(x) != len(y):
        raise DataLoadError(
            f"{path}: {xn} has {len(x)} samples but {yn} has {len(y)} labels; they must match"
        )


# ----------------------------------------------------------------------------------------------- csv


def _load_csv(section: DataSection) -> DatasetBundle:
    path = _path(section, "a .csv file with a header row, numeric feature columns and a label column")
    if path.is_dir():
        raise DataLoadError(f"{path}: is a folder; data.source = 'csv' needs a .csv file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            head = f.read(8192)
            f.seek(0)
            try:
                dialect: Any = csv.Sniffer().sniff(head, delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel
            rows = [r for r in csv.reader(f, dialect) if any(c.strip() for c in r)]
    except UnicodeDecodeError:
        raise DataLoadError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    except (OSError, csv.Error) as exc:
        raise DataLoadError(f"{path}: cannot read CSV ({exc})") from None
    if not rows:
        raise DataLoadError(f"{path}: empty CSV; expected a header row and data rows")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    label = section.label_column
    if label not in header:
        raise DataLoadError(
            f"{path}: no label column {label!r}; columns present: {', '.join(header)}; "
            "set data.label_column to one of them"
        )
    if not body:
        raise DataLoadError(f"{path}: header only, no data rows")
    for n, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DataLoadError(f"{path}: line {n} has {len(r)} fields but the header has {len(header)}")
    li = header.index(label)
    feat_cols = [j for j in range(len(header)) if j != li]
    if not feat_cols:
        raise DataLoadError(
            f"{path}: only the label column {label!r}; add at least one numeric feature column"
        )
    x = np.empty((len(body), len(feat_cols)), dtype=np.float32)
    for k, j in enumerate(feat_cols):
        col = [r[j].strip() for r in body]
        try:
            x[:, k] = np.asarray(col, dtype=np.float64)
        except ValueError:
            bad = next(n for n, v in enumerate(col, start=2) if not _is_float(v))
            raise DataLoadError(
                f"{path}: feature column {header[j]!r} is not numeric (line {bad}: {col[bad - 2]!r}); "
                "encode it as numbers or drop the column"
            ) from None
    raw_labels = [r[li].strip() for r in body]
    if all(_is_float(v) for v in raw_labels):
        y = np.asarray(raw_labels, dtype=np.float64)
    else:
        y = np.asarray(raw_labels)
    codes, names = _encode_labels(y, str(path))
    _need_two_classes(names, str(path))
    sp = _split_arrays(x, codes, section, str(path))
    feats = [torch.from_numpy(v) for v in (sp.x_tr, sp.x_va, sp.x_ev)]
    return _tabular_bundle(feats, [sp.y_tr, sp.y_va, sp.y_ev], names, section, f"csv {path}", str(path))


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------- mnist

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzipped or not): magic 00 00 <dtype> <ndim>, big-endian int32 dims, data."""
    if path.exists() and not path.is_file():
        raise DataLoadError(f"{path}: not a regular file (a folder, pipe or device); give the IDX file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataLoadError(f"{path}: cannot read ({exc})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataLoadError(f"{path}: corrupt gzip ({exc}); download the file again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataLoadError(
            f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'}); expected MNIST-style files "
            "such as train-images-idx3-ubyte[.gz]"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataLoadError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = math.prod(dims)
    if len(raw) - header != count * dtype.itemsize:
        raise DataLoadError(
            f"{path}: IDX header says {dims} ({count * dtype.itemsize} bytes) but the file holds "
            f"{len(raw) - header} bytes; the file is truncated or corrupt"
        )
    return (
        np.frombuffer(raw, dtype=dtype, count=count, offset=header)
        .reshape(dims)
        .astype(dtype.newbyteorder("="))
    )


def _find_idx(folder: Path, split: str, kind: str) -> Path | None:
    idx = "idx3" if kind == "images" else "idx1"
    for stem in (f"{split}-{kind}-{idx}-ubyte", f"{split}-{kind}.{idx}-ubyte"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _labels_beside(images: Path) -> Path | None:
    name = images.name
    cand = name.replace("images", "labels").replace("idx3", "idx1")
    if cand == name:
        return None
    base = cand.removesuffix(".gz")
    for n in (cand, base, base + ".gz"):
        if (images.parent / n).is_file():
            return images.parent / n
    return None


def _read_mnist_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3:
        raise DataLoadError(f"{images}: IDX images must have 3 dims (count, rows, cols), got {x.shape}")
    if y.ndim != 1:
        raise DataLoadError(f"{labels}: IDX labels must have 1 dim (count), got {y.shape}")
    if len(x) != len(y):
        raise DataLoadError(
            f"{images}: {len(x)} images but {labels.name} has {len(y)} labels; use matching files"
        )
    return x, y


def _load_mnist(section: DataSection) -> DatasetBundle:
    path = _path(section, "a folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
    test: tuple[np.ndarray, np.ndarray] | None = None
    if path.is_dir():
        imgs, labs = _find_idx(path, "train", "images"), _find_idx(path, "train", "labels")
        if imgs is None or labs is None:
            missing = "train-images-idx3-ubyte[.gz]" if imgs is None else "train-labels-idx1-ubyte[.gz]"
            raise DataLoadError(f"{path}: {missing} not found in this folder; put the MNIST IDX files here")
        train = _read_mnist_pair(imgs, labs)
        t_imgs, t_labs = _find_idx(path, "t10k", "images"), _find_idx(path, "t10k", "labels")
        if t_imgs is not None and t_labs is not None:
            test = _read_mnist_pair(t_imgs, t_labs)
    else:
        labs = _labels_beside(path)
        if labs is None:
            raise DataLoadError(
                f"{path}: labels file not found beside it; put the matching *-labels-idx1-ubyte[.gz] in "
                f"{path.parent} (or give the folder)"
            )
        train = _read_mnist_pair(path, labs)
    desc = f"mnist {path}"
    if test is not None:
        x_tr, y_tr = train
        x_ev, y_ev = test
        if x_ev.shape[1:] != x_tr.shape[1:]:
            raise DataLoadError(
                f"{path}: train images are {x_tr.shape[1:]} but t10k images are {x_ev.shape[1:]}"
            )
        coded, names = _encode_parts([y_tr, y_ev], str(path))
        _need_two_classes(names, str(path))
        sp = _predefined_arrays(x_tr, coded[0], x_ev, coded[1], section, str(path))
        return _array_bundle(sp, names, section, desc, str(path))
    x, y = train
    codes, names = _encode_labels(y, str(path))
    _need_two_classes(names, str(path))
    return _array_bundle(_split_arrays(x, codes, section, str(path)), names, section, desc, str(path))


# ----------------------------------------------------------------------------------------- synthetic


def _load_synthetic(section: DataSection) -> DatasetBundle:
    n = section.synthetic_samples if not section.limit else min(section.limit, section.synthetic_samples)
    k = section.synthetic_classes
    targets = np.random.default_rng(section.seed).integers(0, k, section.synthetic_samples)[:n]
    tr, ev = stratified_split(targets, section.eval_fraction, section.seed)
    tr, va = carve_validation(tr, targets, section.val_fraction, section.seed)
    _check_split(tr, va, ev, "synthetic data")
    shape = tuple(section.synthetic_shape)
    train, val, eval_ = (SyntheticDataset(i, targets[i], shape, k, section.seed) for i in (tr, va, ev))
    return DatasetBundle(
        train=train,
        val=val,
        eval=eval_,
        num_classes=k,
        input_shape=shape,
        class_names=[f"class_{i}" for i in range(k)],
        kind="tensor",
        source_desc=f"synthetic {list(shape)}: {len(tr)} train / {len(va)} val / {len(ev)} eval samples, {k} classes, "
        f"seed {section.seed}",
        preprocess={"scale": 1.0, "mean": [0.0], "std": [1.0]},
    )


# ------------------------------------------------------------------------------------------ dispatch


def load_dataset(section: DataSection) -> DatasetBundle:
    """Load the data a recipe asks for; any problem is a one-line DataLoadError."""
    src = section.source
    if src == "default":
        root = ensure_default_dataset(section.samples_per_class)
        # We generated these files ourselves: skip the per-file header check.
        return _load_image_folder(root, section, validate=False, desc=f"default shapes ({root.name})")
    if src == "synthetic":
        return _load_synthetic(section)
    if src == "image_folder":
        root = _path(section, "a folder with one sub-folder of images per class")
        return _load_image_folder(root, section)
    if src == "csv":
        return _load_csv(section)
    if src == "npz":
        return _load_npz(section)
    if src == "mnist":
        return _load_mnist(section)
    raise DataLoadError(f"data.source = {src!r} is not supported")  # pragma: no cover - recipe validates


# ------------------------------------------------------------------------------------------ previews


def to_hwc_uint8(x: torch.Tensor) -> np.ndarray | None:
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        return None
    if x.dtype != torch.uint8:
        x = x.to(torch.float32)
        lo, hi = float(x.min()), float(x.max())
        x = ((x - lo) / (hi - lo if hi > lo else 1.0) * 255.0).round().clamp(0, 255).to(torch.uint8)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


def sample_previews(bundle: DatasetBundle, n: int = 16) -> list[tuple[np.ndarray | None, str]]:
    """Up to ``n`` train samples for GUI thumbnails, round-robin over classes, un-normalised.

    Images come back as (H, W, 3) uint8 (grey is repeated, float arrays are min-max scaled);
    tabular samples as ``None`` with their class name.
    """
    ds = bundle.train
    targets = np.asarray(getattr(ds, "targets", []), dtype=np.int64)
    if len(targets) == 0 or n <= 0:
        return []
    order = balanced_indices(targets, bundle.num_classes, n)
    out: list[tuple[np.ndarray | None, str]] = []
    raw = getattr(ds, "raw_image", None)
    for i in order:
        img = raw(i) if raw is not None else None
        name = bundle.class_names[int(targets[i])]
        out.append((to_hwc_uint8(img) if img is not None else None, name))
    return out


def balanced_indices(targets: Any, num_classes: int, n: int) -> list[int]:
    """Up to ``n`` deterministic sample indices spread over classes: each class's first, then second, ..."""
    t = np.asarray(targets, dtype=np.int64)
    per_class = [np.flatnonzero(t == c) for c in range(num_classes)]
    out: list[int] = []
    depth = 0
    while len(out) < min(n, len(t)):
        added = False
        for idx in per_class:
            if depth < len(idx) and len(out) < n:
                out.append(int(idx[depth]))
                added = True
        if not added:
            break
        depth += 1
    return out
