"""AMP benchmark: bf16 autocast vs fp32 training throughput on CPU, for the CNN and Transformer zoo models.

Both precisions train the same model on the same synthetic batches in one process, interleaved
round by round, so machine noise hits both alike. Each round times ``--steps`` steady-state
optimizer steps after ``--warmup`` untimed ones; the table reports the median samples/s over rounds.

    .venv/bin/python benchmarks/bench_amp.py [--models small_cnn,resnet,transformer] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from workbench.engine.models import build_zoo_model
from workbench.engine.precision import bf16_supported_on_cpu
from workbench.engine.telemetry import device_description


def time_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None,
                  steps: int, warmup: int) -> float:
    """Samples/s of ``steps`` optimizer steps after ``warmup`` untimed ones."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if dtype is None:
            loss = loss_fn(model(x), y)
        else:
            with torch.autocast("cpu", dtype=dtype):
                loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * x.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="small_cnn,resnet,transformer")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    torch.manual_seed(0)
    print(f"machine: {device_description()}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"native bf16: {bf16_supported_on_cpu()}; python {platform.python_version()}\n")
    print("| model | params | fp32 samples/s | bf16 samples/s | bf16 / fp32 |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        model = build_zoo_model(name, num_classes=10, input_shape=(3, 32, 32))
        params = sum(p.numel() for p in model.parameters())
        x = torch.randn(args.batch_size, 3, 32, 32)
        y = torch.randint(0, 10, (args.batch_size,))
        fp32, bf16 = [], []
        for _ in range(args.rounds):  # interleaved: both precisions see the same machine state
            fp32.append(time_training(model, x, y, None, args.steps, args.warmup))
            bf16.append(time_training(model, x, y, torch.bfloat16, args.steps, args.warmup))
        a, b = statistics.median(fp32), statistics.median(bf16)
        print(f"| {name} | {params:,} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
