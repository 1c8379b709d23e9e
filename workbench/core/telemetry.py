"""Hardware telemetry: a daemon thread sampling CPU/RAM (psutil) and NVIDIA GPUs (NVML) at a fixed rate.

It runs beside training and benchmarks so a curve of utilisation, memory, power and clocks shows
whether the device was busy, starved or throttling. Without NVML or a GPU it degrades to CPU/RAM
and says so once; it never fails a run. The NVML module is injectable so tests use a fake.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from workbench.core.events import Reporter

__all__ = ["TelemetrySampler", "device_description", "load_nvml"]

_AUTO: Any = object()  # sentinel: import pynvml on demand


def load_nvml() -> Any | None:
    """The real ``pynvml`` module (package nvidia-ml-py), or None if it is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def _text(v: Any) -> str:
    """Old pynvml versions return bytes for names and versions."""
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _nvml_error(nvml: Any) -> type[BaseException]:
    err = getattr(nvml, "NVMLError", None)
    return err if isinstance(err, type) and issubclass(err, BaseException) else Exception


def _cpu_model() -> str:
    from workbench.core.hardware import cpu_model

    return cpu_model()


def device_description(nvml_module: Any = _AUTO) -> str:
    """One line naming the compute device, for status bars and reports.

    GPU name(s) and driver via NVML when a GPU is visible, else the CPU model and core counts.
    """
    nvml = load_nvml() if nvml_module is _AUTO else nvml_module
    if nvml is not None:
        err = _nvml_error(nvml)
        try:
            nvml.nvmlInit()
        except Exception:  # NVMLError without a driver, or a broken install: describe the CPU
            pass
        else:
            try:
                count = int(nvml.nvmlDeviceGetCount())
                if count > 0:
                    names = [
                        _text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i)))
                        for i in range(count)
                    ]
                    driver = _text(nvml.nvmlSystemGetDriverVersion())
                    uniq = list(dict.fromkeys(names))
                    label = f"{count}x {uniq[0]}" if len(uniq) == 1 and count > 1 else ", ".join(names)
                    return f"{label} (driver {driver})"
            except err:
                pass
            finally:
                with contextlib.suppress(Exception):
                    nvml.nvmlShutdown()
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 0
    physical = psutil.cpu_count(logical=False)
    cores = (
        f"{logical} logical cores"
        if not physical or physical == logical
        else f"{physical} cores / {logical} threads"
    )
    return f"{_cpu_model()}, {cores}"


#: Set while a timing runs in this process: samplers skip their ticks (see ``paused_for_timing``).
_TIMING = threading.Event()
_timing_depth = 0
_TIMING_LOCK = threading.Lock()


@contextlib.contextmanager
def paused_for_timing() -> Any:
    """Every sampler in this process skips its ticks while the block runs (nests; thread-safe).

    Found while re-measuring (before this pause existed): a 4 Hz sampler writing its samples to the
    runs database roughly doubled the batch-1 latency of a ResNet timed in the same process, so
    timings pause it. The gap
    shows in the telemetry plot as a flat stretch.
    """
    global _timing_depth
    with _TIMING_LOCK:
        _timing_depth += 1
        _TIMING.set()
    try:
        yield
    finally:
        with _TIMING_LOCK:
            _timing_depth -= 1
            if _timing_depth == 0:
                _TIMING.clear()


