"""Bring your own model file: benchmark (and optionally score) an ONNX, torch.export or TorchScript file.

Input shapes come from the file itself: the ONNX graph's declared input, or the example input a
``.pt2`` was exported with. Symbolic dimensions other than the batch need a value from the user
(``input_shape="3,224,224"``; the error says which dimension). Without data the inputs are
synthetic (standard normal, which is fine for latency); with a labelled dataset (an ``.npz``, a
CSV or an image folder) the result also carries eval accuracy per runtime.

ONNX files go through the same safety checks as the model loaders (``quantize.checked_onnx``):
truncated or non-ONNX files and external data outside the model's folder are refused with a
one-line error before onnxruntime touches them.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.core.events import CancelToken, Reporter
from workbench.core.measure.feeds import (
    DEFAULT_SEQ_LEN,
    InputSpec,
    describe_feeds,
    is_token_model,
    load_token_npz,
    onnx_input_specs,
    onnx_max_positions,
    slice_feed,
    synthetic_feed,
)
from workbench.errors import ModelLoadError, WorkbenchError

__all__ = ["ModelFile", "bench_model_file", "evaluate_feed", "evaluate_file", "load_labelled_data",
           "open_model_file", "parse_shape"]

RUNTIMES = ("eager", "compile", "onnxruntime")


def parse_shape(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """'3,32,32' (or 3x32x32, or a list) -> (3, 32, 32); empty -> None."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, str):
        parts = [p for p in text.replace("x", ",").replace(" ", ",").split(",") if p]
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise WorkbenchError(f"--shape {text!r}: expected comma-separated sizes without the batch, e.g. 3,32,32") from None
    else:
        dims = tuple(int(d) for d in text)
    if not dims or any(d < 1 for d in dims):
        raise WorkbenchError(f"--shape {text!r}: sizes must be positive integers, e.g. 3,32,32")
    return dims


@dataclass
class ModelFile:
    """A user model file, opened: its kind, per-sample input shape, and what can run it."""

    path: Path
    kind: str  # onnx | export | torchscript
    input_shape: tuple[int, ...]
    input_name: str = "input"
    fixed_batch: int | None = None  # the graph's batch dim when it is a constant
    module: torch.nn.Module | None = None
    notes: list[str] = field(default_factory=list)
    #: every named input (ONNX files); several of them, or integer ones, make a token model
    inputs: list[InputSpec] = field(default_factory=list)
    seq_len: int = DEFAULT_SEQ_LEN
    #: rows of the position-embedding table and its name (longer sequences fail inside onnxruntime)
    max_positions: tuple[int, str] | None = None

    def check_length(self, length: int, what: str = "--seq-len") -> None:
        """Refuse sequences longer than the position table, with the length that would work."""
        if self.max_positions is not None and length > self.max_positions[0]:
            rows, table = self.max_positions
            raise WorkbenchError(f"{self.path}: {what} {length} is longer than the model's {rows} position "
                                 f"embeddings ({table!r}); use {rows} tokens or fewer")

    @property
    def token_model(self) -> bool:
        """Fed named arrays of their own dtypes (ids, mask, ...) rather than one float tensor."""
        return is_token_model(self.inputs)

    def synthetic(self, batch: int, seed: int = 0) -> Any:
        """One batch of synthetic inputs: named feeds that follow their meaning, or standard normal floats."""
        if self.token_model:
            self.check_length(self.seq_len)
            return synthetic_feed(self.inputs, batch, self.seq_len, seed)
        return synthetic_inputs(self.input_shape, batch, seed)

    def describe_inputs(self) -> str:
        """One line: what synthetic inputs hold."""
        if self.inputs:
            return describe_feeds(self.inputs, self.seq_len)
        return f"synthesised inputs: {self.input_name} float32[batch,{','.join(map(str, self.input_shape))}] " \
               "standard normal"


def _resolve(declared: Sequence[int | str | None], override: tuple[int, ...] | None, where: str) -> tuple[int, ...]:
    """Per-sample shape from declared dims (ints, or names/None when symbolic) plus a user override."""
    if override is not None:
        if len(override) != len(declared):
            raise WorkbenchError(f"{where}: --shape has {len(override)} dims but the model input has "
                                 f"{len(declared)} besides the batch: {list(declared)}")
        for i, (d, o) in enumerate(zip(declared, override, strict=True)):
            if isinstance(d, int) and d > 0 and d != o:
                raise WorkbenchError(f"{where}: --shape dim {i + 1} = {o} but the model fixes it to {d}")
        return override
    out = []
    for i, d in enumerate(declared):
        if not isinstance(d, int) or d <= 0:
            raise WorkbenchError(f"{where}: input dim {i + 1} is symbolic ({d!r}); give its size with --shape, "
                                 f"e.g. --shape {','.join(str(x) if isinstance(x, int) and x > 0 else '32' for x in declared)}")
        out.append(d)
    return tuple(out)


