"""Named model inputs of any dtype: what each one means, and synthetic values that follow that meaning.

A transformer exported the standard way takes several integer inputs (``input_ids``,
``attention_mask``, ``token_type_ids``) with symbolic batch and sequence axes. Standard-normal
floats cast to int64 are meaningless there (negative ids, mostly [PAD]), so synthetic feeds follow
each input's role:

* ``ids``: integers inside the vocabulary, whose size is read from the largest embedding table
  (a ``Gather`` over a constant) that the input indexes; ``1..vocab-1`` so no sample is all [PAD];
* ``mask`` (an integer or bool input whose name contains "mask"): all ones;
* ``token_type`` (name contains "type" or "segment"): zeros;
* ``position`` (name contains "position"): ``0..seq_len-1``;
* ``float``: standard normal (what image models were always timed on).

Symbolic axes after the batch take ``seq_len``. ``describe`` is the one line that tells the user what
was synthesised. Feeds are ``{name: array}`` dicts; ``OrtRuntime`` takes them as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

__all__ = [
    "InputSpec",
    "DEFAULT_SEQ_LEN",
    "describe_feeds",
    "feeds_batches",
    "is_token_model",
    "load_token_npz",
    "onnx_input_specs",
    "onnx_max_positions",
    "slice_feed",
    "synthetic_feed",
]

DEFAULT_SEQ_LEN = 128
#: ids drawn when no embedding table says how large the vocabulary is
_FALLBACK_VOCAB = 100
#: ops an index tensor passes through on its way to an embedding Gather (casts, reshapes, offsets)
_INDEX_PASSTHROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand", "Slice",
                      "Add", "Sub", "Mod", "Clip", "Where", "Max", "Min", "Transpose"}


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, numpy dtype name, declared dims (batch first; str/None when symbolic)."""

    name: str
    dtype: str
    dims: tuple[int | str | None, ...]
    vocab: int | None = None  # rows of the embedding table this input indexes (ids only)
    vocab_source: str = ""

    @property
    def role(self) -> str:
        kind = np.dtype(self.dtype).kind
        low = self.name.lower()
        if kind == "f":
            return "float"
        if "mask" in low or kind == "b":
            return "mask"
        if "type" in low or "segment" in low:
            return "token_type"
        if "position" in low:
            return "position"
        return "ids"

    def sample_shape(self, seq_len: int) -> tuple[int, ...]:
        """Per-sample shape: declared fixed dims, ``seq_len`` for symbolic ones."""
        return tuple(d if isinstance(d, int) and d > 0 else seq_len for d in self.dims[1:])

    @property
    def fixed_batch(self) -> int | None:
        d = self.dims[0] if self.dims else None
        return d if isinstance(d, int) and d > 0 else None


def is_token_model(specs: Sequence[InputSpec]) -> bool:
    """Several inputs, or any input that is not float: the named-feeds path (not the single-tensor one)."""
    return len(specs) > 1 or any(s.role != "float" for s in specs)


# ---------------------------------------------------------------------------------------- ONNX graphs


def _vocab_sizes(model: Any, names: Sequence[str]) -> dict[str, tuple[int, str]]:
    """For each graph input, the largest constant table a ``Gather`` indexes with it (rows, table name)."""
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    out: dict[str, tuple[int, str]] = {}
    for name in names:
        seen = {name}
        frontier = [name]
        best: tuple[int, str] | None = None
        for _ in range(6):  # a few hops: Cast/Unsqueeze/Reshape between the input and its embedding
            nxt: list[str] = []
            for tensor in frontier:
                for node in consumers.get(tensor, []):
                    if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor:
                        dims = inits.get(node.input[0])
                        if dims and len(dims) >= 2 and (best is None or dims[0] > best[0]):
                            best = (int(dims[0]), node.input[0])
                    elif node.op_type in _INDEX_PASSTHROUGH:
                        for o in node.output:
                            if o not in seen:
                                seen.add(o)
                                nxt.append(o)
            frontier = nxt
        if best is not None:
            out[name] = best
    return out


