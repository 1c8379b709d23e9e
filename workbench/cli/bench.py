"""``workbench bench``: benchmark any model file on synthetic inputs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench.cli.common import (
    Command,
    int_list,
    non_negative_int,
    plain_console,
    positive_float,
    positive_int,
)


def cmd_bench(args: argparse.Namespace) -> int:
    from workbench.core.measure.model_file import bench_model_file

    result = bench_model_file(Path(args.model), args.batch_sizes, runtimes=args.runtimes, input_shape=args.shape,
                              iters=args.iters, threads=args.threads, max_time_s=args.max_time,
                              seq_len=args.seq_len, data=args.data or None)
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    from rich.table import Table

    inputs = result.get("inputs")
    shown = ", ".join(f"{n} {v['dtype']}{v['shape']}" for n, v in inputs.items()) if inputs else result["input_shape"]
    table = Table(title=f"{args.model}: input {shown}")
    for col in ("Runtime", "Batch", "p50 ms", "p95 ms", "p99 ms", "CI95 of median", "Samples/s"):
        table.add_column(col, justify="right")
    for runtime, rows in result["runtimes"].items():
        for st in rows:
            lo, hi = st["ci95_median_ms"]
            table.add_row(runtime, str(st["batch_size"]), f"{st['p50_ms']:.3f}", f"{st['p95_ms']:.3f}",
                          f"{st['p99_ms']:.3f}", f"{lo:.3f}–{hi:.3f}", f"{st['throughput']:,.0f}")
    console = plain_console()
    console.print(table)
    console.print(f"threads: {result['threads']['reason']}")
    print(result["synthesised"])
    for name, acc in (result.get("accuracy") or {}).items():
        print(f"accuracy ({name}): {acc * 100:.2f} %")
    for note in result.get("notes") or []:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 8, 64])
    p.add_argument("--runtimes", default="", help="comma list of eager,compile,onnxruntime (default: what fits)")
    p.add_argument("--shape", default="", help="input shape without batch, e.g. 3,32,32 (for symbolic dims)")
    p.add_argument("--iters", type=positive_int, default=50, help="timed calls per batch size (at least 3)")
    p.add_argument("--max-time", type=positive_float, default=10.0, metavar="SECONDS",
                   help="cap on each batch size's timed phase; the output says when it cut --iters (default 10)")
    p.add_argument("--seq-len", type=positive_int, default=128,
                   help="size of symbolic sequence axes of token models (several/integer inputs; default 128)")
    p.add_argument("--data", default="", help="score on labelled data too (token models: .npz of named arrays "
                   "+ labels)")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="intra-op threads (0 = auto: one per core other processes leave free)")
    p.add_argument("--json", action="store_true")


COMMANDS = [Command("bench", "benchmark a model file (ONNX, TorchScript, .pt2) on synthetic inputs", _configure,
                    cmd_bench)]
