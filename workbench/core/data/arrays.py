"""Array sources: NPZ and CSV files and MNIST IDX folders, as image or tabular datasets."""

from __future__ import annotations

import csv
import gzip
import math
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.core.data.datasets import ArrayImageDataset, DatasetBundle, TabularDataset, augment_note
from workbench.core.data.splits import (
    Splits,
    check_len,
    check_x,
    encode_labels,
    encode_parts,
    need_two_classes,
    predefined_arrays,
    require_finite,
    source_path,
    split_arrays,
)
from workbench.core.data.tokens import is_token_npz, load_token_arrays
from workbench.core.data.transforms import ImageTransform
from workbench.errors import DataLoadError
from workbench.recipe import DataSection

# Array-name pairs tried in order for single-split npz files (documented in the recipe help).
NPZ_PAIRS: tuple[tuple[str, str], ...] = (
    ("x", "y"),
    ("X", "y"),
    ("images", "labels"),
    ("data", "target"),
    ("data", "targets"),
    ("inputs", "targets"),
)


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


def _array_bundle(sp: Splits, names: list[str], section: DataSection, desc: str, where: str) -> DatasetBundle:
    """Build image or tabular datasets from in-memory arrays."""
    if sp.x_tr.ndim == 2:
        feats = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in (sp.x_tr, sp.x_va, sp.x_ev)]
        return _tabular_bundle(feats, [sp.y_tr, sp.y_va, sp.y_ev], names, section, desc, where)
    xs = [_to_nchw(x, where) for x in (sp.x_tr, sp.x_va, sp.x_ev)]
    uint8 = xs[0].dtype == np.uint8
    if not uint8:
        xs = [x.astype(np.float32) for x in xs]
        for split, arr in zip(("train", "validation", "eval"), xs, strict=True):
            require_finite(arr, where, split)
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
        f"{'x'.join(map(str, shape))}, {len(names)} classes{augment_note(t_train)}",
        preprocess=pre,
    )


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


def load_npz(section: DataSection) -> DatasetBundle:
    path = source_path(section, "an .npz file with arrays x and y (or x_train/y_train/x_test/y_test)")
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

        if is_token_npz(names_found):
            return load_token_arrays(path, names_found, get, section)
        desc = f"npz {path}"
        val: tuple[np.ndarray, np.ndarray] | None = None  # the file's own validation split, raw labels
        if "x_train" in names_found and "y_train" in names_found:
            x_tr, y_tr = get("x_train"), get("y_train")
            check_x(x_tr, str(path), "x_train")
            check_len(x_tr, y_tr, path, "x_train", "y_train")
            if "x_val" in names_found and "y_val" in names_found:
                val = get("x_val"), get("y_val")
                check_x(val[0], str(path), "x_val")
                check_len(val[0], val[1], path, "x_val", "y_val")
                if val[0].shape[1:] != x_tr.shape[1:] or (val[0].dtype == np.uint8) != (x_tr.dtype == np.uint8):
                    raise DataLoadError(
                        f"{path}: x_train samples are {x_tr.shape[1:]} {x_tr.dtype} but x_val samples are "
                        f"{val[0].shape[1:]} {val[0].dtype}; save both with the same shape and dtype"
                    )
            if "x_test" in names_found and "y_test" in names_found:
                x_ev, y_ev = get("x_test"), get("y_test")
                check_x(x_ev, str(path), "x_test")
                check_len(x_ev, y_ev, path, "x_test", "y_test")
                if x_ev.shape[1:] != x_tr.shape[1:]:
                    raise DataLoadError(
                        f"{path}: x_train samples are {x_tr.shape[1:]} but x_test samples are {x_ev.shape[1:]}"
                    )
                coded, names = encode_parts([y_tr, y_ev] + ([val[1]] if val else []), str(path))
                need_two_classes(names, str(path))
                coded_val = (val[0], coded[2]) if val else None
                sp = predefined_arrays(x_tr, coded[0], x_ev, coded[1], section, str(path), coded_val)
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
            check_x(x, str(path), pair[0])
            check_len(x, y, path, pair[0], pair[1])
    coded, names = encode_parts([y] + ([val[1]] if val else []), str(path))
    need_two_classes(names, str(path))
    sp = split_arrays(x, coded[0], section, str(path), (val[0], coded[1]) if val else None)
    return _array_bundle(sp, names, section, desc, str(path))


def load_csv(section: DataSection) -> DatasetBundle:
    path = source_path(section, "a .csv file with a header row, numeric feature columns and a label column")
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
    codes, names = encode_labels(y, str(path))
    need_two_classes(names, str(path))
    sp = split_arrays(x, codes, section, str(path))
    feats = [torch.from_numpy(v) for v in (sp.x_tr, sp.x_va, sp.x_ev)]
    return _tabular_bundle(feats, [sp.y_tr, sp.y_va, sp.y_ev], names, section, f"csv {path}", str(path))


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


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


def load_mnist(section: DataSection) -> DatasetBundle:
    path = source_path(section, "a folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
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
        coded, names = encode_parts([y_tr, y_ev], str(path))
        need_two_classes(names, str(path))
        sp = predefined_arrays(x_tr, coded[0], x_ev, coded[1], section, str(path))
        return _array_bundle(sp, names, section, desc, str(path))
    x, y = train
    codes, names = encode_labels(y, str(path))
    need_two_classes(names, str(path))
    return _array_bundle(split_arrays(x, codes, section, str(path)), names, section, desc, str(path))