def onnx_max_positions(model: Any) -> tuple[int, str] | None:
    """Rows of the position-embedding table (a constant ``Gather`` indexed by a ``Range``), if any.

    A sequence longer than this indexes past the table and onnxruntime fails mid-run; callers refuse
    such a ``seq_len`` up front instead.
    """
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    best: tuple[int, str] | None = None
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        dims = inits.get(node.input[0])
        if not dims or len(dims) != 2:
            continue
        frontier, found = [node.input[1]], False
        for _ in range(5):
            nxt = []
            for t in frontier:
                n = producer.get(t)
                if n is None:
                    continue
                if n.op_type == "Range":
                    found = True
                    break
                if n.op_type in _INDEX_PASSTHROUGH:
                    nxt += list(n.input)
            if found or not nxt:
                break
            frontier = nxt
        if found and (best is None or dims[0] < best[0]):
            best = (int(dims[0]), node.input[0])
    return best


def onnx_input_specs(model: Any) -> list[InputSpec]:
    """The graph's real inputs (initializers excluded), with dtypes, dims and vocabulary sizes."""
    from onnx import helper

    inits = {t.name for t in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in inits]
    vocab = _vocab_sizes(model, [v.name for v in values])
    specs = []
    for v in values:
        tt = v.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        except Exception:
            raise WorkbenchError(f"input {v.name!r} has an unsupported element type ({tt.elem_type}); Workbench "
                                 "feeds float, integer and bool tensors") from None
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        rows, table = vocab.get(v.name, (None, ""))
        specs.append(InputSpec(v.name, dtype, dims, rows, table))
    return specs


# ---------------------------------------------------------------------------------------- synthesis


