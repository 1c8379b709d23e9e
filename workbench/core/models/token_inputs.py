"""PyTorch models with several named inputs (``forward(input_ids, attention_mask, ...)``) in a run.

Token data reaches the pipeline as one int64 tensor per batch, ``[batch, inputs, seq]`` (the named
arrays stacked, ``core/data/tokens.py``), so training, evaluation, summaries and timing keep their
one-tensor interface. ``TokenInputs`` wraps the user's module and calls it with the named
arguments again. Parts of the engine that synthesise inputs (timing, summaries, the model/data
check) pass float tensors of the right shape; ``TokenInputs`` turns those into inputs that follow
each input's meaning instead of casting noise to ids: ids inside the vocabulary (the largest
``nn.Embedding``), an all-ones mask, zero token types, positions ``0..seq-1``.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.errors import ModelLoadError, WorkbenchError

__all__ = ["STACKED_INPUTS_KEY", "TokenInputs", "wrap_for_tokens"]

#: ONNX metadata key: the input names of a stacked token batch ``[batch, inputs, seq]``, in order
STACKED_INPUTS_KEY = "workbench.stacked_inputs"


def _role(name: str) -> str:
    low = name.lower()
    if "mask" in low:
        return "mask"
    if "type" in low or "segment" in low:
        return "token_type"
    if "position" in low:
        return "position"
    return "ids"


class TokenInputs(nn.Module):
    """``forward(x)`` with ``x`` ``[batch, len(names), seq]`` -> ``model(**{name: x[:, i]})``."""

    def __init__(self, model: nn.Module, names: Sequence[str], vocab: int, used: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)  # the stacked arrays, in order
        self.used = list(names if used is None else used)  # those the forward takes
        self.vocab = int(vocab)

    def synthesise(self, x: torch.Tensor) -> torch.Tensor:
        """Meaningful int64 inputs of ``x``'s shape from float noise (deterministic in ``x``)."""
        out = torch.empty(x.shape, dtype=torch.int64, device=x.device)
        for i, name in enumerate(self.names):
            role = _role(name)
            if role == "mask":
                out[:, i] = 1
            elif role == "token_type":
                out[:, i] = 0
            elif role == "position":
                out[:, i] = torch.arange(x.shape[-1], device=x.device)
            else:
                out[:, i] = (x[:, i].abs() * 7919).long() % max(1, self.vocab - 1) + 1
        return out

    def example_input(self, batch: int, seq: int, seed: int = 0) -> torch.Tensor:
        """A stacked int64 batch ``[batch, inputs, seq]`` that follows each input's meaning."""
        g = torch.Generator().manual_seed(seed)
        return self.synthesise(torch.randn((batch, len(self.names), seq), generator=g))

    def export_onnx(self, path: str | Path, seq: int, opset: int = 18) -> Path:
        """ONNX with the model's own named int64 inputs and dynamic batch and sequence axes.

        The graph takes ``used`` (e.g. ``input_ids``, ``attention_mask``) by name, as transformer
        files are deployed; its metadata ``workbench.stacked_inputs`` records the order of a stacked
        ``[batch, inputs, seq]`` batch so ``OrtRuntime`` can feed this run's token batches to it.
        """
        import onnx

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        used = [n for n in self.names if n in self.used]
        example = self.example_input(2, max(seq, 2))
        args = tuple(example[:, self.names.index(n)] for n in used)
        wrapper = _Named(self.model, used).eval()
        batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2)
        reg_log = logging.getLogger("torch.onnx._internal.exporter._registration")  # one line per missing
        old_level = reg_log.level  # torchvision op on every export: noise
        reg_log.setLevel(logging.ERROR)
        try:
            torch.onnx.export(wrapper, args, str(out), input_names=used, output_names=["logits"],
                              opset_version=opset, dynamo=True, verbose=False,
                              dynamic_shapes=tuple({0: batch, 1: length} for _ in used))
        except Exception as exc:
            # torch.export refuses some Python in forward (data-dependent branches); the TorchScript
            # exporter (how most transformer files are made) takes them with the same named, dynamic axes.
            out.unlink(missing_ok=True)
            try:
                axes = {0: "batch", 1: "sequence"}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(wrapper, args, str(out), input_names=used, output_names=["logits"],
                                      opset_version=min(opset, 20), dynamo=False,
                                      dynamic_axes={**dict.fromkeys(used, axes), "logits": {0: "batch"}})
            except Exception:
                first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
                raise WorkbenchError(f"ONNX export of {type(self.model).__name__}({', '.join(used)}) failed with "
                                     f"both exporters: {first[:300]}") from exc
        finally:
            reg_log.setLevel(old_level)
        from workbench.core.models.loaders import read_onnx

        model = read_onnx(out)  # the one door to model files (protobuf only; our own file all the same)
        entry = model.metadata_props.add()
        entry.key, entry.value = STACKED_INPUTS_KEY, ",".join(self.names)
        onnx.save(model, str(out))
        return out

    def forward(self, x: torch.Tensor) -> Any:
        if x.is_floating_point():
            x = self.synthesise(x)
        return self.model(**{name: x[:, i] for i, name in enumerate(self.names) if name in self.used})


class _Named(nn.Module):
    """The user's model called positionally with its named inputs (what the ONNX exporter traces)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, *arrays: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.names, arrays, strict=True)))


def wrap_for_tokens(model: nn.Module, names: Sequence[str], where: str = "the model") -> TokenInputs:
    """Check ``model.forward`` takes the token arrays by name, then wrap it.

    Arrays the forward does not name are dropped (unless it takes ``**kwargs``); a required argument
    without an array is an error naming both sides.
    """
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    kinds = {p.kind for p in params.values()}
    accepts_any = inspect.Parameter.VAR_KEYWORD in kinds
    usable = [n for n in names if accepts_any or n in params]
    required = [p.name for p in params.values()
                if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    missing = [n for n in required if n not in names]
    if missing:
        raise ModelLoadError(f"{where}: forward({', '.join(params)}) needs {', '.join(missing)} but the token data "
                             f"has {', '.join(names)}; add those arrays to the .npz or give them defaults")
    if "input_ids" not in usable:
        raise ModelLoadError(f"{where}: forward({', '.join(params)}) takes no input_ids argument; token data feeds "
                             "forward(input_ids, attention_mask, ...) by name")
    return TokenInputs(model, names, _vocabulary(model), usable)


def _vocabulary(model: nn.Module) -> int:
    """Rows of the word-embedding table: the ``nn.Embedding`` named like one (word/token, not type/position),
    else the first one registered (BERT-style models register it first); 100 when there is none."""
    tables = [(name.lower(), m.num_embeddings) for name, m in model.named_modules() if isinstance(m, nn.Embedding)]
    if not tables:
        return 100
    named = [n for name, n in tables if ("word" in name or "token" in name) and "type" not in name
             and "position" not in name]
    return named[0] if named else tables[0][1]
