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

import numpy as np

from workbench.core.data.arrays import load_csv, load_mnist, load_npz
from workbench.core.data.datasets import DatasetBundle, SyntheticDataset
from workbench.core.data.default_dataset import ensure_default_dataset
from workbench.core.data.image_folder import load_image_folder
from workbench.core.data.splits import carve_validation, check_split, source_path, stratified_split
from workbench.errors import DataLoadError
from workbench.recipe import DataSection

# ----------------------------------------------------------------------------------------- synthetic


def _load_synthetic(section: DataSection) -> DatasetBundle:
    n = section.synthetic_samples if not section.limit else min(section.limit, section.synthetic_samples)
    k = section.synthetic_classes
    targets = np.random.default_rng(section.seed).integers(0, k, section.synthetic_samples)[:n]
    tr, ev = stratified_split(targets, section.eval_fraction, section.seed)
    tr, va = carve_validation(tr, targets, section.val_fraction, section.seed)
    check_split(tr, va, ev, "synthetic data")
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
        return load_image_folder(root, section, validate=False, desc=f"default shapes ({root.name})")
    if src == "synthetic":
        return _load_synthetic(section)
    if src == "image_folder":
        root = source_path(section, "a folder with one sub-folder of images per class")
        return load_image_folder(root, section)
    if src == "csv":
        return load_csv(section)
    if src == "npz":
        return load_npz(section)
    if src == "mnist":
        return load_mnist(section)
    raise DataLoadError(f"data.source = {src!r} is not supported")  # pragma: no cover - recipe validates


# ------------------------------------------------------------------------------------------ previews


