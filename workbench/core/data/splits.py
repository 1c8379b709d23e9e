"""Train / validation / eval splits (stratified, seeded) and the label and array checks every source shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import DataLoadError
from workbench.recipe import DataSection


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


def subsample(n: int, limit: int, seed: int) -> np.ndarray:
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


def encode_labels(values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
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


def encode_parts(parts: list[np.ndarray], where: str) -> tuple[list[np.ndarray], list[str]]:
    """``encode_labels`` over several label arrays at once (one class list for all splits)."""
    codes, names = encode_labels(np.concatenate([p.reshape(len(p), -1) for p in parts]), where)
    bounds = np.cumsum([len(p) for p in parts])[:-1]
    return np.split(codes, bounds), names


def need_two_classes(names: list[str], where: str) -> None:
    if len(names) < 2:
        found = names[0] if names else "none"
        raise DataLoadError(
            f"{where}: only {len(names)} class found ({found}); a classifier needs at least 2 classes"
        )


def check_split(train_idx: np.ndarray, val_idx: np.ndarray, eval_idx: np.ndarray, where: str) -> None:
    if len(train_idx) == 0 or len(val_idx) == 0 or len(eval_idx) == 0:
        raise DataLoadError(
            f"{where}: too few samples to split into train, validation and eval "
            f"({len(train_idx)} / {len(val_idx)} / {len(eval_idx)}); add samples (at least 3 per class) "
            "or raise data.limit, data.val_fraction or data.eval_fraction"
        )


def source_path(section: DataSection, what: str) -> Path:
    if not section.path:
        raise DataLoadError(f"data.path is empty; data.source = {section.source!r} needs {what}")
    p = Path(section.path).expanduser()
    if not p.exists():
        raise DataLoadError(f"{p}: not found; data.path should be {what}")
    if not p.is_dir() and not p.is_file():  # a FIFO or device would block (or never end) when read
        raise DataLoadError(f"{p}: not a regular file (a pipe, socket or device); data.path should be {what}")
    return p


@dataclass
class Splits:
    """In-memory arrays of the three splits (x: numeric samples, y: class codes 0..K-1)."""

    x_tr: np.ndarray
    y_tr: np.ndarray
    x_va: np.ndarray
    y_va: np.ndarray
    x_ev: np.ndarray
    y_ev: np.ndarray


def require_finite(x: np.ndarray, where: str, split: str) -> None:
    """NaN/inf pixels would surface much later as "training diverged"; name the data instead."""
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))[0])
        raise DataLoadError(f"{where}: the {split} images hold {int(np.isnan(x).sum()):,} NaN and "
                            f"{int(np.isinf(x).sum()):,} infinite values (first in sample {first}); replace them "
                            "(e.g. np.nan_to_num) or drop those samples")


def split_arrays(
    x: np.ndarray,
    codes: np.ndarray,
    section: DataSection,
    where: str,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> Splits:
    """One labelled pool: eval and (unless the file has its own ``val``) validation are carved from it."""
    keep = subsample(len(codes), section.limit, section.seed)
    x, codes = x[keep], codes[keep]
    tr, ev = stratified_split(codes, section.eval_fraction, section.seed)
    if val is None:
        tr, va = carve_validation(tr, codes, section.val_fraction, section.seed)
        check_split(tr, va, ev, where)
        return Splits(x[tr], codes[tr], x[va], codes[va], x[ev], codes[ev])
    cap_va = max(1, int(round(len(tr) * section.val_fraction))) if section.limit else 0
    kva = subsample(len(val[1]), cap_va, section.seed + 2)
    check_split(tr, kva, ev, where)
    return Splits(x[tr], codes[tr], val[0][kva], val[1][kva], x[ev], codes[ev])


def predefined_arrays(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_ev: np.ndarray,
    y_ev: np.ndarray,
    section: DataSection,
    where: str,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> Splits:
    """The file's own train / test split (and validation arrays, if any); otherwise val is carved from train."""
    cap_tr, cap_ev = _split_caps(section.limit, section.eval_fraction)
    ktr = subsample(len(y_tr), cap_tr, section.seed)
    kev = subsample(len(y_ev), cap_ev, section.seed + 1)
    x_tr, y_tr = x_tr[ktr], y_tr[ktr]
    if val is None:
        tr, va = carve_validation(np.arange(len(y_tr)), y_tr, section.val_fraction, section.seed)
        x_va, y_va, x_tr, y_tr = x_tr[va], y_tr[va], x_tr[tr], y_tr[tr]
    else:
        cap_va = max(1, int(round(cap_tr * section.val_fraction))) if cap_tr else 0
        kva = subsample(len(val[1]), cap_va, section.seed + 2)
        x_va, y_va = val[0][kva], val[1][kva]
    sp = Splits(x_tr, y_tr, x_va, y_va, x_ev[kev], y_ev[kev])
    check_split(sp.y_tr, sp.y_va, sp.y_ev, where)
    return sp


def check_x(x: np.ndarray, where: str, name: str) -> None:
    if x.dtype.kind not in "biuf":
        raise DataLoadError(f"{where}: array {name!r} has dtype {x.dtype}; features/images must be numeric")
    if x.ndim < 2 or x.ndim > 4:
        raise DataLoadError(
            f"{where}: array {name!r} has shape {x.shape}; use (N, features), (N,H,W), (N,H,W,C) or (N,C,H,W)"
        )
    if x.ndim > 2 and x.dtype.kind == "f":
        # Checked on the file's own array, before any split, so the sample index is the user's.
        require_finite(x, where, f"{name!r}")


def check_len(x: np.ndarray, y: np.ndarray, path: Path, xn: str, yn: str) -> None:
    if len(x) != len(y):
        raise DataLoadError(
            f"{path}: {xn} has {len(x)} samples but {yn} has {len(y)} labels; they must match"
        )
