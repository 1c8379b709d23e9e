"""The one CPU capability probe: torch's own answers first, /proc/cpuinfo as the fallback, else unknown."""

from __future__ import annotations

import pytest
import torch

from workbench.core import hardware
from workbench.core.hardware import cpu_capabilities, probe_cpu

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu sse avx2 avx512f avx512_vnni
"""


def test_probe_agrees_with_torch_where_torch_knows() -> None:
    caps = cpu_capabilities()
    if hasattr(torch.cpu, "_is_avx512_bf16_supported"):
        assert caps.source == "torch"
        assert caps.avx512_bf16 == torch.cpu._is_avx512_bf16_supported()
        assert caps.vnni == torch.cpu._is_vnni_supported()
    assert caps.native_bf16 == bool(caps.avx512_bf16 or caps.amx_tile)
    assert cpu_capabilities() is caps  # probed once per process


def test_cpuinfo_fallback_reads_flags_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_cpuinfo_text", lambda: CPUINFO)
    caps = probe_cpu(use_torch=False)
    assert caps.source == "/proc/cpuinfo" and caps.model == "Example CPU 9000"
    assert caps.avx2 and caps.avx512 and caps.vnni and caps.int8_dot_product
    assert caps.avx512_bf16 is False and not caps.native_bf16 and caps.amx_tile is False


def test_nothing_to_read_means_unknown_not_a_guess(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_cpuinfo_text", lambda: "")
    caps = probe_cpu(use_torch=False)
    assert caps.source == "unknown"
    assert caps.vnni is None and caps.int8_dot_product is None and caps.avx512_bf16 is None
    assert caps.to_dict()["int8_dot_product"] is None