def open_model_file(path: str | Path, input_shape: str | Sequence[int] | None = None,
                    seq_len: int = DEFAULT_SEQ_LEN) -> ModelFile:
    """Identify and open ``path`` (.onnx, .pt2 torch.export archive, or TorchScript zip).

    Every file goes through the loaders' one safety policy (``engine.models.loaders``): a .pt2 is
    scanned before torch.export.load, ONNX external data must stay in the model's folder, and a
    path that is not a regular file (FIFO, device) is refused before anything opens it. An ONNX
    file with several inputs or integer inputs (a transformer) is a *token model*: its symbolic axes
    after the batch take ``seq_len`` and its synthetic inputs follow their meaning (``feeds``).
    """
    from workbench.core.models.loaders import (
        check_model_path,
        checked_onnx,
        exported_module,
        load_export_archive,
        load_torchscript_file,
    )

    hint = "give a model file (.onnx, .pt2 or TorchScript .pt/.ts)"
    override = parse_shape(input_shape)
    p = check_model_path(path, "model file", hint)
    if p.suffix.lower() == ".onnx":
        if seq_len < 1:
            raise WorkbenchError(f"--seq-len {seq_len}: give a positive sequence length, e.g. 128")
        model = checked_onnx(p)
        specs = onnx_input_specs(model)
        if not specs:
            raise ModelLoadError(f"{p}: the ONNX graph has no inputs; {hint}")
        if is_token_model(specs):
            bad = next((s for s in specs if not s.dims), None)
            if bad is not None:
                raise ModelLoadError(f"{p}: input {bad.name!r} has no declared shape; Workbench needs [batch, ...] "
                                     "inputs")
            if override is not None:
                raise WorkbenchError(f"{p}: --shape is for single-input float models; this one takes "
                                     f"{', '.join(s.name for s in specs)}: set symbolic axes with --seq-len")
            fixed_batch = specs[0].fixed_batch
            mf = ModelFile(p, "onnx", specs[0].sample_shape(seq_len), specs[0].name, fixed_batch, inputs=specs,
                           seq_len=seq_len, max_positions=onnx_max_positions(model))
            if fixed_batch is not None:
                mf.notes.append(f"the graph fixes the batch size to {fixed_batch}; re-export with a dynamic batch "
                                "axis to time other batch sizes")
            return mf
        name = specs[0].name
        value = next(v for v in model.graph.input if v.name == name)
        dims: list[int | str | None] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim
        ]
        if not dims:
            raise ModelLoadError(f"{p}: input {name!r} has no declared shape; Workbench needs [batch, ...] inputs")
        fixed = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        mf = ModelFile(p, "onnx", _resolve(dims[1:], override, str(p)), name, fixed, inputs=specs)
        if fixed is not None:
            mf.notes.append(f"the graph fixes the batch size to {fixed}; re-export with a dynamic batch axis to "
                            "time other batch sizes")
        return mf
    if not zipfile.is_zipfile(p):
        raise ModelLoadError(f"{p}: not an ONNX (.onnx), torch.export (.pt2) or TorchScript file "
                             "(not a zip archive: truncated or another format)")
    if p.suffix.lower() == ".pt2":
        program = load_export_archive(p)
        try:
            spec = next(s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT")
            node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == spec.arg.name)
        except StopIteration:
            raise ModelLoadError(f"{p}: the exported program takes no input tensor; export a model called as "
                                 "model(x)") from None
        val = node.meta.get("val")
        dtype = getattr(val, "dtype", None)
        if dtype is not None and not dtype.is_floating_point:
            raise WorkbenchError(f"{p}: the program takes {str(dtype).removeprefix('torch.')} input "
                                 f"{list(getattr(val, 'shape', []))} (token ids?) and `workbench bench` feeds .pt2 "
                                 "files float inputs; bench its ONNX export instead (the file names its inputs, and "
                                 "ids are synthesised inside the vocabulary)")
        declared: list[int | str | None] = [int(d) if isinstance(d, int) else str(d) for d in getattr(val, "shape", [])]
        shape = _resolve(declared[1:], override, str(p))
        fixed = declared[0] if declared and isinstance(declared[0], int) else None
        mf = ModelFile(p, "export", shape, "input", fixed, exported_module(program, p))
        if fixed is not None:
            mf.notes.append(f"the program was exported with a fixed batch size {fixed}; re-export with "
                            "dynamic_shapes=({0: torch.export.Dim('batch')},) to time other batch sizes")
        return mf
    module = load_torchscript_file(p, "for weights-only files use a recipe with model.weights")
    if override is None:
        raise WorkbenchError(f"{p}: TorchScript files do not record their input shape; pass --shape, e.g. 3,32,32")
    return ModelFile(p, "torchscript", override, "input", None, module)


