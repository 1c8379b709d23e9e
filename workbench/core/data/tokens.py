"""Token data: an .npz of named integer arrays (``input_ids``, ``attention_mask``, ...) plus ``labels``.

``data.source = "npz"`` with an ``input_ids`` array is token data. The named arrays of one sample are
stacked into one int64 tensor ``[inputs, seq]`` (the order of ``TokenDataset.names``), so loaders,
splits and batching stay what they are for every other source; ``models.token_inputs.TokenInputs``
unpacks it again into the model's named arguments (``forward(input_ids, attention_mask, ...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from workbench.core.data.datasets import DatasetBundle
from workbench.core.data.splits import encode_parts, need_two_classes, split_arrays
from workbench.errors import DataLoadError
from workbench.recipe import DataSection

#: Array names read as token inputs, in this order when present (any other integer array joins after them).
TOKEN_ORDER = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
LABEL_NAMES = ("labels", "label", "y")


class TokenDataset(Dataset):
    """Samples of stacked named token arrays ``[len(names), seq]`` (int64) with int labels."""

    def __init__(self, tokens: torch.Tensor, targets: np.ndarray, names: Sequence[str]) -> None:
        self.tokens = tokens.to(torch.int64)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.targets)

    def raw_image(self, i: int) -> torch.Tensor | None:
        return None  # previews: not an image

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tokens[i], int(self.targets[i])


def is_token_npz(names: Sequence[str]) -> bool:
    return "input_ids" in names


def load_token_arrays(path: Path, names_found: Sequence[str], get: Callable[[str], np.ndarray],
                      section: DataSection) -> DatasetBundle:
    """A ``DatasetBundle`` (kind ``tokens``) from the named arrays of one .npz file."""
    where = str(path)
    label = next((n for n in LABEL_NAMES if n in names_found), None)
    if label is None:
        raise DataLoadError(f"{where}: token arrays need class labels for training and accuracy: add an array named "
                            f"'labels' (one int per sample) next to {', '.join(names_found)}")
    extra = [n for n in names_found if n not in TOKEN_ORDER and n not in LABEL_NAMES]
    names = [n for n in TOKEN_ORDER if n in names_found]
    arrays = {}
    for n in [*names, *extra]:
        a = get(n)
        if a.dtype.kind not in "biu" or a.ndim != 2:
            if n in extra:  # not a token input (e.g. a text column saved alongside): ignored
                continue
            raise DataLoadError(f"{where}: array {n!r} has dtype {a.dtype} and shape {list(a.shape)}; token arrays "
                                "are integers shaped [samples, sequence length]")
        arrays[n] = a
    names = list(arrays)
    ids = arrays["input_ids"]
    for n, a in arrays.items():
        if a.shape != ids.shape:
            raise DataLoadError(f"{where}: array {n!r} has shape {list(a.shape)} but input_ids has {list(ids.shape)}; "
                                "pad every token array to the same length")
    if ids.min(initial=0) < 0:
        raise DataLoadError(f"{where}: input_ids holds negative ids (min {int(ids.min())}); pad with 0, not -1")
    y = get(label)
    if len(y) != len(ids):
        raise DataLoadError(f"{where}: {label!r} has {len(y)} entries but input_ids has {len(ids)} samples")
    x = np.stack([arrays[n].astype(np.int64) for n in names], axis=1)  # [N, inputs, seq]
    coded, classes = encode_parts([y], where)
    need_two_classes(classes, where)
    sp = split_arrays(x, coded[0], section, where)

    def ds(xs: np.ndarray, ys: np.ndarray) -> TokenDataset:
        return TokenDataset(torch.from_numpy(np.ascontiguousarray(xs)), ys, names)

    return DatasetBundle(
        ds(sp.x_tr, sp.y_tr), ds(sp.x_va, sp.y_va), ds(sp.x_ev, sp.y_ev), len(classes), tuple(x.shape[1:]),
        classes, "tokens",
        f"npz tokens {path}: {', '.join(names)} [{ids.shape[1]} tokens], {len(classes)} classes",
        preprocess={"token_inputs": names, "seq_len": int(ids.shape[1])},
    )
