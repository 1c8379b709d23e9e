"""One predict interface over torch eager, torch.compile and onnxruntime, so they compare side by side.

``predict`` is numpy in, numpy out: it is what parity checks and evaluation use. For timing,
runtimes also offer ``timed_call(batch)``, which stages the input on the device once and returns
a zero-argument callable plus the sync function to use, so a benchmark measures the model and not
host-to-device copies; ``bench_runtime`` falls back to ``predict`` for runtimes without it.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from workbench.core.events import CancelToken, Reporter
from workbench.core.measure.timing import (
    LatencyStats,
    MemoryProbe,
    cuda_sync_for,
    fixed_threads,
    stats_metrics,
    time_callable,
)
from workbench.errors import ModelLoadError, WorkbenchError

__all__ = [
    "OrtRuntime",
    "evaluate_runtime",
    "Runtime",
    "TorchRuntime",
    "available_providers",
    "bench_runtime",
    "export_onnx_for_bench",
]

TimedCall = tuple[Callable[[], Any], Callable[[], None] | None]


@runtime_checkable
class Runtime(Protocol):
    """Anything that turns a batch into logits. ``name`` is the recipe's label (eager/compile/onnxruntime)."""

    name: str

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray: ...

    def close(self) -> None: ...


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def first_tensor(out: Any) -> torch.Tensor:
    """Models may return a tensor, a tuple/list, or a dict; the first tensor is the logits."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)) and out:
        return first_tensor(out[0])
    raise WorkbenchError(
        f"model returned {type(out).__name__}; expected a tensor (or a tuple/dict of tensors)"
    )


# --------------------------------------------------------------------------------------------- torch


def _compile_prerequisites(device: torch.device) -> None:
    """Fail early with a fixable reason instead of a 200-line inductor traceback on the first call."""
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl")):
        raise WorkbenchError(
            "torch.compile on CPU needs a C++ compiler (g++ or clang++) on PATH; install one or use the eager runtime"
        )
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise WorkbenchError(
            "torch.compile on CUDA needs the 'triton' package, which is not installed; use the eager runtime"
        )


def compile_available(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """Whether ``torch.compile`` can work on ``device`` here, and why not (for searches that skip it)."""
    try:
        _compile_prerequisites(torch.device(device))
    except WorkbenchError as exc:
        return False, str(exc)
    return True, ""


class TorchRuntime:
    """A PyTorch module in eval mode, optionally autocast, channels_last and ``torch.compile``-d.

    The module is put in eval mode and moved to ``device`` (and channels_last) in place. With
    ``compile=True`` the first call for each new input shape compiles (seconds to a minute on
    CPU); benchmark warm-up absorbs it (``min_warmup``), and a compile failure becomes a one-line
    ``WorkbenchError``.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        device: str | torch.device = "cpu",
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
    ) -> None:
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last
        self.compiled = compile
        self.name = "compile" if compile else "eager"
        self.min_warmup = 3 if compile else 0
        self.module = module.eval().to(self.device)
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self._fn: Callable[..., Any] = self.module
        self._compile_checked = not compile
        if compile:
            _compile_prerequisites(self.device)
            try:
                self._fn = torch.compile(self.module, mode=compile_mode)
            except Exception as exc:  # e.g. unsupported Python version
                raise WorkbenchError(f"torch.compile failed: {_first_line(exc)}") from exc

    @property
    def description(self) -> str:
        """Human label for tables: runtime, device and precision options."""
        parts = [self.name, self.device.type]
        if self.autocast_dtype is not None:
            parts.append(str(self.autocast_dtype).removeprefix("torch."))
        if self.channels_last:
            parts.append("channels_last")
        return " ".join(parts)

    def _to_input(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(x).to(self.device, non_blocking=False)
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _forward(self, t: torch.Tensor) -> torch.Tensor:
        amp = (
            torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        with torch.inference_mode(), amp:
            if self._compile_checked:
                return first_tensor(self._fn(t))
            try:
                out = first_tensor(self._fn(t))
            except WorkbenchError:
                raise
            except Exception as exc:  # dynamo/inductor errors surface on the first call
                raise WorkbenchError(f"torch.compile failed: {_first_line(exc)}") from exc
            self._compile_checked = True
            return out

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        out = self._forward(self._to_input(x))
        return out.detach().float().cpu().numpy()

    def timed_call(self, batch: np.ndarray) -> TimedCall:
        """Stage ``batch`` on the device once; the callable runs only the model (no copies)."""
        t = self._to_input(batch)
        return (lambda: self._forward(t)), cuda_sync_for(self.device)

    def close(self) -> None:
        self._fn = self.module  # drop the compiled wrapper (and its graphs)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------- onnxruntime

_PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_IGNORED_PROVIDERS = {"AzureExecutionProvider"}
_ORT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def available_providers() -> list[str]:
    """onnxruntime execution providers usable for inference here (Azure is a remote-call EP: skipped)."""
    import onnxruntime as ort

    return [p for p in ort.get_available_providers() if p not in _IGNORED_PROVIDERS]


def _default_providers() -> list[str]:
    avail = available_providers()
    chosen = [p for p in _PREFERRED_PROVIDERS if p in avail]
    return [*chosen, "CPUExecutionProvider"]


class OrtRuntime:
    """An onnxruntime InferenceSession. Providers default to TensorRT/CUDA when present, CPU always last.

    ``threads`` sets intra-op threads (0 = onnxruntime's default, all physical cores);
    ``optimization`` is one of disable/basic/extended/all; ``spinning`` lets idle pool threads
    spin-wait (onnxruntime's default, off here: it steals cores from whatever runs next in this
    process). Input names, shapes and dtypes are read from the model: a single-input model takes
    one array, a model with several named inputs (a transformer's ids and mask) a dict of them.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        optimization: str = "all",
        spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: ONNX file not found")
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if optimization not in levels:
            raise WorkbenchError(f"optimization = {optimization!r}: expected one of {', '.join(levels)}")
        if providers is None:
            wanted = _default_providers()
        else:
            avail = available_providers()
            missing = [p for p in providers if p not in avail]
            if missing:
                raise WorkbenchError(
                    f"onnxruntime provider(s) {', '.join(missing)} not available here; available: {', '.join(avail)}"
                )
            wanted = list(dict.fromkeys([*providers, "CPUExecutionProvider"]))
        so = ort.SessionOptions()
        so.graph_optimization_level = levels[optimization]
        if threads > 0:
            so.intra_op_num_threads = threads
        if not spinning:
            # Idle pool threads sleep instead of spin-waiting. A spinning pool keeps cores busy after
            # each call, and the next model timed in this process (torch, or another session) loses
            # them: measured here, it slowed torch eager at batch 1 by 45 % in paired rounds and made
            # INT8 blocks bimodal (4.5 / 8 ms). Without spinning onnxruntime is at most ~15 % slower
            # on its own, so paired speedups of onnxruntime models err on the low side.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3  # errors only: provider fallback is reported through `providers`
        try:
            self._session: Any = ort.InferenceSession(str(path), sess_options=so, providers=wanted)
        except Exception as exc:
            raise ModelLoadError(f"{path}: onnxruntime cannot load it: {_first_line(exc)}") from exc
        self.path = path
        self.threads = threads
        self.providers: list[str] = list(self._session.get_providers())
        inputs = self._session.get_inputs()
        if not inputs:
            raise ModelLoadError(f"{path}: the model has no inputs")
        for i in inputs:
            if i.type not in _ORT_DTYPES:
                raise ModelLoadError(f"{path}: input {i.name!r} has unsupported type {i.type}; Workbench feeds "
                                     f"{', '.join(t[7:-1] for t in _ORT_DTYPES)}")
        #: every input, in graph order: name -> (declared shape, numpy dtype)
        self.inputs: dict[str, tuple[list[int | str | None], type[np.generic]]] = {
            i.name: (list(i.shape), _ORT_DTYPES[i.type]) for i in inputs}
        from workbench.core.models.token_inputs import STACKED_INPUTS_KEY

        meta = self._session.get_modelmeta().custom_metadata_map or {}
        #: the order of a stacked token batch [batch, inputs, seq] (models exported from a token-data run)
        self.stacked_inputs: list[str] = [n for n in meta.get(STACKED_INPUTS_KEY, "").split(",") if n]
        inp = inputs[0]
        self.input_name: str = inp.name
        self.input_shape: list[int | str | None] = list(inp.shape)
        self.input_dtype: type[np.generic] = _ORT_DTYPES[inp.type]
        self.output_names: list[str] = [o.name for o in self._session.get_outputs()]

    @property
    def provider(self) -> str:
        """The provider that runs the graph (onnxruntime may silently fall back to CPU)."""
        return self.providers[0]

    @property
    def on_gpu(self) -> bool:
        return self.provider in _PREFERRED_PROVIDERS

    @property
    def description(self) -> str:
        return f"onnxruntime {self.provider.removesuffix('ExecutionProvider')}"

    def _as_input(self, x: np.ndarray | torch.Tensor, name: str | None = None) -> np.ndarray:
        name = name or self.input_name
        expected, dtype = self.inputs[name]
        a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        a = np.ascontiguousarray(a, dtype=dtype)
        bad = len(a.shape) != len(expected) or any(
            isinstance(e, int) and e != s for e, s in zip(expected, a.shape, strict=False)
        )
        if bad:
            hint = "; re-export with a dynamic batch axis" if expected and isinstance(expected[0], int) else ""
            raise WorkbenchError(
                f"{self.path.name}: input {name!r} expects shape {expected}, got {list(a.shape)}{hint}"
            )
        return a

    def feed(self, x: Any) -> dict[str, np.ndarray]:
        """The session feed for ``x``: one array (single-input models) or a dict of named arrays.

        Each array is cast to its input's own dtype (int64 ids stay int64)."""
        if isinstance(x, dict):
            missing = [n for n in self.inputs if n not in x]
            extra = [n for n in x if n not in self.inputs]
            if missing or extra:
                raise WorkbenchError(f"{self.path.name}: inputs given {sorted(x)}, the model takes "
                                     f"{list(self.inputs)}")
            return {n: self._as_input(x[n], n) for n in self.inputs}
        if self.stacked_inputs and np.ndim(x) >= 2 and np.shape(x)[1] == len(self.stacked_inputs):
            a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            return {n: self._as_input(a[:, self.stacked_inputs.index(n)], n) for n in self.inputs}
        if len(self.inputs) != 1:
            raise WorkbenchError(f"{self.path.name}: the model has {len(self.inputs)} inputs "
                                 f"({', '.join(self.inputs)}); feed a dict of named arrays")
        return {self.input_name: self._as_input(x)}

    def predict(self, x: Any) -> np.ndarray:
        if self._session is None:
            raise WorkbenchError("onnxruntime session is closed")
        return np.asarray(self._session.run(self.output_names[:1], self.feed(x))[0])

    def timed_call(self, batch: Any) -> TimedCall:
        """On CUDA/TensorRT bind input and output on the GPU (IOBinding) so copies are not timed."""
        feed = self.feed(batch)
        sess = self._session
        if self.on_gpu:
            import onnxruntime as ort

            binding = sess.io_binding()
            for name, a in feed.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0))
            for name in self.output_names:
                binding.bind_output(name, "cuda")
            return (lambda: sess.run_with_iobinding(binding)), None
        names = self.output_names
        return (lambda: sess.run(names, feed)), None

    def close(self) -> None:
        self._session = None


