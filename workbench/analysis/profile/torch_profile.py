"""Per-layer time of a torch module, from torch.profiler with one labelled range per leaf module.

``with_modules`` only labels TorchScript calls, so forward hooks open a ``record_function`` range
named after each leaf module; every aten op inside it counts toward that module, and ops called
outside any leaf (functional calls in ``forward``) land in one "(other)" row. MACs and parameters
come from ``core.models.summarize`` (the project's one counting convention), scaled to the batch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from workbench.analysis.profile.model import OTHER, LayerProfile, Profile
from workbench.core.models import summarize
from workbench.core.models.summary import layer_modules
from workbench.errors import WorkbenchError

__all__ = ["OTHER", "profile_module"]

_PREFIX = "workbench.layer::"
_FORWARD = "workbench.forward"


#: Modules timed as one row although they have children: their forward does not call them as modules.


@contextlib.contextmanager
def _native_stderr_silenced(enabled: bool) -> Iterator[None]:
    """Point fd 2 at /dev/null for a moment: kineto prints "profiler_start/stop" lines from C++."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _shape(out: Any) -> list[int] | str:
    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, tuple | list):
        tensors = [o for o in out if isinstance(o, torch.Tensor)]
        if len(tensors) == 1:
            return list(tensors[0].shape)
    return type(out).__name__


def _nbytes(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, tuple | list):
        return sum(_nbytes(v) for v in x)
    return 0


def _precision(m: nn.Module) -> str:
    """The precision a leaf computes in: int8 for quantized modules, else its weights' dtype."""
    kind = type(m).__module__ + "." + type(m).__name__
    if ".quantized." in kind or "Quantized" in type(m).__name__:
        return "int8"
    dtypes = {p.dtype for p in m.parameters(recurse=False)}
    if torch.bfloat16 in dtypes:
        return "bf16"
    if torch.float16 in dtypes:
        return "fp16"
    return "float"


def profile_module(module: nn.Module, input_shape: tuple[int, ...], batch: int = 1, *, iters: int = 0,
                   min_time_s: float = 0.3, source: str = "module", quiet: bool = False) -> Profile:
    """Profile ``module`` (eval mode, no grad, CPU) on a zero input of ``[batch, *input_shape]``.

    ``iters`` = 0 repeats the forward until ``min_time_s`` has passed (3 to 200 calls). Uses the
    caller's torch thread count (``torch.set_num_threads`` is process-wide, so it is not changed here).
    ``quiet`` hides the profiler's native start/stop lines on stderr (fd 2 is process-wide: CLI only).
    """
    if isinstance(module, torch.jit.ScriptModule):
        raise WorkbenchError("per-layer profiles need a plain nn.Module; TorchScript modules do not take forward "
                             "hooks (profile the ONNX export instead)")
    summary = summarize(module, input_shape)
    per_sample = {row.name: row for row in summary.layers}
    leaves = layer_modules(module)  # the layers the model summary lists, so both name them alike
    ref = next((p for p in module.parameters() if p.is_floating_point()), None)
    x = torch.zeros((batch, *input_shape), dtype=ref.dtype if ref is not None else torch.float32,
                    device=ref.device if ref is not None else "cpu")

    shapes: dict[str, list[int] | str] = {}
    act_bytes: dict[str, int] = {}
    open_ranges: list[Any] = []
    handles = []
    for name, m in leaves:
        def pre(_m: nn.Module, args: Any, name: str = name) -> None:
            rf = torch.autograd.profiler.record_function(_PREFIX + name)
            rf.__enter__()
            open_ranges.append(rf)
            act_bytes[name] = _nbytes(args)

        def post(_m: nn.Module, _args: Any, out: Any, name: str = name) -> None:
            shapes[name] = _shape(out)
            act_bytes[name] = act_bytes.get(name, 0) + _nbytes(out)
            if open_ranges:
                open_ranges.pop().__exit__(None, None, None)

        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))

    was_training = module.training
    module.eval()
    calls = 0
    try:
        with torch.no_grad():
            for _ in range(2):  # warm-up: allocator, kernel selection
                module(x)
            from torch.profiler import ProfilerActivity, profile

            prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
            with _native_stderr_silenced(quiet):
                prof.start()
            try:
                t0 = time.perf_counter()
                while (calls < iters) if iters > 0 else (calls < 3 or (time.perf_counter() - t0 < min_time_s
                                                                        and calls < 200)):
                    with torch.autograd.profiler.record_function(_FORWARD):
                        module(x)
                    calls += 1
            finally:
                with _native_stderr_silenced(quiet):
                    prof.stop()
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()

    layer_us: dict[str, float] = defaultdict(float)
    layer_calls: dict[str, int] = defaultdict(int)
    kernels: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    total_us = 0.0
    for evt in prof.events():
        if evt.name == _FORWARD:
            total_us += evt.cpu_time_total
        elif evt.name.startswith(_PREFIX):
            name = evt.name[len(_PREFIX):]
            layer_us[name] += evt.cpu_time_total
            layer_calls[name] += 1
            stack = list(evt.cpu_children)
            while stack:  # the innermost ops are the kernels that ran (aten::conv2d -> mkldnn_convolution)
                child = stack.pop()
                kernels[name][child.name] += child.self_cpu_time_total
                stack.extend(child.cpu_children)
    total_ms = total_us / 1000 / max(calls, 1)
    rows: list[LayerProfile] = []
    not_run: list[str] = []
    for name, m in leaves:
        if name not in layer_us:
            not_run.append(name)
            continue
        ms = layer_us[name] / 1000 / calls
        row = per_sample.get(name)
        params = sum(p.numel() for p in m.parameters())
        weight_bytes = sum(p.numel() * p.element_size() for p in m.parameters()) + \
            sum(b.numel() * b.element_size() for b in m.buffers())
        top = sorted(kernels[name].items(), key=lambda kv: kv[1], reverse=True)
        rows.append(LayerProfile(
            name=name, layer=name, op=type(m).__name__, time_ms=ms, share=ms / total_ms if total_ms else 0.0,
            macs=row.macs * batch if row is not None and row.macs is not None else None, params=params,
            output_shape=shapes.get(name), precision=_precision(m), kernels=[k for k, _ in top[:3]],
            weight_bytes=weight_bytes, activation_bytes=act_bytes.get(name),
            calls=max(1, layer_calls[name] // calls)))
    other_ms = total_ms - sum(r.time_ms for r in rows)
    if other_ms > 0.01 * total_ms:
        rows.append(LayerProfile(name=OTHER, layer=OTHER, op="(ops outside leaf modules)", time_ms=other_ms,
                                 share=other_ms / total_ms if total_ms else 0.0))
    device = x.device.type
    return Profile(source=source, kind="torch", runtime=f"torch eager {device}", batch=batch, total_ms=total_ms,
                   threads=torch.get_num_threads(), iters=calls, input_shape=list(input_shape), layers=rows,
                   not_executed=not_run,
                   notes=["times include torch.profiler overhead (tens of µs per op); read shares, not absolutes"])
