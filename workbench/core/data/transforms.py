"""Image transforms written with plain torch ops (torchvision does not load with this torch build).

Every function accepts a single image ``(C, H, W)`` or a batch ``(N, C, H, W)``, uint8 or float, so
the same code can augment per sample in DataLoader workers or per batch on the GPU later.
Randomness comes from an optional ``torch.Generator``; without one the global torch RNG is used,
which DataLoader seeds per worker from its own generator, so runs are reproducible either way.

Normalisation: images are scaled to [0, 1] and normalised with a FIXED mean = std = 0.5 per
channel (so inputs lie in [-1, 1]). We do not compute per-dataset statistics on purpose: fixed
constants need no pass over the data before training, never change between runs or machines,
and are trivially recorded in an exported model's preprocessing. Tabular data is different: its
columns have arbitrary units, so ``sources`` standardises them with train-split statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_MEAN: tuple[float, ...] = (0.5,)
DEFAULT_STD: tuple[float, ...] = (0.5,)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is returned as float32 unchanged."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel; uint8 input is first scaled to [0, 1].

    ``mean``/``std`` may have one value (broadcast to all channels) or one per channel.
    """
    x = to_float(x)
    c_dim = x.dim() - 3
    channels = x.shape[c_dim]
    m = torch.as_tensor(list(mean), dtype=x.dtype)
    s = torch.as_tensor(list(std), dtype=x.dtype)
    if m.numel() not in (1, channels) or s.numel() not in (1, channels):
        raise ValueError(f"mean/std need 1 or {channels} values, got {m.numel()} and {s.numel()}")
    shape = (-1, 1, 1)
    return (x - m.view(shape)) / s.view(shape)


def _check(x: torch.Tensor) -> None:
    if x.dim() not in (3, 4):
        raise ValueError(f"expected (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")


def random_crop(
    x: torch.Tensor, size: int | tuple[int, int], padding: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad by ``padding`` on every side, then crop ``size`` at a random place (per sample)."""
    _check(x)
    th, tw = (size, size) if isinstance(size, int) else size
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    h, w = x.shape[-2:]
    if th > h or tw > w:
        raise ValueError(f"crop {th}x{tw} is larger than the padded image {h}x{w}")
    if x.dim() == 3:
        i, j = (
            torch.randint(0, h - th + 1, (1,), generator=generator),
            torch.randint(0, w - tw + 1, (1,), generator=generator),
        )
        return x[:, int(i) : int(i) + th, int(j) : int(j) + tw]
    n = x.shape[0]
    ii = torch.randint(0, h - th + 1, (n,), generator=generator).tolist()
    jj = torch.randint(0, w - tw + 1, (n,), generator=generator).tolist()
    return torch.stack([x[k, :, i : i + th, j : j + tw] for k, (i, j) in enumerate(zip(ii, jj, strict=True))])


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror left-right with probability ``p`` (independently per sample for a batch)."""
    _check(x)
    if x.dim() == 3:
        return x.flip(-1) if float(torch.rand((), generator=generator)) < p else x
    mask = torch.rand(x.shape[0], generator=generator) < p
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Deterministic centre crop (used for eval when train crops are smaller than the image)."""
    _check(x)
    h, w = x.shape[-2:]
    i, j = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[..., i : i + size, j : j + size]


class ImageTransform:
    """The train/eval image pipeline, as a picklable object (DataLoader workers spawn, no lambdas).

    train + augment: pad(``padding``) + random crop back to the input size (``crop``) and a random
    h-flip (``flip``), each its own switch, then to float + normalise. eval (or augment off): to
    float + normalise only. A flip changes the class of digits, letters and other handed things.
    uint8 input is scaled to [0, 1]; float input is taken as already scaled (normalise is skipped
    for it, so arrays someone normalised themselves are not normalised twice).
    """

    def __init__(
        self,
        train: bool,
        augment: bool = True,
        normalize: bool = True,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        padding: int = 4,
        crop: bool = True,
        flip: bool = True,
    ) -> None:
        self.train = train
        self.crop = crop
        self.flip = flip
        self.augment = augment and train and (crop or flip)
        self.normalize = normalize
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.padding = padding

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        was_uint8 = x.dtype == torch.uint8
        if self.augment:
            if x.dim() == 3:
                x = self._augment_one(x)
            else:
                if self.crop:
                    x = random_crop(x, tuple(x.shape[-2:]), self.padding)  # type: ignore[arg-type]
                if self.flip:
                    x = random_hflip(x)
        if not (was_uint8 and self.normalize):
            return to_float(x)
        if len(self.mean) == 1 and len(self.std) == 1:
            # Fused: (x / 255 - m) / s == x * (1 / (255 s)) - m / s, two in-place ops on one copy.
            return x.to(torch.float32).mul_(1.0 / (255.0 * self.std[0])).sub_(self.mean[0] / self.std[0])
        return normalize(x, self.mean, self.std)

    def _augment_one(self, x: torch.Tensor) -> torch.Tensor:
        """Pad + crop + flip for one image with a single RNG draw (per-sample calls are overhead-bound)."""
        p = self.padding if self.crop else 0
        h, w = x.shape[-2:]
        span = 2 * p + 1
        r = int(torch.randint(0, span * span * (2 if self.flip else 1), ()))
        flip, r = divmod(r, span * span)
        i, j = divmod(r, span)
        if p:
            x = F.pad(x, (p, p, p, p))[:, i : i + h, j : j + w]
        return x.flip(-1) if flip else x

    def describe(self) -> dict[str, object]:
        """What a deployed model needs to reproduce eval preprocessing (recorded with exports)."""
        return {
            "scale": 1.0 / 255.0,
            "mean": list(self.mean) if self.normalize else [0.0],
            "std": list(self.std) if self.normalize else [1.0],
            "augment": self.augment,
        }

    def augmentations(self) -> list[str]:
        """What training applies, e.g. ['crop', 'flip'] (empty for eval or augmentation off)."""
        if not self.augment:
            return []
        return [name for name, on in (("crop", self.crop), ("flip", self.flip)) if on]

    def __repr__(self) -> str:
        return (
            f"ImageTransform(train={self.train}, augment={self.augment}, crop={self.crop}, flip={self.flip}, "
            f"normalize={self.normalize}, "
            f"mean={self.mean}, std={self.std}, padding={self.padding})"
        )
