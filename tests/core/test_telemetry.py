"""Telemetry sampler: fake NVML for GPU keys, graceful CPU-only mode, clean stop, sampling rate."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from workbench.core.events import RecordingReporter
from workbench.core.telemetry import TelemetrySampler, device_description, paused_for_timing

CPU_KEYS = {"cpu_percent", "proc_cpu_percent", "ram_used_bytes", "ram_total_bytes", "proc_rss_bytes"}


class FakeNVMLError(Exception):
    pass


def fake_nvml(count: int = 1, init_error: bool = False, no_power: bool = False) -> SimpleNamespace:
    calls = {"init": 0, "shutdown": 0}

    def init() -> None:
        calls["init"] += 1
        if init_error:
            raise FakeNVMLError("Driver Not Loaded")

    def power(h: int) -> int:
        if no_power:
            raise FakeNVMLError("Not Supported")
        return 123_000 + h  # mW

    return SimpleNamespace(
        calls=calls,
        NVMLError=FakeNVMLError,
        NVML_CLOCK_SM=1,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1),
        nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"Fake GPU X" if h == 0 else "Fake GPU X",
        nvmlSystemGetDriverVersion=lambda: "555.42",
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=77 + h, memory=10),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=3 * 2**30, total=16 * 2**30, free=13 * 2**30),
        nvmlDeviceGetPowerUsage=power,
        nvmlDeviceGetClockInfo=lambda h, kind: 1410 if kind == 1 else 0,
    )


def _collect(sampler_kwargs: dict[str, Any], seconds: float = 0.25) -> tuple[TelemetrySampler, list[dict]]:
    got: list[dict[str, float]] = []
    s = TelemetrySampler(got.append, hz=40, **sampler_kwargs)
    with s:
        time.sleep(seconds)
    return s, got


def test_fake_nvml_gives_gpu_keys() -> None:
    nvml = fake_nvml(count=2)
    s, got = _collect({"nvml_module": nvml})
    assert got, "no samples"
    sample = got[-1]
    assert set(sample) >= CPU_KEYS
    assert sample["gpu0_util_percent"] == 77 and sample["gpu1_util_percent"] == 78
    assert sample["gpu0_mem_used_bytes"] == 3 * 2**30
    assert sample["gpu0_mem_total_bytes"] == 16 * 2**30
    assert sample["gpu0_power_w"] == pytest.approx(123.0)
    assert sample["gpu0_sm_clock_mhz"] == 1410
    assert s.gpu_count == 2 and "Fake GPU X" in s.gpu_status
    assert nvml.calls["shutdown"] == nvml.calls["init"] == 1  # stop() released NVML


def test_unsupported_counter_is_skipped_not_fatal() -> None:
    _, got = _collect({"nvml_module": fake_nvml(no_power=True)})
    assert "gpu0_power_w" not in got[-1] and "gpu0_util_percent" in got[-1]


@pytest.mark.parametrize(
    "nvml, why",
    [(fake_nvml(init_error=True), "Driver Not Loaded"), (fake_nvml(count=0), None), (None, "disabled")],
)
def test_cpu_only_modes_report_once(nvml: Any, why: str | None) -> None:
    rep = RecordingReporter()
    got: list[dict[str, float]] = []
    s = TelemetrySampler(got.append, hz=40, reporter=rep, nvml_module=nvml)
    for _ in range(2):  # restart: still reported only once
        s.start()
        time.sleep(0.1)
        s.stop()
    assert got and all(set(g) == CPU_KEYS for g in got)
    assert s.gpu_status.startswith("No NVIDIA GPU detected: CPU mode")
    if why:
        assert why in s.gpu_status
    logs = rep.of("log")
    assert len(logs) == 1 and logs[0][0] == s.gpu_status


def test_missing_pynvml_is_cpu_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench.core.telemetry as tel

    monkeypatch.setattr(tel, "load_nvml", lambda: None)
    s, got = _collect({})
    assert "pynvml not installed" in s.gpu_status and got


def test_stop_joins_quickly_and_is_idempotent() -> None:
    s = TelemetrySampler(hz=0.5, nvml_module=None)  # long period: stop must interrupt the wait
    s.start()
    assert s.running
    t0 = time.perf_counter()
    s.stop()
    assert time.perf_counter() - t0 < 1.0
    assert not s.running
    s.stop()
    assert not any(t.name == "workbench-telemetry" for t in threading.enumerate())


def test_rate_roughly_respected() -> None:
    _, got = _collect({"nvml_module": None}, seconds=1.0)
    assert 12 <= len(got) <= 45  # 40 Hz for 1 s, generous for a loaded 2-core CI box


def test_samplers_skip_their_ticks_while_a_timing_runs_and_resume_after() -> None:
    got: list[dict[str, float]] = []
    with TelemetrySampler(got.append, hz=50, nvml_module=None):
        time.sleep(0.15)
        before = len(got)
        with paused_for_timing(), paused_for_timing():  # nested timings: paused until the outer ends
            time.sleep(0.05)  # a tick already in flight may still land
            during = len(got)
            time.sleep(0.3)
            assert len(got) - during <= 1
        time.sleep(0.2)
    assert before >= 3 and len(got) - during >= 4


def test_callback_error_does_not_kill_thread() -> None:
    rep = RecordingReporter()
    n = {"calls": 0}

    def boom(_s: dict[str, float]) -> None:
        n["calls"] += 1
        raise RuntimeError("plot gone")

    with TelemetrySampler(boom, hz=50, reporter=rep, nvml_module=None):
        time.sleep(0.2)
    assert n["calls"] >= 3
    warnings = [m for m, lvl in rep.of("log") if lvl == "warning"]
    assert len(warnings) == 1 and "plot gone" in warnings[0]


def test_device_description() -> None:
    assert device_description(fake_nvml(count=1)) == "Fake GPU X (driver 555.42)"
    assert device_description(fake_nvml(count=2)) == "2x Fake GPU X (driver 555.42)"
    cpu = device_description(None)
    assert "core" in cpu
    assert device_description(fake_nvml(init_error=True)) == cpu