# --------------------------------------------------------------------------------------- benchmarking


def bench_runtime(
    runtime: Runtime,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int],
    *,
    warmup: int = 5,
    iters: int = 50,
    min_time_s: float = 0.0,
    max_time_s: float = 10.0,
    threads: int = 0,
    cancel: CancelToken | None = None,
    reporter: Reporter | None = None,
    stage: str = "benchmark",
    seed: int = 0,
    feeds: Callable[[int], Any] | None = None,
) -> list[LatencyStats]:
    """Latency of any ``Runtime`` on random ``(batch, *input_shape)`` float input, per batch size.

    Uses ``runtime.timed_call`` when available (input staged on the device, model only), else
    ``predict`` (includes host<->device copies). ``threads`` pins torch's thread count; an
    ``OrtRuntime`` takes its own ``threads`` at construction. Runtimes that compile on first call
    get at least ``runtime.min_warmup`` warm-up calls per batch size. ``feeds(batch_size)`` makes
    the inputs instead (a dict of named arrays for multi-input models, ``core.measure.feeds``).
    """
    rng = np.random.default_rng(seed)
    warmup = max(warmup, int(getattr(runtime, "min_warmup", 0)))
    device = getattr(runtime, "device", torch.device("cpu"))
    results: list[LatencyStats] = []
    with fixed_threads(threads):
        for i, b in enumerate(batch_sizes):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if reporter is not None:
                reporter.progress(i, len(batch_sizes), f"{runtime.name}: timing batch {b}")
            batch = feeds(b) if feeds is not None else rng.standard_normal((b, *input_shape), dtype=np.float32)
            timed = getattr(runtime, "timed_call", None)
            if callable(timed):
                fn, sync = timed(batch)
            else:
                fn, sync = (lambda batch=batch: runtime.predict(batch)), None
            probe = MemoryProbe(device)
            probe.start()
            stats = time_callable(
                fn,
                batch_size=b,
                warmup=warmup,
                iters=iters,
                min_time_s=min_time_s,
                max_time_s=max_time_s,
                sync=sync,
                cancel=cancel,
            )
            stats.peak_mem_bytes = probe.peak_bytes()
            results.append(stats)
            if reporter is not None:
                reporter.metrics(stage, i, stats_metrics(stats))
        if reporter is not None:
            reporter.progress(len(batch_sizes), len(batch_sizes), f"{runtime.name}: done")
    return results


