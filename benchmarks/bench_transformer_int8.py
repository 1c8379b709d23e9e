"""Transformer INT8 and length-aware batching: a BERT-mini-sized encoder with int64 token inputs.

A sentence-transformer-shaped encoder (6 layers, hidden 384, 12 heads, vocabulary 30522, random
weights from a fixed seed) with three int64 inputs ``input_ids``, ``attention_mask`` and
``token_type_ids`` is exported to ONNX the standard way (dynamic batch and sequence axes) and
quantized with ``workbench``'s dynamic INT8 (MatMul and the embedding Gather, per-channel weights).

1. **INT8 at batch 1**: torch eager fp32, onnxruntime fp32, onnxruntime dynamic INT8 with onnxruntime's
   transformer graph optimizer first (an option) and without it (the default), timed paired
   in one process (``core.measure.paired.time_paired``) at sequence length 128, on inputs synthesised
   the way ``workbench bench`` makes them (ids inside the vocabulary, all-ones mask, zero token
   types). Reported: the paired speed ratios against torch eager fp32 with their 95 % CI, the output
   cosine similarity (min and mean, per sample, mean-pooled over real tokens) of INT8 vs torch fp32 on
   a realistic token mix, and the file size ratio.
2. **Length-aware batching**: a realistic length mix (most sentences 8–32 tokens, some up to 128;
   fixed seed), processed in batches of 32 padded to a fixed 128 (torch eager fp32: the baseline) vs
   sorted by length and padded to each batch's longest member (the loader of ``batching.length_aware``), in
   fp32 and with INT8. Each configuration processes the whole set; the configurations alternate
   (A B C, C B A, ...) in one process and the throughput ratio per repetition is reported as the
   median with its range. The pooled embeddings of each sentence are checked to match the fixed-128
   ones (the mask hides the padding).

    .venv/bin/python benchmarks/bench_transformer_int8.py            # full (minutes)
    .venv/bin/python benchmarks/bench_transformer_int8.py --quick    # smoke: tiny encoder, few rounds

Goals (issue #14): dynamic INT8 >= 1.8x torch eager fp32 at batch 1 with cosine >= 0.99 and a file
<= 30 % of fp32; length-aware batching >= 4x the fixed-128 fp32 throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("WORKBENCH_HOME", str(Path(tempfile.gettempdir()) / "workbench-bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    AlternatedRatio,
    alternating_order,
    contention_line,
    fmt_ratio_ci,
    markdown_table,
    paired_lines,
    print_header,
    ratio_entry,
    threads_line,
)
from torch import nn  # noqa: E402

from workbench.core.data import build_loader  # noqa: E402
from workbench.core.data.tokens import TokenDataset  # noqa: E402
from workbench.core.measure.feeds import onnx_input_specs, synthetic_feed  # noqa: E402
from workbench.core.measure.paired import ContentionMonitor, Contestant, choose_threads, time_paired  # noqa: E402
from workbench.core.measure.runtimes import OrtRuntime  # noqa: E402
from workbench.core.measure.timing import fixed_threads  # noqa: E402
from workbench.core.models.loaders import onnx_file_size, read_onnx  # noqa: E402
from workbench.core.onnx_export import cosine_per_sample  # noqa: E402
from workbench.techniques.quantize.methods import optimize_transformer_onnx, quantize_onnx  # noqa: E402

NAMES = ("input_ids", "attention_mask", "token_type_ids")


# ------------------------------------------------------------------------------------------- the model


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ff1 = nn.Linear(hidden, ff)
        self.ff2 = nn.Linear(ff, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = self.norm1(x + self.out(y.transpose(1, 2).reshape(b, s, h)))
        return self.norm2(x + self.ff2(nn.functional.gelu(self.ff1(x))))


class Encoder(nn.Module):
    """BERT-style: word + position + token-type embeddings, post-norm layers, last hidden state out."""

    def __init__(self, vocab: int, hidden: int, layers: int, heads: int, max_len: int = 512) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(max_len, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, 4 * hidden) for _ in range(layers))
        for m in self.modules():  # BERT's initialisation: outputs in a realistic range
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.norm(self.word(input_ids) + self.position(pos) + self.token_type(token_type_ids))
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -1e4
        for layer in self.layers:
            x = layer(x, bias)
        return x


def export(model: nn.Module, path: Path, vocab: int) -> Path:
    """The standard export: three int64 inputs, dynamic batch and sequence axes."""
    ids = torch.randint(1, vocab, (2, 16))
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path), opset_version=17,
                          dynamo=False, input_names=list(NAMES), output_names=["last_hidden_state"],
                          dynamic_axes={**dict.fromkeys(NAMES, axes), "last_hidden_state": axes})
    return path


class TorchTokens:
    """A paired-timing contestant: torch eager on a dict of named int64 arrays."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval()

    def predict(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return self.module(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()

    def timed_call(self, feed: dict[str, np.ndarray]) -> tuple[Any, None]:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}
        module = self.module

        def call() -> Any:
            with torch.inference_mode():
                return module(**tensors)

        return call, None


# -------------------------------------------------------------------------------------------- the data


def realistic_tokens(n: int, vocab: int, max_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Right-padded token arrays with a sentence-like length mix: ~80 % 8-32 tokens, ~15 % 33-64, rest longer."""
    rng = np.random.default_rng(seed)
    kind = rng.random(n)
    lengths = np.where(kind < 0.8, rng.integers(8, 33, n),
                       np.where(kind < 0.95, rng.integers(33, 65, n), rng.integers(65, max_len + 1, n)))
    lengths = np.minimum(lengths, max_len)
    ids = np.zeros((n, max_len), np.int64)
    mask = np.zeros((n, max_len), np.int64)
    for i, k in enumerate(lengths):
        ids[i, :k] = rng.integers(min(1000, vocab // 2), vocab, k)
        ids[i, 0], ids[i, k - 1] = 101, 102  # [CLS] ... [SEP]
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def technique_batches(tokens: dict[str, np.ndarray], batch: int) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The batches ``batching.length_aware = true`` makes (the run's loader): (indices, named arrays)."""
    from workbench.recipe import LoaderSection

    names = list(NAMES)
    ds = TokenDataset(torch.from_numpy(np.stack([tokens[n] for n in names], axis=1)), np.zeros(len(tokens[names[0]])),
                      names)
    loader = build_loader(ds, batch, LoaderSection(), train=False, length_aware=True)
    return [(np.asarray(idx), {n: x[:, i].numpy() for i, n in enumerate(names)})
            for idx, (x, _) in zip(loader.batch_sampler, loader, strict=True)]


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the real tokens: the sentence embedding."""
    m = mask[..., None].astype(np.float64)
    return (hidden * m).sum(1) / np.maximum(m.sum(1), 1.0)


# ------------------------------------------------------------------------------------------ the parts


def int8_part(args: argparse.Namespace, model: nn.Module, fp32: Path, int8: Path, int8_opt: Path, choice: Any,
              tokens: dict[str, np.ndarray]) -> list[str]:
    torch_rt = TorchTokens(model)
    ort_fp32 = OrtRuntime(fp32, threads=choice.threads)
    ort_int8 = OrtRuntime(int8, threads=choice.threads)
    ort_opt = OrtRuntime(int8_opt, threads=choice.threads)
    specs = onnx_input_specs(read_onnx(fp32))
    try:
        timing = time_paired([Contestant("baseline", "torch eager fp32", torch_rt),
                              Contestant("runtime", "onnxruntime fp32", ort_fp32),
                              Contestant("optimizer", "onnxruntime dynamic INT8 + transformer optimizer", ort_opt),
                              Contestant("quantize", "onnxruntime dynamic INT8", ort_int8)],
                             (args.seq_len,), [1], threads=choice, rounds=args.rounds, iters=args.iters,
                             max_time_s=args.max_time,
                             make_batch=lambda b: synthetic_feed(specs, b, args.seq_len, seed=b))
        cos, cos_opt = [], []
        for start in range(0, len(tokens["input_ids"]), 16):
            feed = {k: v[start:start + 16] for k, v in tokens.items()}
            ref = pooled(torch_rt.predict(feed), feed["attention_mask"])
            cos.append(cosine_per_sample(ref, pooled(ort_int8.predict(feed), feed["attention_mask"])))
            cos_opt.append(cosine_per_sample(ref, pooled(ort_opt.predict(feed), feed["attention_mask"])))
        c, co = np.concatenate(cos), np.concatenate(cos_opt)
    finally:
        ort_fp32.close()
        ort_int8.close()
        ort_opt.close()
    sizes = onnx_file_size(fp32), onnx_file_size(int8), onnx_file_size(int8_opt)
    e_ort, e_opt, e_int8 = (ratio_entry(timing, 1, 0, i) for i in (1, 2, 3))
    rows = [["onnxruntime fp32", fmt_ratio_ci(e_ort), "—", f"{sizes[0] / 1e6:.1f} MB (100 %)"],
            ["onnxruntime dynamic INT8 + transformer optimizer (option)", fmt_ratio_ci(e_opt),
             f"min {co.min():.4f}, mean {co.mean():.4f}", f"{sizes[2] / 1e6:.1f} MB ({sizes[2] / sizes[0] * 100:.0f} %)"],
            ["onnxruntime dynamic INT8 (default)", fmt_ratio_ci(e_int8), f"min {c.min():.4f}, mean {c.mean():.4f}",
             f"{sizes[1] / 1e6:.1f} MB ({sizes[1] / sizes[0] * 100:.0f} %)"]]
    goal = e_int8["ratio"] >= 1.8 and c.min() >= 0.99 and sizes[1] <= 0.3 * sizes[0]
    return ["### Dynamic INT8 vs torch eager fp32, batch 1, sequence 128", "",
            markdown_table(["Pipeline", "Speed vs torch eager fp32 (paired)",
                            f"Cosine vs torch fp32 ({len(c)} sentences, pooled)", "File"], rows),
            "", *paired_lines(timing, "torch and onnxruntime"),
            f"Goal (>= 1.8x, cosine >= 0.99, file <= 30 %): {'met' if goal else 'NOT met'}", ""]


def length_part(args: argparse.Namespace, model: nn.Module, int8: Path, choice: Any,
                tokens: dict[str, np.ndarray]) -> list[str]:
    torch_rt = TorchTokens(model)
    ort_int8 = OrtRuntime(int8, threads=choice.threads)
    n = len(tokens["input_ids"])
    bs = args.batch
    fixed = [(np.arange(s, min(s + bs, n)), {k: v[s:s + bs] for k, v in tokens.items()}) for s in range(0, n, bs)]
    aware = technique_batches(tokens, bs)
    configs = [("fixed 128, torch eager fp32", torch_rt, fixed), ("length-aware, torch eager fp32", torch_rt, aware),
               ("length-aware, onnxruntime dynamic INT8", ort_int8, aware)]
    # correctness: each sentence's pooled embedding is the same however it was padded
    ref = np.zeros((n, model.norm.normalized_shape[0]))
    got = np.zeros_like(ref)
    for idx, feed in fixed:
        ref[idx] = pooled(torch_rt.predict(feed), feed["attention_mask"])
    for idx, feed in aware:
        got[idx] = pooled(torch_rt.predict(feed), feed["attention_mask"])
    same = cosine_per_sample(ref, got)
    for _, rt, batches in configs:  # warm-up: every shape once
        for _, feed in batches:
            rt.predict(feed)
    times: list[list[float]] = [[] for _ in configs]
    loads: list[list[Any]] = [[] for _ in configs]
    for _, i in alternating_order(len(configs), args.repetitions):
        _, rt, batches = configs[i]
        with ContentionMonitor() as mon:
            t0 = time.perf_counter()
            for _, feed in batches:
                rt.predict(feed)
            times[i].append(time.perf_counter() - t0)
        assert mon.load is not None
        loads[i].append(mon.load)
    ort_int8.close()
    ratios = [AlternatedRatio([t0 / t for t0, t in zip(times[0], times[i], strict=True)], loads[0] + loads[i])
              for i in range(len(configs))]
    padded = sum(f["input_ids"].size for _, f in aware) / sum(f["input_ids"].size for _, f in fixed)
    rows = [[name, f"{n / float(np.median(times[i])):,.0f}", "1.00x" if i == 0 else ratios[i].cell()]
            for i, (name, _, _) in enumerate(configs)]
    lengths = tokens["attention_mask"].sum(1)
    problems = [f"{configs[i][0]}: {p}" for i in (1, 2) for p in ratios[i].problems()]
    return [f"### Length-aware batching: {n} sentences, batch {bs}", "",
            f"Lengths: median {int(np.median(lengths))}, 90th percentile {int(np.percentile(lengths, 90))}, max "
            f"{int(lengths.max())} tokens; length-aware batches hold {padded * 100:.0f} % of the fixed-128 token slots  ",
            f"Pooled embeddings, length-aware vs fixed 128 (torch fp32): cosine min {same.min():.6f}  ", "",
            markdown_table(["Configuration", "Sentences/s (median)", "Throughput vs fixed 128 fp32"], rows), "",
            "Alternated in one process, not paired round by round: each configuration processes the whole set "
            "once per repetition, in the order A B C, C B A, ...; each ratio is one per repetition (against the "
            "fixed-128 pass of the same repetition), reported as the median with its range.  ",
            threads_line(choice, "torch and onnxruntime") + "  ",
            *(contention_line(ld, f"({configs[i][0]}, repetition {r + 1})") + "  "
              for i in range(len(configs)) for r, ld in enumerate(loads[i]) if ld.others_cores > 0.25),
            f"Problems: {'; '.join(problems) if problems else 'none'}  ",
            f"Goal (length-aware >= 4x fixed-128 fp32): fp32 {ratios[1].median:.2f}x, INT8 {ratios[2].median:.2f}x: "
            f"{'met' if max(ratios[1].median, ratios[2].median) >= 4 else 'NOT met'}", ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: a tiny encoder, few sentences, short rounds")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = one per free core)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32, help="batch size of the length-aware part")
    p.add_argument("--sentences", type=int, default=512)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--max-time", type=float, default=30.0, help="paired timing budget per batch size (s)")
    p.add_argument("--repetitions", type=int, default=3)
    args = p.parse_args(argv)
    vocab, hidden, layers, heads = 30522, 384, 6, 12
    if args.quick:
        vocab, hidden, layers, heads = 1000, 64, 2, 4
        args.sentences, args.rounds, args.iters, args.max_time, args.batch = 64, 3, 6, 2.0, 16
    print_header("Transformer INT8 and length-aware batching" + (" (QUICK smoke run: not a result)"
                                                               if args.quick else ""))
    print(f"Model: BERT-style encoder, {layers} layers, hidden {hidden}, {heads} heads, vocabulary {vocab}, "
          "random weights (seed 0); inputs input_ids, attention_mask, token_type_ids (int64, dynamic axes)  ")
    torch.manual_seed(0)
    model = Encoder(vocab, hidden, layers, heads).eval()
    tokens = realistic_tokens(args.sentences, vocab, args.seq_len)
    choice = choose_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="wb-bench-int8-") as tmp, fixed_threads(choice.threads):
        fp32 = export(model, Path(tmp) / "encoder.onnx", vocab)
        out = quantize_onnx(fp32, Path(tmp) / "encoder.int8.onnx", method="dynamic")
        fused = optimize_transformer_onnx(fp32, Path(tmp) / "encoder.opt.onnx")
        out_opt = quantize_onnx(Path(tmp) / "encoder.opt.onnx", Path(tmp) / "encoder.opt.int8.onnx", method="dynamic")
        print(f"Quantized: {out.format}, per-channel weights, embeddings (Gather) included; the option: onnxruntime's "
              f"transformer optimizer first (fused {', '.join(fused) or 'nothing'})  \n")
        lines = int8_part(args, model, fp32, out.path, out_opt.path, choice, tokens)
        lines += length_part(args, model, out.path, choice, tokens)
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
