"""A tiny BERT-style encoder (random weights) with input_ids / attention_mask / token_type_ids, for tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


class TinyBertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, ff)
        self.ff2 = nn.Linear(ff, hidden)
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        att = (q @ k.transpose(-1, -2)) / (h // self.heads) ** 0.5 + bias
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, s, h)
        x = self.norm1(x + self.out(y))
        return self.norm2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))


class TinyBert(nn.Module):
    """forward(input_ids, attention_mask, token_type_ids=None) -> last hidden state [batch, seq, hidden]."""

    def __init__(self, vocab: int = 100, hidden: int = 32, layers: int = 2, heads: int = 4, max_len: int = 64,
                 num_labels: int = 0) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(max_len, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(TinyBertLayer(hidden, heads, 2 * hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, num_labels) if num_labels else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word(input_ids) + self.position(pos)
        if token_type_ids is not None:
            x = x + self.token_type(token_type_ids)
        x = self.norm(x)
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -1e4
        for layer in self.layers:
            x = layer(x, bias)
        if self.head is None:
            return x
        m = attention_mask.unsqueeze(-1).to(x.dtype)
        return self.head((x * m).sum(1) / m.sum(1).clamp(min=1.0))


def export_tiny_bert(path: Path, vocab: int = 100, seed: int = 0, **kw: int) -> Path:
    """Export ``TinyBert`` the way sentence transformers are exported: three int64 inputs, dynamic axes."""
    torch.manual_seed(seed)
    model = TinyBert(vocab=vocab, **kw).eval()
    ids = torch.randint(1, vocab, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    types = torch.zeros(2, 16, dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():  # the legacy exporter is deprecated, but it is how most models are exported
        warnings.simplefilter("ignore", DeprecationWarning)
        out_axes = {0: "batch"} if kw.get("num_labels") else axes
        torch.onnx.export(model, (ids, mask, types), str(path), opset_version=17, dynamo=False,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["logits" if kw.get("num_labels") else "last_hidden_state"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "logits" if kw.get("num_labels") else "last_hidden_state": out_axes})
    return path


def token_npz(path: Path, n: int = 24, seq: int = 16, vocab: int = 100, seed: int = 1,
              labels: bool = False) -> Path:
    """Named int64 token arrays (variable lengths padded with 0, mask marking the real tokens)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, seq), dtype=np.int64)
    mask = np.zeros((n, seq), dtype=np.int64)
    for i in range(n):
        k = int(rng.integers(4, seq + 1))
        ids[i, :k] = rng.integers(1, vocab, size=k)
        mask[i, :k] = 1
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    if labels:
        arrays["labels"] = rng.integers(0, 2, size=n)
    np.savez(path, **arrays)
    return path