# ---------------------------------------------------------------------------------------------- export

_EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf caps a single file at 2 GiB


def export_onnx_for_bench(
    module: torch.nn.Module,
    input_shape: Sequence[int],
    path: str | Path,
    opset: int = 18,
) -> Path:
    """Export a single-input classifier to ONNX with the dynamo exporter and a dynamic batch axis.

    Input is named ``input``, output ``logits``. The example batch is 2, not 1: torch.export
    specialises dimensions of size 0/1, so a size-1 example would pin the batch axis. Weights are
    stored inline unless the model is too large for one protobuf file. The module's training
    flag is restored afterwards. Returns the written path.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    token_export = getattr(module, "export_onnx", None)
    if callable(token_export):  # a model with named token inputs (models.token_inputs.TokenInputs)
        return Path(token_export(out, int(input_shape[-1]), opset))
    was_training = module.training
    module.eval()
    # The exporter logs one warning per missing torchvision op on every export: noise for a CLI.
    reg_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    old_level = reg_log.level
    reg_log.setLevel(logging.ERROR)
    try:
        params = list(module.parameters())
        device = params[0].device if params else torch.device("cpu")
        size = sum(p.numel() * p.element_size() for p in params)
        example = torch.randn((2, *input_shape), device=device)
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=["input"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            external_data=size > _EXTERNAL_DATA_BYTES,
            verbose=False,
        )
    except WorkbenchError:
        raise
    except Exception as exc:
        raise WorkbenchError(f"ONNX export of {type(module).__name__} failed: {_first_line(exc)}") from exc
    finally:
        reg_log.setLevel(old_level)
        module.train(was_training)
    return out


@torch.no_grad()
def evaluate_runtime(runtime: Any, loader: Any, cancel: CancelToken | None = None) -> float:
    correct = total = 0
    for x, y in loader:
        if cancel is not None:
            cancel.raise_if_cancelled()
        logits = runtime.predict(x.numpy())
        correct += int((torch.from_numpy(logits).argmax(dim=1) == y).sum())
        total += int(y.shape[0])
    return correct / max(1, total)
