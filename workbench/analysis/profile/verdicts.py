""""Why isn't it faster?": plain-language findings from a profile, each with what to try.

Each check is a pure function of a profile plus the facts it needs (CPU features, the thread
choice, GPU clock readings), so tests feed synthetic inputs; ``collect_verdicts`` gathers the
facts of this machine and runs them all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.analysis.profile.model import COMPUTE_OPS, QDQ_OPS, Profile
from workbench.core.hardware import CpuCapabilities

__all__ = ["Verdict", "collect_verdicts", "cpu_features_verdict", "float_layers_verdict", "gpu_clock_verdict",
           "gpu_clocks", "memory_bound_verdict", "qdq_verdict", "threads_verdict"]

#: Below this many MACs per byte moved (weights + activations) a layer waits on memory, not math.
MEMORY_BOUND_MACS_PER_BYTE = 8.0
#: A layer (or group) must take at least this share of the time to be worth a verdict.
MIN_SHARE = 0.05


@dataclass
class Verdict:
    """One finding: what is wrong, how much time it costs, and what to try."""

    code: str
    message: str
    advice: str
    share: float | None = None
    layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _names(layers: list[str], k: int = 4) -> str:
    more = f" (+{len(layers) - k} more)" if len(layers) > k else ""
    return ", ".join(layers[:k]) + more


def float_layers_verdict(profile: Profile, min_share: float = 0.02) -> Verdict | None:
    """Compute layers a partly quantized model still runs in float, when they take real time."""
    if "int8" not in profile.precisions:
        return None
    rows = [r for r in profile.layers if r.op in COMPUTE_OPS and r.precision in ("float", "fp16", "bf16")
            and r.share >= min_share]
    if not rows:
        return None
    share = sum(r.share for r in rows)
    names = list(dict.fromkeys(r.layer for r in rows))
    return Verdict("float_layers", f"{len(names)} compute layer(s) stayed float after quantization: {_names(names)} "
                   f"({share:.0%} of the time)",
                   "they were excluded (quantize.exclude), kept float by the accuracy budget "
                   "(quantize.max_accuracy_drop), or their op has no INT8 kernel; loosen the budget, quantize "
                   "them with per_channel = true, or accept the float time", share, names)


def qdq_verdict(profile: Profile, min_share: float = MIN_SHARE) -> Verdict | None:
    """QuantizeLinear/DequantizeLinear nodes that onnxruntime did not fuse into integer kernels."""
    last = profile.layers[-1] if profile.layers else None
    # the model's input must be quantized and its output dequantized once: those two are not the problem
    # DynamicQuantizeLinear is dynamic quantization's own step, not a QDQ pair left unfused
    rows = [r for r in profile.layers if r.op in QDQ_OPS - {"DynamicQuantizeLinear"} and r.layer != "(input)"
            and not (r is last and r.op == "DequantizeLinear")]
    share = sum(r.share for r in rows)
    if not rows or share < min_share:
        return None
    return Verdict("unfused_qdq", f"{len(rows)} Quantize/DequantizeLinear node(s) did not fuse and take "
                   f"{share:.0%} of the time", "float ops between quantized layers force a DQ->float->Q round "
                   "trip: set quantize.preprocess = true (shape inference + graph optimization before "
                   "quantizing), keep activations between INT8 layers quantizable (Relu, MaxPool, Add), or "
                   "quantize dynamically", share, list(dict.fromkeys(r.layer for r in rows)))


def memory_bound_verdict(profile: Profile, min_share: float = MIN_SHARE,
                         limit: float = MEMORY_BOUND_MACS_PER_BYTE) -> Verdict | None:
    """Layers at a small batch whose MACs per byte moved are too few to keep the cores busy."""
    if profile.batch > 4:
        return None
    rows = []
    for r in profile.layers:
        moved = (r.weight_bytes or 0) + (r.activation_bytes or 0)
        if r.macs and moved and r.share >= min_share and r.macs / moved < limit:
            rows.append(r)
    if not rows:
        return None
    share = sum(r.share for r in rows)
    names = [r.layer for r in rows]
    return Verdict("memory_bound", f"{len(rows)} layer(s) are memory-bound at batch {profile.batch}: "
                   f"{_names(names)} ({share:.0%} of the time, under {limit:g} MACs per byte moved)",
                   "at batch 1 these layers wait on memory, so fewer FLOPs barely help: time a larger batch "
                   "(bench.batch_sizes), shrink the bytes (INT8 weights move 4x fewer), or prune the layer's "
                   "channels", share, names)


def cpu_features_verdict(profile: Profile, caps: CpuCapabilities) -> Verdict | None:
    """A precision this CPU has no fast instructions for (INT8 without VNNI/AMX, bf16/fp16 emulated)."""
    if profile.runtime.endswith("cuda") or "CUDA" in profile.runtime or "TensorRT" in profile.runtime:
        return None
    precisions = profile.precisions | {r.precision for r in profile.layers if r.executed and r.precision != "other"}
    if "int8" in precisions and caps.int8_dot_product is False:
        return Verdict("cpu_no_int8", f"{caps.model} has no INT8 dot-product instructions (AVX-512 VNNI, AVX-VNNI "
                       "or AMX)", "INT8 GEMMs here run on generic SIMD and are often no faster than fp32: keep "
                       "the float model on this machine, or deploy INT8 on a CPU with VNNI/AMX (check "
                       "`lscpu | grep -i vnni`)")
    if "bf16" in precisions and not caps.native_bf16:
        return Verdict("cpu_no_bf16", f"{caps.model} has no native bf16 (AVX-512 BF16 or AMX)",
                       "bf16 is emulated here and slower than fp32: use precision.dtype = 'fp32' on this CPU")
    if "fp16" in precisions and caps.amx_fp16 is False:
        return Verdict("cpu_no_fp16", f"{caps.model} has no fp16 compute (AMX-FP16)",
                       "fp16 on this CPU is converted back to fp32 per op: keep fp32 on CPU, use fp16 on a GPU")
    return None


def threads_verdict(threads: int, cores: int, others_cores: float) -> Verdict | None:
    """More intra-op threads than cores other processes leave free: thread barriers turn into waits."""
    free = max(cores - others_cores, 0.0)
    if threads <= 0 or threads <= free + 0.25:
        return None
    return Verdict("threads", f"the profile used {threads} thread(s) but only {free:.1f} of {cores} core(s) were "
                   f"free (other processes used {others_cores:.1f})",
                   "a busy core stalls every intra-op barrier: use bench.threads = 0 (auto: one per free core), "
                   "or measure on a quiet machine")


def gpu_clock_verdict(clocks: list[dict[str, Any]]) -> Verdict | None:
    """GPUs whose SM clock is held down (power, thermal, or a forced slowdown) while work ran."""
    slow = [c for c in clocks if c.get("reasons")]
    if not slow:
        return None
    desc = "; ".join(f"GPU {c['index']} at {c.get('sm_mhz', '?')} of {c.get('max_sm_mhz', '?')} MHz "
                     f"({', '.join(c['reasons'])})" for c in slow)
    return Verdict("gpu_throttled", f"GPU clocks throttled: {desc}",
                   "check cooling and power limits (nvidia-smi -q -d PERFORMANCE); figures measured while "
                   "throttled understate the GPU")


#: NVML throttle-reason bits (pynvml's nvmlClocksThrottleReason* values) that mean the GPU is slowed down (idle and app-clock settings are not).
_THROTTLE_BITS = {
    0x4: "power cap", 0x8: "hardware slowdown", 0x20: "thermal (software)", 0x40: "thermal (hardware)",
    0x80: "power brake", 0x10: "sync boost", 0x200: "board limit", 0x400: "reliability",
}


def gpu_clocks(nvml: Any = None) -> list[dict[str, Any]]:
    """Each NVIDIA GPU's SM clock and active throttle reasons; [] without NVML or a GPU (never raises)."""
    if nvml is None:
        from workbench.core.telemetry import load_nvml

        nvml = load_nvml()
    if nvml is None:
        return []
    try:
        nvml.nvmlInit()
    except Exception:
        return []
    out = []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            bits = int(nvml.nvmlDeviceGetCurrentClocksThrottleReasons(h))
            out.append({"index": i, "sm_mhz": nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
                        "max_sm_mhz": nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM),
                        "reasons": [name for bit, name in _THROTTLE_BITS.items() if bits & bit]})
    except Exception:
        return out
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return out


def collect_verdicts(profile: Profile, *, caps: CpuCapabilities | None = None, cores: int | None = None,
                     others_cores: float | None = None,
                     clocks: Callable[[], list[dict[str, Any]]] | None = None) -> list[Verdict]:
    """Every verdict that applies to ``profile`` on this machine (facts probed unless given)."""
    from workbench.core.hardware import cpu_capabilities
    from workbench.core.measure.paired import measure_others_load, usable_cores

    if cores is None:
        cores = usable_cores()
    if others_cores is None:
        others_cores = measure_others_load().others_cores
    found = [
        float_layers_verdict(profile),
        qdq_verdict(profile),
        memory_bound_verdict(profile),
        cpu_features_verdict(profile, caps or cpu_capabilities()),
        threads_verdict(profile.threads, cores, others_cores),
        gpu_clock_verdict((clocks or gpu_clocks)()),
    ]
    return [v for v in found if v is not None]
