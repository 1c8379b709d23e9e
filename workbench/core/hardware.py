"""One probe of what this CPU (and GPU) can do fast, used by every module that needs to know.

torch knows the CPU's instruction sets (``torch.cpu._is_avx512_bf16_supported`` and friends, read
through cpuinfo by ATen itself), so those answers come from torch; ``/proc/cpuinfo`` is the fallback
for a torch without them, and on a system without either the answer is "unknown" (``None``), never a
guess. The probe runs once per process.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["CpuCapabilities", "cpu_capabilities", "cpu_model", "native_bf16_cpu"]

_TORCH_PROBES = {
    "avx2": "_is_avx2_supported",
    "avx512": "_is_avx512_supported",
    "avx512_bf16": "_is_avx512_bf16_supported",
    "vnni": "_is_vnni_supported",
    "amx_tile": "_is_amx_tile_supported",
    "amx_fp16": "_is_amx_fp16_supported",
}
# /proc/cpuinfo flag names for the same features (the fallback).
_FLAG_NAMES = {
    "avx2": {"avx2"},
    "avx512": {"avx512f"},
    "avx512_bf16": {"avx512_bf16", "amx_bf16"},
    "vnni": {"avx512_vnni", "avx_vnni", "amx_int8", "avx512vnni"},
    "amx_tile": {"amx_tile"},
    "amx_fp16": {"amx_fp16"},
}


@dataclass(frozen=True)
class CpuCapabilities:
    """Instruction sets that decide whether a precision is fast here. ``None`` = could not tell."""

    model: str
    avx2: bool | None
    avx512: bool | None
    avx512_bf16: bool | None
    vnni: bool | None
    amx_tile: bool | None
    amx_fp16: bool | None
    source: str  # "torch", "/proc/cpuinfo" or "unknown"

    @property
    def native_bf16(self) -> bool:
        """bf16 math in hardware (AVX-512 BF16 or AMX); elsewhere torch emulates it, slower than fp32."""
        return bool(self.avx512_bf16 or self.amx_tile)

    @property
    def int8_dot_product(self) -> bool | None:
        """An INT8 dot-product instruction (VNNI or AMX): without one, INT8 GEMMs are often no faster than fp32."""
        if self.vnni is None and self.amx_tile is None:
            return None
        return bool(self.vnni or self.amx_tile)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "native_bf16": self.native_bf16, "int8_dot_product": self.int8_dot_product}


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's marketing name (e.g. "AMD EPYC 9B14"), for every figure that is recorded."""
    for line in _cpuinfo_text().splitlines():
        if line.lower().startswith("model name") and ":" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _flags() -> set[str]:
    for line in _cpuinfo_text().splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def probe_cpu(use_torch: bool = True) -> CpuCapabilities:
    """Ask torch first, then /proc/cpuinfo; features neither can answer stay ``None``."""
    values: dict[str, bool | None] = dict.fromkeys(_TORCH_PROBES)
    source = "unknown"
    if use_torch:
        for key, name in _TORCH_PROBES.items():
            fn = getattr(torch.cpu, name, None)
            if callable(fn):
                try:
                    values[key] = bool(fn())
                    source = "torch"
                except Exception:  # a probe that fails on this build: fall back below
                    values[key] = None
    missing = [k for k, v in values.items() if v is None]
    if missing:
        flags = _flags()
        if flags:
            for key in missing:
                values[key] = bool(flags & _FLAG_NAMES[key])
            source = "torch" if source == "torch" else "/proc/cpuinfo"
    return CpuCapabilities(model=cpu_model(), source=source, **values)


@functools.cache
def cpu_capabilities() -> CpuCapabilities:
    """The probe's answer for this process (cached: the CPU does not change while we run)."""
    return probe_cpu()


def native_bf16_cpu() -> bool:
    return cpu_capabilities().native_bf16