# ------------------------------------------------------------------------------------- data


def load_labelled_data(path: str | Path, input_shape: Sequence[int]) -> Any:
    """A labelled dataset for scoring a model file: every sample, no augmentation.

    Uses the regular data sources (npz, csv, image folder), split and then joined again, so
    the same decoding and normalisation apply as in a recipe run. Images are resized to the
    model's input size.
    """
    from torch.utils.data import ConcatDataset

    from workbench.core.data import load_dataset
    from workbench.recipe import DataSection

    p = Path(path).expanduser()
    if p.is_dir():
        source = "image_folder"
    elif p.suffix.lower() in (".npz", ".csv"):
        source = p.suffix.lower()[1:]
    else:
        raise WorkbenchError(f"{p}: --data takes an .npz file, a .csv file or an image folder (<class>/<image>)")
    size = int(input_shape[-1]) if len(input_shape) == 3 else 32
    section = DataSection(source=source, path=str(p), augment=False, eval_fraction=0.5, image_size=size, cache=False)
    bundle = load_dataset(section)
    if tuple(bundle.input_shape) != tuple(input_shape):
        raise WorkbenchError(f"{p}: data gives samples of shape {list(bundle.input_shape)} but the model takes "
                             f"{list(input_shape)}")
    return ConcatDataset([bundle.train, bundle.val, bundle.eval]), bundle


def evaluate_file(runtime: Any, dataset: Any, batch_size: int = 256, cancel: CancelToken | None = None) -> float:
    """Top-1 accuracy of any ``Runtime`` on a labelled dataset."""
    from torch.utils.data import DataLoader

    from workbench.core.measure.runtimes import evaluate_runtime

    return evaluate_runtime(runtime, DataLoader(dataset, batch_size=batch_size, shuffle=False), cancel)


def evaluate_feed(runtime: Any, feed: dict[str, np.ndarray], labels: np.ndarray, batch_size: int = 64,
                  cancel: CancelToken | None = None) -> float:
    """Top-1 accuracy of a runtime that takes named inputs (token models) on labelled token arrays."""
    n = len(labels)
    correct = 0
    for start in range(0, n, batch_size):
        if cancel is not None:
            cancel.raise_if_cancelled()
        out = np.asarray(runtime.predict(slice_feed(feed, start, start + batch_size)))
        pred = out.reshape(len(out), -1).argmax(1)
        correct += int((pred == labels[start:start + batch_size].reshape(-1)).sum())
    return correct / max(1, n)


# ------------------------------------------------------------------------------------- bench


def _runtime_names(text: str | Sequence[str], kind: str) -> list[str]:
    names = [r.strip() for r in (text.split(",") if isinstance(text, str) else text) if r.strip()]
    if not names:
        return ["onnxruntime"] if kind == "onnx" else ["eager"]
    bad = [n for n in names if n not in RUNTIMES]
    if bad:
        raise WorkbenchError(f"--runtimes {','.join(bad)}: expected a comma list of {', '.join(RUNTIMES)}")
    if kind == "onnx" and any(n != "onnxruntime" for n in names):
        raise WorkbenchError("an ONNX file runs under onnxruntime only; use --runtimes onnxruntime")
    return list(dict.fromkeys(names))


