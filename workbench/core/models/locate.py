"""Run a model and, when it fails deep inside torch, say which layer was running.

Structured pruning, sensitivity analysis and teacher loading all run user models whose failures
surface as a torch traceback pointing at an operator; ``run_located`` turns them into one line that
names the layer (the module that was running, or the last one that finished).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from workbench.errors import WorkbenchError

__all__ = ["example_input", "run_located"]


def example_input(module: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    ref = next((t for t in module.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    return torch.randn((1, *input_shape), device=device)


@contextmanager
def _layer_tracker(module: nn.Module) -> Iterator[dict[str, str]]:
    """Record which named module was running (and which leaf finished last) during a forward.

    When tracing or a forward fails deep inside torch, this lets the error name the layer.
    """
    names = {m: n for n, m in module.named_modules()}
    state = {"running": "", "last_done": ""}
    stack: list[str] = []

    def pre(m: nn.Module, _args: Any) -> None:
        stack.append(names.get(m, type(m).__name__) or "<model>")
        state["running"] = stack[-1]

    def post(m: nn.Module, _args: Any, _out: Any) -> None:
        if stack:
            stack.pop()
        if not any(True for _ in m.children()):
            state["last_done"] = names.get(m, "")
        state["running"] = stack[-1] if stack else ""

    handles = [m.register_forward_pre_hook(pre) for m in names] + [m.register_forward_hook(post) for m in names]
    try:
        yield state
    finally:
        for h in handles:
            h.remove()


def _first_line(exc: BaseException) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _where(state: dict[str, str]) -> str:
    running, done = state.get("running", ""), state.get("last_done", "")
    if running and running != "<model>":
        return f"layer {running!r}"
    if done:
        return f"the code after layer {done!r} (in the model's forward)"
    return "the model's forward"


def run_located(module: nn.Module, fn: Callable[[], Any], what: str) -> Any:
    """Run ``fn`` (which calls ``module``); on failure raise a one-line WorkbenchError naming the layer."""
    with _layer_tracker(module) as state:
        try:
            return fn()
        except WorkbenchError:
            raise
        except Exception as exc:
            raise WorkbenchError(f"{what} failed at {_where(state)}: {_first_line(exc)}") from exc