def synthetic_feed(specs: Sequence[InputSpec], batch: int, seq_len: int = DEFAULT_SEQ_LEN,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """One batch of inputs that follow each input's meaning (see the module docstring)."""
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for s in specs:
        shape = (batch, *s.sample_shape(seq_len))
        dtype = np.dtype(s.dtype)
        role = s.role
        if role == "float":
            a = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif role == "mask":
            a = np.ones(shape, dtype=dtype)
        elif role == "token_type":
            a = np.zeros(shape, dtype=dtype)
        elif role == "position":
            a = np.broadcast_to(np.arange(shape[-1] if len(shape) > 1 else 1), shape).astype(dtype)
        else:
            vocab = s.vocab or _FALLBACK_VOCAB
            a = rng.integers(1 if vocab > 1 else 0, vocab, size=shape).astype(dtype)
        feed[s.name] = np.ascontiguousarray(a)
    return feed


def feeds_batches(specs: Sequence[InputSpec], samples: int, batch: int, seq_len: int = DEFAULT_SEQ_LEN,
                  seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``samples`` synthetic samples in batches of ``batch`` (calibration and parity without data)."""
    out = []
    left, i = samples, 0
    while left > 0:
        b = min(batch, left)
        out.append(synthetic_feed(specs, b, seq_len, seed + i))
        left -= b
        i += 1
    return out


def describe_feeds(specs: Sequence[InputSpec], seq_len: int) -> str:
    """One line: what each synthesised input holds."""
    parts = []
    for s in specs:
        shape = ",".join(["batch", *map(str, s.sample_shape(seq_len))])
        role = s.role
        if role == "float":
            what = "standard normal"
        elif role == "mask":
            what = "all ones"
        elif role == "token_type":
            what = "zeros"
        elif role == "position":
            what = "0..seq-1"
        elif s.vocab:
            what = f"ids in 1..{s.vocab - 1} (vocabulary {s.vocab} from {s.vocab_source!r})"
        else:
            what = f"ids in 1..{_FALLBACK_VOCAB - 1} (no embedding table found: vocabulary unknown)"
        parts.append(f"{s.name} {s.dtype}[{shape}] {what}")
    symbolic = any(not (isinstance(d, int) and d > 0) for s in specs for d in s.dims[1:])
    tail = f"; symbolic axes set to --seq-len {seq_len}" if symbolic else ""
    return "synthesised inputs: " + "; ".join(parts) + tail


def slice_feed(feed: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: v[start:stop] for k, v in feed.items()}


# ---------------------------------------------------------------------------------------- token files


def load_token_npz(path: str | Path, specs: Sequence[InputSpec], what: str = "--data",
                   max_samples: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None, list[str]]:
    """Named token arrays from an ``.npz`` (``input_ids``, ``attention_mask``, ... + optional ``labels``).

    Each array is cast to the model input's own dtype. A missing mask is all ones and missing token
    types are zeros (said in the returned notes); a missing ids input is an error naming the keys
    that would work. Returns ``(feed, labels or None, notes)``.
    """
    from workbench.core.fileio import regular_file

    p = Path(path).expanduser()
    hint = f"give an .npz with arrays named {', '.join(s.name for s in specs)} (+ optional labels)"
    regular_file(p, f"{what} file", hint)
    if p.suffix.lower() != ".npz":
        raise WorkbenchError(f"{what} {p}: a token model takes an .npz of named arrays; {hint}")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise WorkbenchError(f"{what} {p}: refused: an array holds Python objects (dtype=object), which were "
                                 "not loaded because that could run code; save numeric arrays with np.savez") from None
        raise WorkbenchError(f"{what} {p}: cannot read it as .npz ({str(exc).splitlines()[0][:200]}); {hint}") from None
    except Exception as exc:
        raise WorkbenchError(f"{what} {p}: cannot read it as .npz ({str(exc).splitlines()[0][:200]}); {hint}") from None
    labels = arrays.pop("labels", arrays.pop("label", None))
    notes: list[str] = []
    feed: dict[str, np.ndarray] = {}
    fill_later: list[InputSpec] = []  # a mask or token types the file leaves out: made once n and length are known
    n: int | None = None
    for s in specs:
        if s.name in arrays:
            a = arrays[s.name]
            if a.dtype.kind not in "biuf":
                raise WorkbenchError(f"{what} {p}: array {s.name!r} has dtype {a.dtype}; give numbers")
            if s.role != "float" and a.dtype.kind == "f" and not np.all(np.mod(a, 1) == 0):
                raise WorkbenchError(f"{what} {p}: array {s.name!r} holds fractions; token inputs are integers")
            if a.ndim != len(s.dims):
                raise WorkbenchError(f"{what} {p}: array {s.name!r} has shape {list(a.shape)}; the model input "
                                     f"has {len(s.dims)} dims {list(s.dims)}")
            for i, (d, got) in enumerate(zip(s.dims[1:], a.shape[1:], strict=True)):
                if isinstance(d, int) and d > 0 and d != got:
                    raise WorkbenchError(f"{what} {p}: array {s.name!r} dim {i + 1} is {got} but the model fixes it "
                                         f"to {d}")
            if s.role == "ids" and s.vocab and (a.min(initial=0) < 0 or a.max(initial=0) >= s.vocab):
                raise WorkbenchError(f"{what} {p}: array {s.name!r} holds ids {int(a.min())}..{int(a.max())} but "
                                     f"the vocabulary has {s.vocab} rows (0..{s.vocab - 1})")
            feed[s.name] = np.ascontiguousarray(a.astype(np.dtype(s.dtype), copy=False))
        elif s.role in ("mask", "token_type"):
            fill_later.append(s)
            continue
        else:
            raise WorkbenchError(f"{what} {p}: no array named {s.name!r} (it has {', '.join(sorted(arrays)) or 'none'}); "
                                 f"{hint}")
        if n is not None and len(feed[s.name]) != n:
            raise WorkbenchError(f"{what} {p}: arrays hold different sample counts ({n} vs "
                                 f"{len(feed[s.name])} in {s.name!r})")
        n = len(feed[s.name])
    if n is None or n == 0:
        raise WorkbenchError(f"{what} {p}: no samples; {hint}")
    roles = {s.name: s.role for s in specs}
    given = {k: a.shape[1:] for k, a in feed.items() if a.ndim > 1 and roles[k] != "float"}
    if len(set(given.values())) > 1:
        raise WorkbenchError(f"{what} {p}: token arrays differ in shape per sample "
                             f"({', '.join(f'{k} {list(v)}' for k, v in given.items())}); pad them to one length")
    ref = next(iter(feed.values()))
    for s in fill_later:
        shape = (n, *ref.shape[1:]) if len(s.dims) == ref.ndim else (n, *s.sample_shape(ref.shape[-1]))
        fill = np.ones if s.role == "mask" else np.zeros
        feed[s.name] = fill(shape, dtype=np.dtype(s.dtype))
        notes.append(f"{p.name} has no {s.name!r}: using {'all ones' if s.role == 'mask' else 'zeros'}")
    feed = {s.name: feed[s.name] for s in specs}  # the model's input order
    if labels is not None and len(labels) != n:
        raise WorkbenchError(f"{what} {p}: 'labels' has {len(labels)} entries for {n} samples")
    if max_samples is not None:
        feed = slice_feed(feed, 0, max_samples)
        labels = labels[:max_samples] if labels is not None else None
    return feed, labels, notes
