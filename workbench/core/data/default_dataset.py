"""The built-in "shapes" dataset: 10 procedurally drawn classes, no download, same on every machine.

Why a generated set: the Workbench must work offline, and a real image folder makes loader choices
(workers, caching, pinning) show in the numbers, because every sample is a PNG that has to be decoded.

Each sample is drawn from its own seed ``(version, class, index)`` with NumPy's PCG64 (stable across
platforms) and Pillow's ImageDraw at 2x resolution, then box-downsampled to 32x32 (anti-aliasing).
Layers, back to front: a two-colour gradient background, up to ``MAX_SPECKS`` specks and short
strokes (clutter that belongs to no class), the labelled shape, Gaussian pixel noise. The pixels
depend only on the seed (and the Pillow version's rasteriser); PNG bytes may differ between zlib
builds but decode to the same pixels.

Why it is hard on purpose (version 2): on version 1 every model scored 100 %, so an accuracy loss
from pruning or quantization could not show. Now the quickstart's small CNN ends near 90 % after 3
epochs and the bigger zoo models stay below 100 % too, because
- a few shapes are drawn in bad light (``FAINT_P``): so close to the background colour that the
  pixel noise hides them (no model can recognise those);
- neighbouring classes reach towards each other (``OVERLAP``): smaller ring holes, blunter stars,
  rounder squares, fatter crosses, dots and bars;
- specks and strokes clutter the background, and shapes vary in position, size, colour and tilt.
Squares, triangles (apex up) and crosses are only tilted by up to ~11 degrees, stars by anything: at
32x32 a fully rotated square, triangle and circle are too alike to learn in a few epochs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from workbench.core.paths import datasets_dir

VERSION = 2
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

# Difficulty knobs (changing any of them changes the pixels: bump VERSION).
#: How far each class's shape parameter reaches towards the value at which it would look like a
#: neighbour class (0 = not at all, 1 = all the way): a ring's hole shrinks towards a disc, a star's
#: points and a square's corners round off towards a circle, a cross's arms, a dot grid's dots and
#: a bar set's bars thicken towards a solid block. Neighbours come closer; they never coincide.
OVERLAP = 0.2
#: Up to this many specks and short strokes (dust, scratches) anywhere in the image.
MAX_SPECKS = 2
#: Colour distance (RGB, 0..441) of the labelled shape from the background, drawn uniformly.
CONTRAST = (110.0, 250.0)
#: Share of "bad light" samples whose shape is much fainter (FAINT_CONTRAST): the faintest sink into
#: the pixel noise and cannot be recognised, so no model reaches 100 % and a lost point can show.
FAINT_P = 0.06
FAINT_CONTRAST = (4.0, 40.0)
#: Per-sample Gaussian pixel noise, sigma drawn from this range (0..255 scale).
NOISE_SIGMA = (3.0, 10.0)


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


def _colour_against(rng: np.random.Generator, background: np.ndarray, min_contrast: float) -> np.ndarray:
    """A random colour at least ``min_contrast`` luminance away from ``background`` (black/white fallback)."""
    for _ in range(16):
        c = rng.integers(0, 256, 3)
        if abs(_luma(c) - _luma(background)) >= min_contrast:
            return c
    return np.array([255, 255, 255]) if _luma(background) < 128 else np.array([0, 0, 0])


def _colour_at_distance(rng: np.random.Generator, background: np.ndarray, distance: float) -> np.ndarray:
    """A random hue exactly ``distance`` (RGB Euclidean) from ``background``, always inside 0..255.

    A random colour far enough away is pulled back towards the background along the line between
    them, so the result stays in gamut whatever the background.
    """
    for _ in range(32):
        c = rng.integers(0, 256, 3).astype(np.float32)
        gap = float(np.linalg.norm(c - background))
        if gap >= distance:
            return background + (c - background) * (distance / gap)
    corner = np.where(background < 128, 255.0, 0.0).astype(np.float32)  # farthest corner: >= 221 away
    scale = min(1.0, distance / float(np.linalg.norm(corner - background)))
    return background + (corner - background) * scale


def _reach(rng: np.random.Generator, typical: float, clear_end: float, merged: float) -> float:
    """A shape parameter, uniform from ``typical`` past ``clear_end`` to ``OVERLAP`` of the way to ``merged``.

    ``merged`` is the value at which the shape looks like its neighbour class.
    """
    end = clear_end + OVERLAP * (merged - clear_end)
    return typical + float(rng.random()) * (end - typical)


def _rounded_square(
    cx: float, cy: float, half: float, corner: float, theta: float
) -> list[tuple[float, float]]:
    """A square with corners rounded by ``corner`` (0..1 of the half side) as a polygon."""
    rad = half * corner
    inner = half - rad
    pts: list[tuple[float, float]] = []
    for k, (sx, sy) in enumerate(((1, 1), (-1, 1), (-1, -1), (1, -1))):
        start = k * math.pi / 2
        for j in range(7):
            a = start + j * (math.pi / 2) / 6
            pts.append((sx * inner + rad * math.cos(a), sy * inner + rad * math.sin(a)))
    return _rot(pts, cx, cy, theta)


def _draw_shape(
    d: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float, rng: np.random.Generator
) -> None:
    """Draw class ``name`` centred at (cx, cy) with "radius" r (2x scale) into a mask."""
    theta = float(rng.uniform(0, 2 * math.pi))
    small_tilt = float(rng.uniform(-0.2, 0.2))
    if name == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif name == "square":
        d.polygon(_rounded_square(cx, cy, r * 0.85, _reach(rng, 0.0, 0.15, 1.0), small_tilt), fill=255)
    elif name == "triangle":
        big_r = r * 1.2
        pts = [(big_r * math.cos(a), big_r * math.sin(a)) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
        # apex up (survives horizontal flips), slightly tilted
        d.polygon(_rot(pts, cx, cy, -math.pi / 2 + small_tilt), fill=255)
    elif name == "cross":
        t = r * _reach(rng, 0.22, 0.32, 0.95)  # arm half-width; at 1.1 the arms fill a square
        d.polygon(_rect(cx, cy, r * 1.1, t, small_tilt), fill=255)
        d.polygon(_rect(cx, cy, t, r * 1.1, small_tilt), fill=255)
    elif name == "ring":
        hole = r * _reach(rng, 0.7, 0.45, 0.0)  # hole radius; at 0 the ring is a disc
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        d.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=0)
    elif name in ("horizontal_bars", "vertical_bars"):
        angle = small_tilt + (math.pi / 2 if name == "vertical_bars" else 0.0)
        t = r * _reach(rng, 0.15, 0.22, 0.36)  # bar half-width; at 0.35 the bars touch
        for j in (-1, 0, 1):
            off = j * r * 0.7
            # offset perpendicular to the bar direction
            ox, oy = -off * math.sin(angle), off * math.cos(angle)
            d.polygon(_rect(cx + ox, cy + oy, r * 1.05, t, angle), fill=255)
    elif name == "diagonal_stripe":
        angle = (math.pi / 4 if rng.random() < 0.5 else 3 * math.pi / 4) + small_tilt
        d.polygon(_rect(cx, cy, r * 1.6, r * 0.3, angle), fill=255)
    elif name == "dot_grid":
        step = r * 0.75
        dot = step * _reach(rng, 0.25, 0.35, 0.72)  # at 0.71 the dots fuse into a block
        for i in (-1, 0, 1):
            for j in (-1, 0, 1):
                ((px, py),) = _rot([(i * step, j * step)], cx, cy, small_tilt)
                d.ellipse([px - dot, py - dot, px + dot, py + dot], fill=255)
    elif name == "star":
        outer = r * 1.2
        inner = outer * _reach(rng, 0.35, 0.5, 0.9)  # at 0.9 the points are bumps on a disc
        pts = []
        for j in range(10):
            rad = outer if j % 2 == 0 else inner
            a = j * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        d.polygon(_rot(pts, cx, cy, theta), fill=255)
    else:  # pragma: no cover - CLASS_NAMES and the branches above are kept in step
        raise ValueError(name)


def _draw_speck(d: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    """A 1-2 px speck or a short thin stroke somewhere in the image (2x scale)."""
    big = IMAGE_SIZE * _SCALE
    x, y = (float(v) for v in rng.uniform(2, big - 2, 2))
    if rng.random() < 0.5:
        q = float(rng.uniform(2, 4))
        d.ellipse([x - q, y - q, x + q, y + q], fill=255)
    else:
        length, width = float(rng.uniform(6, 16)), float(rng.uniform(1.5, 3))
        d.polygon(_rect(x, y, length / 2, width / 2, float(rng.uniform(0, math.pi))), fill=255)


def _mask(draw: Any) -> np.ndarray:
    """Run ``draw(ImageDraw)`` on a 2x-scale mask; return its (32, 32, 1) float alpha in 0..1."""
    big = IMAGE_SIZE * _SCALE
    mask = Image.new("L", (big, big), 0)
    draw(ImageDraw.Draw(mask))
    return np.asarray(mask.reduce(_SCALE), dtype=np.float32)[..., None] / 255.0


def render_sample(class_index: int, index: int) -> np.ndarray:
    """Draw one sample as a (32, 32, 3) uint8 array; a pure function of (class_index, index)."""
    rng = np.random.default_rng([VERSION, class_index, index])
    big = IMAGE_SIZE * _SCALE

    # Background: a gentle two-colour gradient in a random direction.
    base = rng.integers(0, 256, 3).astype(np.float32)
    other = np.clip(base + rng.normal(0, 35, 3), 0, 255).astype(np.float32)
    direction = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / (IMAGE_SIZE - 1)
    t_grad = (xs * math.cos(direction) + ys * math.sin(direction) + 1.0) / 2.0
    out = base[None, None, :] * (1 - t_grad[..., None]) + other[None, None, :] * t_grad[..., None]
    mid = (base + other) / 2

    # Dust and scratches: specks and short strokes that are no class at all.
    for _ in range(int(rng.integers(0, MAX_SPECKS + 1))):
        colour = _colour_against(rng, mid, 25).astype(np.float32)
        alpha = _mask(lambda d: _draw_speck(d, rng))
        out = out * (1 - alpha) + colour[None, None, :] * alpha

    # The labelled shape.
    contrast = FAINT_CONTRAST if rng.random() < FAINT_P else CONTRAST
    fg = _colour_at_distance(rng, mid, float(rng.uniform(*contrast)))
    r = float(rng.uniform(15, 24))  # "radius" at 2x scale: 7.5..12 px at 32x32
    margin = r + 2
    cx = float(rng.uniform(margin, big - margin))
    cy = float(rng.uniform(margin, big - margin))
    alpha = _mask(lambda d: _draw_shape(d, CLASS_NAMES[class_index], cx, cy, r, rng))
    out = out * (1 - alpha) + fg[None, None, :] * alpha

    noise_sigma = float(rng.uniform(*NOISE_SIGMA))
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
