"""Knowledge-distillation loss and teacher logits, shared by distillation and pruning's fine-tune.

Loss: ``alpha · T² · KL(p_teacher ‖ p_student) + (1 − alpha) · CE(student, labels)`` with both
distributions softened by temperature ``T``. ``T²`` keeps the soft-target gradients on the same
scale as the hard-label ones when ``T`` changes.

Teacher logits cache: datasets return ``(x, y)`` without sample indices, so the cache is keyed by
the *content* of each input (a 128-bit BLAKE2b digest of its bytes). That is exact when inputs are
deterministic, which is why it is used only without augmentation; with augmentation every epoch
sees new inputs and logits are computed on the fly. Hits and misses are recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from workbench.core.train import LossFn

__all__ = ["TeacherLogits", "kd_loss", "make_kd_loss_fn", "set_eval"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
            temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Hinton KD loss: ``alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(s, y)``.

    Computed in float32 whatever the autocast dtype (softmax of bf16 logits loses the small
    probabilities that carry the teacher's "dark knowledge").
    """
    s, t = student_logits.float(), teacher_logits.float().detach()
    soft = F.kl_div(F.log_softmax(s / temperature, dim=-1), F.softmax(t / temperature, dim=-1),
                    reduction="batchmean") * temperature * temperature
    hard = F.cross_entropy(s, targets, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


def set_eval(module: nn.Module) -> None:
    """Eval mode; frozen torch.export graphs refuse ``.eval()`` but already are inference graphs."""
    with contextlib.suppress(NotImplementedError, RuntimeError):
        module.eval()


class TeacherLogits:
    """Teacher forward in eval mode under ``no_grad`` (the caller's autocast applies), optionally cached.

    The cache key is the digest of each sample's bytes (see module doc), so it needs no sample
    indices and can never return logits of a different input. Use it only for deterministic inputs.
    """

    def __init__(self, teacher: nn.Module, cache: bool = False, max_entries: int = 2_000_000) -> None:
        self.teacher = teacher
        self.cache_enabled = cache
        self.max_entries = max_entries
        self._cache: dict[bytes, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0
        set_eval(teacher)

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.teacher(x)
        if isinstance(out, tuple | list):
            out = out[0]
        return out.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cache_enabled:
            self.misses += int(x.shape[0])
            return self._forward(x)
        flat = x.detach().to("cpu").contiguous().reshape(x.shape[0], -1).numpy()
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            fresh = self._forward(x[missing] if len(missing) < len(keys) else x).to("cpu")
            if len(self._cache) + len(missing) <= self.max_entries:
                for j, i in enumerate(missing):
                    self._cache[keys[i]] = fresh[j]
            if len(missing) == len(keys):
                self.misses += len(keys)
                return fresh.to(x.device)
            got = {i: fresh[j] for j, i in enumerate(missing)}
        else:
            got = {}
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return torch.stack([got[i] if i in got else self._cache[k] for i, k in enumerate(keys)]).to(x.device)

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"enabled": self.cache_enabled, "hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / total if total else None, "entries": len(self._cache)}


def make_kd_loss_fn(teacher: TeacherLogits, temperature: float, alpha: float,
                    label_smoothing: float = 0.0) -> LossFn:
    """A ``train(..., loss_fn=...)`` hook: teacher logits for the same batch, then ``kd_loss``."""

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, teacher(inputs), targets, temperature, alpha, label_smoothing)

    return loss_fn
