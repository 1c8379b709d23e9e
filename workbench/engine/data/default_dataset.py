"""The built-in "shapes" dataset: 10 procedurally drawn classes, no download, same on every machine.

Why a generated set: the Workbench must work offline, and a real image folder makes loader choices
(workers, caching, pinning) show in the numbers, because every sample is a PNG that has to be decoded.

Each sample is drawn from its own seed ``(version, class, index)`` with NumPy's PCG64 (stable across
platforms) and Pillow's ImageDraw at 2x resolution, then box-downsampled to 32x32 (anti-aliasing) and
given a gradient background plus Gaussian noise. The pixels depend only on the seed (and the Pillow
version's rasteriser); PNG bytes may differ between zlib builds but decode to the same pixels.

The classes are clearly distinct for a small CNN (>= 90 % after ~3 epochs) but vary in position,
size, colour, tilt, background and noise, so the task is not a lookup. Squares, triangles (apex up
or down) and crosses are only tilted by up to ~11 degrees, stars and rings by anything: at 32x32
a fully rotated square, triangle and circle are too alike to learn in a few epochs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from workbench.engine.paths import datasets_dir

VERSION = 1
IMAGE_SIZE = 32
_SCALE = 2  # draw at 64x64, then downsample: smooth edges at 32x32
CLASS_NAMES: list[str] = [
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "horizontal_bars",
    "vertical_bars",
    "diagonal_stripe",
    "dot_grid",
    "star",
]
_MANIFEST = "manifest.json"


def dataset_name(samples_per_class: int) -> str:
    return f"shapes-v{VERSION}-{samples_per_class}"


def _rot(points: list[tuple[float, float]], cx: float, cy: float, theta: float) -> list[tuple[float, float]]:
    """Rotate points (relative to the centre) by theta and translate them to (cx, cy)."""
    c, s = math.cos(theta), math.sin(theta)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _rect(cx: float, cy: float, half_w: float, half_h: float, theta: float) -> list[tuple[float, float]]:
    pts = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
    return _rot(pts, cx, cy, theta)


def _luma(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def render_sample(class_index: int, index: int) -> np.ndarray:
    """Draw one sample as a (32, 32, 3) uint8 array; a pure function of (class_index, index)."""
    rng = np.random.default_rng([VERSION, class_index, index])
    big = IMAGE_SIZE * _SCALE

    # Background: a gentle two-colour gradient in a random direction.
    base = rng.integers(0, 256, 3).astype(np.float32)
    other = np.clip(base + rng.normal(0, 35, 3), 0, 255).astype(np.float32)
    # Foreground: a random colour with enough luminance contrast against the background.
    fg = rng.integers(0, 256, 3)
    for _ in range(16):
        if abs(_luma(fg) - _luma((base + other) / 2)) >= 90:
            break
        fg = rng.integers(0, 256, 3)
    else:
        fg = np.array([255, 255, 255]) if _luma(base) < 128 else np.array([0, 0, 0])
    mask = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(mask)
    r = float(rng.uniform(15, 24))  # "radius" at 2x scale: 7.5..12 px at 32x32
    margin = r + 2
    cx = float(rng.uniform(margin, big - margin))
    cy = float(rng.uniform(margin, big - margin))
    theta = float(rng.uniform(0, 2 * math.pi))
    small_tilt = float(rng.uniform(-0.2, 0.2))

    name = CLASS_NAMES[class_index]
    if name == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif name == "square":
        d.polygon(_rect(cx, cy, r * 0.85, r * 0.85, small_tilt), fill=255)
    elif name == "triangle":
        R = r * 1.2
        pts = [(R * math.cos(a), R * math.sin(a)) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
        # apex up or down (survives horizontal flips), slightly tilted
        up = -math.pi / 2 if rng.random() < 0.5 else math.pi / 2
        d.polygon(_rot(pts, cx, cy, up + small_tilt), fill=255)
    elif name == "cross":
        t = r * 0.28
        d.polygon(_rect(cx, cy, r * 1.1, t, small_tilt), fill=255)
        d.polygon(_rect(cx, cy, t, r * 1.1, small_tilt), fill=255)
    elif name == "ring":
        w = max(3, int(round(r * 0.35)))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=w)
    elif name in ("horizontal_bars", "vertical_bars"):
        angle = small_tilt + (math.pi / 2 if name == "vertical_bars" else 0.0)
        t = r * 0.2
        for k in (-1, 0, 1):
            off = k * r * 0.7
            # offset perpendicular to the bar direction
            ox, oy = -off * math.sin(angle), off * math.cos(angle)
            d.polygon(_rect(cx + ox, cy + oy, r * 1.2, t, angle), fill=255)
    elif name == "diagonal_stripe":
        angle = (math.pi / 4 if rng.random() < 0.5 else 3 * math.pi / 4) + small_tilt
        d.polygon(
            _rect(big / 2 + (cx - big / 2) * 0.5, big / 2 + (cy - big / 2) * 0.5, big * 0.75, r * 0.3, angle),
            fill=255,
        )
    elif name == "dot_grid":
        dot = max(2.5, r * 0.22)
        step = r * 0.75
        for i in (-1, 0, 1):
            for j in (-1, 0, 1):
                ((px, py),) = _rot([(i * step, j * step)], cx, cy, small_tilt)
                d.ellipse([px - dot, py - dot, px + dot, py + dot], fill=255)
    elif name == "star":
        outer, inner = r * 1.25, r * 0.5
        pts = []
        for k in range(10):
            rad = outer if k % 2 == 0 else inner
            a = k * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        d.polygon(_rot(pts, cx, cy, theta), fill=255)
    else:  # pragma: no cover - CLASS_NAMES and the branches above are kept in step
        raise ValueError(name)

    alpha = np.asarray(mask.reduce(_SCALE), dtype=np.float32)[..., None] / 255.0

    # Background gradient at 32x32 (cheap in NumPy).
    direction = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / (IMAGE_SIZE - 1)
    t_grad = (xs * math.cos(direction) + ys * math.sin(direction) + 1.0) / 2.0
    bg = base[None, None, :] * (1 - t_grad[..., None]) + other[None, None, :] * t_grad[..., None]

    out = bg * (1 - alpha) + fg.astype(np.float32)[None, None, :] * alpha
    noise_sigma = float(rng.uniform(3, 10))
    out += rng.normal(0.0, noise_sigma, out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _is_complete(folder: Path, samples_per_class: int) -> bool:
    """A folder is complete when its manifest matches and every class folder has all its PNGs."""
    manifest = folder / _MANIFEST
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("version") != VERSION or meta.get("samples_per_class") != samples_per_class:
        return False
    for name in CLASS_NAMES:
        sub = folder / name
        if not sub.is_dir():
            return False
        if sum(1 for p in sub.iterdir() if p.suffix == ".png") != samples_per_class:
            return False
    return True


def generate_into(folder: Path, samples_per_class: int) -> None:
    """Write every PNG and the manifest into ``folder`` (which must exist)."""
    for ci, name in enumerate(CLASS_NAMES):
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(samples_per_class):
            Image.fromarray(render_sample(ci, i), "RGB").save(sub / f"{i:05d}.png", compress_level=6)
    meta = {
        "name": dataset_name(samples_per_class),
        "version": VERSION,
        "samples_per_class": samples_per_class,
        "classes": CLASS_NAMES,
        "image_size": IMAGE_SIZE,
    }
    (folder / _MANIFEST).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def ensure_default_dataset(samples_per_class: int = 500) -> Path:
    """Return the folder of the shapes set, generating it once (atomically) if it is missing.

    Generation goes into a temporary sibling folder that is renamed into place only when complete,
    so a crash never leaves half a dataset; two processes racing both succeed (the loser discards
    its copy). An incomplete folder found at the final path is replaced.
    """
    if samples_per_class < 1:
        raise ValueError("samples_per_class must be >= 1")
    root = datasets_dir()
    target = root / dataset_name(samples_per_class)
    if _is_complete(target, samples_per_class):
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    try:
        generate_into(tmp, samples_per_class)
        if target.exists() and not _is_complete(target, samples_per_class):
            stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
            os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first (target is a non-empty folder): use theirs.
            if not _is_complete(target, samples_per_class):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
