"""Mixed precision and memory-format choices, resolved once from the recipe into a plan.

bf16 autocast runs on CPUs with AVX-512 BF16/AMX and on Ampere+ GPUs; fp16 autocast is CUDA-only
and needs loss scaling (GradScaler) so small gradients do not flush to zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.recipe import PrecisionSection

_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PrecisionPlan:
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    use_scaler: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"

    @property
    def label(self) -> str:
        parts = [{None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]]
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append("compile")
        return "+".join(parts)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device (non-blocking when pinned) in the planned memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def resolve_precision(section: PrecisionSection) -> PrecisionPlan:
    cuda = torch.cuda.is_available()
    if section.device == "cuda" and not cuda:
        raise WorkbenchError("precision.device = 'cuda': no CUDA device on this machine; use 'auto' or 'cpu'")
    device = torch.device("cuda" if section.device == "cuda" or (section.device == "auto" and cuda) else "cpu")
    dtype = _DTYPES[section.autocast]
    if dtype is torch.float16 and device.type != "cuda":
        raise WorkbenchError("precision.autocast = 'fp16' needs CUDA; on this CPU use 'bf16'")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = section.tf32
        torch.backends.cudnn.allow_tf32 = section.tf32
    scaler = section.grad_scaler == "on" or (section.grad_scaler == "auto" and dtype is torch.float16)
    return PrecisionPlan(device, dtype, scaler, section.channels_last, section.compile, section.compile_mode)


def prepare_module(module: nn.Module, plan: PrecisionPlan) -> nn.Module:
    """Put the model on the device in the planned memory format; compile last (it wraps the module)."""
    module = module.to(plan.device)
    if plan.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if plan.compile:
        return torch.compile(module, mode=plan.compile_mode)
    return module


def make_scaler(plan: PrecisionPlan) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(plan.device.type, enabled=plan.use_scaler)


def bf16_supported_on_cpu() -> bool:
    """True when this CPU has native bf16 math (AVX-512 BF16 or AMX); otherwise bf16 is emulated and slow."""
    from workbench.core.hardware import native_bf16_cpu

    return native_bf16_cpu()


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Switch to eval for measurement and restore the caller's mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def unwrap(module: nn.Module) -> nn.Module:
    """The original module behind torch.compile's wrapper (for saving and pruning)."""
    return getattr(module, "_orig_mod", module)
