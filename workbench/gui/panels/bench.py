"""Benchmark panel: batch sizes, runtimes and timing budget of the measurement (the [bench] section)."""

from __future__ import annotations

from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel, parse_int_list


def _runtimes(text: str) -> list[str]:
    return [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]


@register_panel(order=70)
class BenchPanel(RecipePanel):
    section_name = "bench"
    title = "Benchmark"
    description = ("How inference latency and throughput are measured: warm-up first, then timed iterations, "
                   "reporting the median and spread. Longer timing gives tighter numbers.")

    def build(self) -> None:
        self.add_check("enabled", "Time inference", "Measure latency and throughput after training. Off: only "
                       "accuracy is measured (faster, but no speed numbers).")
        self.add_parsed_text("batch_sizes", "Batch sizes", "Batch sizes to time, e.g. 1, 64. Batch 1 shows "
                             "latency for one request; large batches show peak throughput.",
                             lambda t: parse_int_list(t, "batch sizes"), lambda v: ", ".join(str(b) for b in v),
                             placeholder="1, 64")
        self.add_parsed_text("runtimes", "Runtimes", "Comma list of eager, compile, onnxruntime: each is timed "
                             "side by side so you see which wins on this machine (compile and ONNX export take "
                             "extra time up front).", _runtimes, lambda v: ", ".join(v), placeholder="eager")
        self.add_spin("warmup", "Warm-up iterations", "Untimed iterations first, so caches, allocators and "
                      "lazy initialisation do not pollute the numbers.")
        self.add_spin("iters", "Timed iterations", "Iterations timed per batch size. More gives a tighter "
                      "median and confidence interval but takes longer.")
        self.add_double("min_time_s", "Min time", "Keep timing at least this long per case (0 = just the "
                        "iterations). Helps with noisy machines.", decimals=1, step=0.5, suffix=" s")
        self.add_double("max_time_s", "Max time", "Stop timing one case after this long, whatever the "
                        "iteration count, so a slow model cannot stall the run.", decimals=1, step=1.0,
                        suffix=" s")
        self.add_spin("threads", "Threads", "Intra-op threads for torch and ONNX Runtime. Fixing it makes "
                      "results comparable across runs. 0 = auto: one thread per core that other programs leave "
                      "free (a busy core makes threads wait for each other); the run records what it used.",
                      special="0 (auto)")
        self.add_check("paired", "Paired before/after timing", "After optimization stages, time the baseline "
                       "and each stage's result in interleaved rounds (A B A B …) in one process. The speedup is "
                       "the median per-round ratio with a 95 % confidence interval, split by cause (runtime "
                       "switch vs technique), and flagged when other programs competed for the CPU.")
        self.add_spin("rounds", "Paired rounds", "Interleaved rounds of the paired timing (at least 5). More "
                      "rounds give a tighter confidence interval but take longer.")
        self.add_double("telemetry_hz", "Telemetry rate", "How often CPU/RAM/GPU use is sampled for the "
                        "dashboard. Higher is finer-grained but records more points.", decimals=1, step=1.0,
                        suffix=" Hz")
