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

    def lengths(self) -> np.ndarray:
        """Real tokens per sample: the attention mask's sum, else up to the last non-zero id."""
        names = self.names
        i = next((k for k, n in enumerate(names) if "mask" in n.lower()), None)
        if i is not None:
            return self.tokens[:, i].ne(0).sum(1).numpy()
        nz = self.tokens[:, names.index("input_ids") if "input_ids" in names else 0].ne(0)
        last = nz.shape[1] - torch.flip(nz, dims=[1]).to(torch.int8).argmax(1)
        return torch.where(nz.any(1), last, torch.zeros_like(last)).numpy()


class LengthBatchSampler:
    """Batches of samples with similar lengths (length-aware batching).

    Evaluation: samples sorted by length, cut into batches. Training: a seeded shuffle, then sorted
    within windows of ``window`` batches, cut into batches whose order is shuffled again: batches
    stay random from epoch to epoch, but each holds similar lengths, so padding each to its longest
    member (``trim_collate``) removes most of the padding.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0,
                 window: int = 50) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.window = int(window)
        self.epoch = 0

    def _batches(self) -> list[list[int]]:
        n, b = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i:i + b].tolist() for i in range(0, n, b) if not self.drop_last or i + b <= n]
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        perm = rng.permutation(n)
        span = b * self.window
        order = np.concatenate([c[np.argsort(self.lengths[c], kind="stable")]
                                for c in (perm[i:i + span] for i in range(0, n, span))]) if n else perm
        batches = [order[i:i + b].tolist() for i in range(0, n, b) if not self.drop_last or i + b <= n]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._batches())

    def __len__(self) -> int:
        n, b = len(self.lengths), self.batch_size
        return n // b if self.drop_last else -(-n // b)


def trim_collate(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[inputs, seq]`` token samples and cut the batch to its longest member (right padding)."""
    x = torch.stack([b[0] for b in batch])
    y = torch.as_tensor([b[1] for b in batch], dtype=torch.int64)
    used = x.ne(0).any(1).any(0)  # token positions any input of any sample uses
    longest = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
    return x[:, :, :longest].contiguous(), y


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