class TelemetrySampler:
    """Samples hardware counters every ``1/hz`` s on a daemon thread and hands each dict to ``on_sample``.

    Keys: ``cpu_percent``, ``proc_cpu_percent``, ``ram_used_bytes``, ``ram_total_bytes``,
    ``proc_rss_bytes`` and per GPU ``gpu{i}_util_percent``, ``gpu{i}_mem_used_bytes``,
    ``gpu{i}_mem_total_bytes``, ``gpu{i}_power_w``, ``gpu{i}_sm_clock_mhz`` (a counter a GPU does not
    support is left out). ``on_sample`` runs on the sampler thread: GUI code must hop to its own
    thread (queued signal) before touching widgets. ``nvml_module=None`` disables GPU sampling.
    """

    def __init__(
        self,
        on_sample: Callable[[dict[str, float]], None] | None = None,
        hz: float = 4.0,
        reporter: Reporter | None = None,
        nvml_module: Any = _AUTO,
    ) -> None:
        if hz <= 0:
            raise ValueError("hz must be > 0")
        self.on_sample = on_sample
        self.hz = hz
        self.reporter = reporter
        self._nvml_arg = nvml_module
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._status_reported = False
        self._callback_error_reported = False
        self._proc = psutil.Process()
        self.gpu_status = "not started"
        self.gpu_count = 0
        self.last_sample: dict[str, float] = {}
        self.samples_taken = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> TelemetrySampler:
        """Initialise NVML (if possible) and start the thread; a no-op if already running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._init_gpu()
            psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless
            self._proc.cpu_percent(interval=None)
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="workbench-telemetry", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Stop sampling and wait up to ``timeout`` s for the thread; safe to call repeatedly."""
        with self._lock:
            self._stop.set()
            t = self._thread
            if t is not None and t is not threading.current_thread():
                t.join(timeout)
            if t is not None and not t.is_alive():
                self._thread = None
            self._shutdown_gpu()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> TelemetrySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ GPU

    def _init_gpu(self) -> None:
        nvml = load_nvml() if self._nvml_arg is _AUTO else self._nvml_arg
        self._nvml, self._handles, self.gpu_count = None, [], 0
        if nvml is None:
            why = "GPU sampling disabled" if self._nvml_arg is None else "pynvml not installed"
            self._set_cpu_mode(why)
            return
        err = _nvml_error(nvml)
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError (no driver/library) or anything odd from a broken install
            self._set_cpu_mode(f"NVML unavailable: {_text(exc) or type(exc).__name__}")
            return
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except err as exc:
            self._safe_shutdown(nvml)
            self._set_cpu_mode(f"NVML error: {_text(exc) or type(exc).__name__}")
            return
        if count == 0:
            self._safe_shutdown(nvml)
            self._set_cpu_mode("")
            return
        self._nvml, self._handles, self.gpu_count = nvml, handles, count
        try:
            names = ", ".join(_text(nvml.nvmlDeviceGetName(h)) for h in handles)
        except Exception:
            names = f"{count} GPU(s)"
        self.gpu_status = f"NVIDIA GPU telemetry: {names}"

    def _set_cpu_mode(self, why: str) -> None:
        self.gpu_status = "No NVIDIA GPU detected: CPU mode" + (f" ({why})" if why else "")
        if self.reporter is not None and not self._status_reported:
            self._status_reported = True
            self.reporter.log(self.gpu_status, "info")

    @staticmethod
    def _safe_shutdown(nvml: Any) -> None:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()

    def _shutdown_gpu(self) -> None:
        # Only once the thread is gone: it may be mid-query.
        if self._nvml is not None and self._thread is None:
            self._safe_shutdown(self._nvml)
            self._nvml, self._handles = None, []

    def _sample_gpus(self, out: dict[str, float]) -> None:
        nvml = self._nvml
        if nvml is None:
            return
        err = _nvml_error(nvml)
        for i, h in enumerate(self._handles):
            p = f"gpu{i}_"
            # Each counter on its own: a GPU lacking one (e.g. power on some boards) keeps the rest.
            with contextlib.suppress(err):
                out[p + "util_percent"] = float(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            with contextlib.suppress(err):
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                out[p + "mem_used_bytes"] = float(mem.used)
                out[p + "mem_total_bytes"] = float(mem.total)
            with contextlib.suppress(err):
                out[p + "power_w"] = float(nvml.nvmlDeviceGetPowerUsage(h)) / 1000.0  # NVML reports mW
            with contextlib.suppress(err):
                out[p + "sm_clock_mhz"] = float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))

    # ------------------------------------------------------------------ sampling

    def sample(self) -> dict[str, float]:
        """Take one sample now (also usable without the thread)."""
        vm = psutil.virtual_memory()
        out: dict[str, float] = {
            "cpu_percent": float(psutil.cpu_percent(interval=None)),
            "proc_cpu_percent": float(self._proc.cpu_percent(interval=None)),
            "ram_used_bytes": float(vm.used),
            "ram_total_bytes": float(vm.total),
            "proc_rss_bytes": float(self._proc.memory_info().rss),
        }
        self._sample_gpus(out)
        return out

    def _run(self) -> None:
        period = 1.0 / self.hz
        next_t = time.monotonic()
        while not self._stop.is_set():
            if _TIMING.is_set():  # a timing runs in this process: stay out of its way
                self._stop.wait(period)
                next_t = time.monotonic()
                continue
            try:
                s = self.sample()
            except Exception as exc:  # never let telemetry kill a run
                self._report_once(f"telemetry sample failed: {exc}")
                s = {}
            if s:
                self.last_sample = s
                self.samples_taken += 1
                if self.on_sample is not None:
                    try:
                        self.on_sample(s)
                    except Exception as exc:
                        self._report_once(f"telemetry callback failed: {type(exc).__name__}: {exc}")
            next_t += period
            now = time.monotonic()
            if next_t < now:  # fell behind (slow callback): skip missed ticks, don't burst
                next_t = now + period
            self._stop.wait(next_t - now)

    def _report_once(self, message: str) -> None:
        if not self._callback_error_reported:
            self._callback_error_reported = True
            if self.reporter is not None:
                self.reporter.log(message, "warning")
