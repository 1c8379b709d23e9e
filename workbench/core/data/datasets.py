"""The dataset classes every source returns, the bundle that carries them, and previews."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from workbench.core.data.transforms import ImageTransform
from workbench.errors import DataLoadError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class DatasetBundle:
    """Everything the rest of the engine needs to know about the data."""

    train: Dataset
    val: Dataset  # model selection (accuracy budgets, sensitivity); never reported as the result
    eval: Dataset  # reported accuracy
    num_classes: int
    input_shape: tuple[int, ...]  # one sample, no batch dim, after transforms
    class_names: list[str]
    kind: str  # "image" | "tabular" | "tensor" | "tokens" (stacked named int arrays, core/data/tokens.py)
    source_desc: str
    # How raw inputs become model inputs at eval time (scale/mean/std); recorded with exports.
    preprocess: dict[str, Any] = field(default_factory=dict)


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


def augment_note(transform: ImageTransform) -> str:
    kinds = transform.augmentations()
    return f", train augmentation: {' + '.join(kinds)}" if kinds else ", no augmentation"


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