def bench_model_file(path: str | Path, batch_sizes: Sequence[int], *, runtimes: str | Sequence[str] = "",
                     input_shape: str | Sequence[int] | None = "", iters: int = 50, warmup: int = 5,
                     threads: int = 0, optimization: str = "all", data: str | Path | None = None,
                     max_time_s: float = 10.0, seq_len: int = DEFAULT_SEQ_LEN, reporter: Reporter | None = None,
                     cancel: CancelToken | None = None) -> dict[str, Any]:
    """Time a model file under each runtime at each batch size (and score it when ``data`` is given).

    Returns ``{"model", "kind", "input_shape", "runtimes": {name: [LatencyStats.to_dict(), ...]},
    "accuracy": {name: float} (with data), "providers": {...}, "notes": [...]}``. An ONNX file runs
    under onnxruntime; torch files run under eager/compile, and under onnxruntime through a
    temporary ONNX export. A token model (several named inputs, ids/masks) is fed synthetic inputs
    that follow their meaning (``"synthesised"`` says what), symbolic axes set to ``seq_len``; its
    ``data`` is an .npz of named arrays (labels optional). ``max_time_s`` caps each timed phase;
    ``"notes"`` says when it cut ``iters``.
    """
    from workbench.core.measure.runtimes import OrtRuntime, TorchRuntime, bench_runtime, export_onnx_for_bench

    if max_time_s <= 0:
        raise WorkbenchError(f"--max-time {max_time_s:g}: give a positive number of seconds per timed phase")
    mf = open_model_file(path, input_shape, seq_len)
    names = _runtime_names(runtimes, mf.kind)
    sizes = list(batch_sizes)
    if mf.fixed_batch is not None:
        sizes = [mf.fixed_batch]
    if iters < 3:
        raise WorkbenchError(f"--iters {iters}: time at least 3 calls")
    token_data: tuple[dict[str, np.ndarray], np.ndarray] | None = None
    dataset = None
    notes = list(mf.notes)
    if mf.token_model:
        mf.check_length(mf.seq_len)
    if data and mf.token_model:
        feed, labels, data_notes = load_token_npz(data, mf.inputs, "--data")
        mf.check_length(next(iter(feed.values())).shape[-1], f"--data {data}: a sequence length of")
        notes += data_notes
        if labels is None:
            raise WorkbenchError(f"--data {data}: scoring needs an array named 'labels' next to the token arrays")
        token_data = (feed, labels)
    elif data:
        dataset = load_labelled_data(data, mf.input_shape)[0]
    result: dict[str, Any] = {"model": str(mf.path), "kind": mf.kind, "input_shape": list(mf.input_shape),
                              "batch_sizes": sizes, "runtimes": {}, "providers": {}, "notes": notes,
                              "synthesised": mf.describe_inputs(), "max_time_s": max_time_s}
    if mf.token_model:
        result["inputs"] = {s.name: {"dtype": s.dtype, "shape": list(s.sample_shape(mf.seq_len))} for s in mf.inputs}
    if dataset is not None or token_data is not None:
        result["accuracy"] = {}
    from workbench.core.measure.paired import ContentionMonitor, choose_threads

    choice = choose_threads(threads)  # auto (0): never more threads than free cores
    threads = choice.threads
    result["threads"] = choice.to_dict()
    monitor = ContentionMonitor()
    with tempfile.TemporaryDirectory(prefix="wb-bench-") as tmp, monitor:
        for name in names:
            if cancel is not None:
                cancel.raise_if_cancelled()
            if name == "onnxruntime":
                onnx_path = mf.path
                if mf.kind != "onnx":
                    assert mf.module is not None
                    onnx_path = export_onnx_for_bench(mf.module, mf.input_shape, Path(tmp) / "model.onnx")
                rt: Any = OrtRuntime(onnx_path, threads=threads, optimization=optimization)
                result["providers"][name] = rt.provider
            else:
                assert mf.module is not None
                rt = TorchRuntime(mf.module, compile=name == "compile")
                result["providers"][name] = rt.description
            try:
                feeds = mf.synthetic if mf.token_model else None
                stats = bench_runtime(rt, mf.input_shape, sizes, warmup=warmup, iters=iters, max_time_s=max_time_s,
                                      threads=threads, cancel=cancel, reporter=reporter, stage=f"bench:{name}",
                                      feeds=feeds)
                result["runtimes"][name] = [s.to_dict() for s in stats]
                for st in stats:
                    if st.iters < iters:
                        result["notes"].append(
                            f"{name} batch {st.batch_size}: --iters {iters} cut to {st.iters} timed calls by "
                            f"--max-time {max_time_s:g} s; raise --max-time to time them all")
                if dataset is not None:
                    result["accuracy"][name] = evaluate_file(rt, dataset, cancel=cancel)
                elif token_data is not None:
                    result["accuracy"][name] = evaluate_feed(rt, *token_data, cancel=cancel)
            finally:
                rt.close()
    assert monitor.load is not None
    result["contention"] = monitor.load.to_dict()
    if monitor.load.contended:
        result["notes"].append(f"other processes used {monitor.load.others_cores:.2f} CPU cores while timing: "
                               "these figures are slower and noisier than on a quiet machine")
    return result


def synthetic_inputs(shape: Sequence[int], batch: int, seed: int = 0) -> np.ndarray:
    """Standard-normal inputs (what timing uses when no data is given)."""
    return np.random.default_rng(seed).standard_normal((batch, *shape), dtype=np.float32)
