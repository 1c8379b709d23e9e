"""Early exits: small classifier heads part-way through a network, so easy inputs stop early.

BranchyNet (Teerapittayanon et al., 2016) and Shallow-Deep Networks (Kaya et al., 2019) attach
exit heads after intermediate stages and let a sample leave at the first head that is confident
enough. What it takes, and where it lives here:

- **Segments.** The backbone is cut at the exit points into consecutive pieces with ``torch.fx``
  (``split_backbone``), so inference really runs only the pieces a sample needs. A cut is valid
  when the exit point's output is the only value that flows past it (true at stage boundaries).
- **Heads** (``ExitHead``): global average pooling + a linear layer for feature maps, token mean +
  linear for transformers, a linear layer for flat features.
- **Training**: jointly, with one weighted cross-entropy per exit (BranchyNet), or heads only on a
  frozen backbone (``exit_loss``).
- **The rule**: a sample exits at the first head whose confidence passes the threshold: max
  softmax probability ``>= t``, or normalised entropy ``<= t`` (``confidence``).
- **Choosing the threshold**: every exit's prediction is computed once on the validation split
  (``ExitProfile``), then each candidate threshold is replayed on it (``simulate``): accuracy,
  share of samples leaving at each exit and the average MACs per sample. ``choose_threshold``
  keeps the cheapest threshold within the accuracy budget against the full model.
- **Inference**: ``EarlyExitModel.infer`` for a batch runs segment by segment and drops the
  samples that exited from the batch, so they cost nothing further.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import fx, nn

from workbench.errors import RecipeError, WorkbenchError

__all__ = [
    "DEFAULT_EXITS",
    "EarlyExitModel",
    "ExitHead",
    "ExitProfile",
    "choose_threshold",
    "confidence",
    "exit_loss",
    "split_backbone",
]

#: Exit points of the zoo models: after each stage but the last (the last stage feeds the model's head).
DEFAULT_EXITS: dict[str, list[str]] = {
    "resnet": ["stages.0", "stages.1"],
    "small_cnn": ["features.1", "features.3"],
    "mobilenet": ["features.3", "features.6"],
    "mlp": ["features.1"],
    "transformer": ["blocks.1", "blocks.3"],
}
RULES = ("max_prob", "entropy")


# ------------------------------------------------------------------------------------------ segmenting


def _node_for(gm: fx.GraphModule, name: str) -> fx.Node:
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == name:
            return node
    known = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    raise RecipeError(f"early_exit.exits: module {name!r} is not called in the model's forward; modules that are: "
                      f"{', '.join(known[:12])}{' …' if len(known) > 12 else ''}")


def split_backbone(model: nn.Module, exit_points: Sequence[str]) -> list[fx.GraphModule]:
    """Cut ``model`` after each module in ``exit_points`` into ``len(exit_points) + 1`` segments.

    Segment ``i`` takes the previous cut's output (the model input for the first) and returns the
    output of ``exit_points[i]``; the last segment returns the model's output. Raises a one-line
    ``RecipeError`` when a name is unknown or a cut would need more than one value to flow past it.
    """
    names = set(exit_points)

    class _Tracer(fx.Tracer):
        """Keeps each exit-point module whole (one node), so a cut falls right after it."""

        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname in names or super().is_leaf_module(m, qualname)

    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:
        raise WorkbenchError(f"early exits need a model torch.fx can trace ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160]})") from None
    nodes = list(gm.graph.nodes)
    order = {node: i for i, node in enumerate(nodes)}
    cuts = [_node_for(gm, n) for n in exit_points]
    bounds = [order[c] for c in cuts]
    if bounds != sorted(set(bounds)):
        raise RecipeError(f"early_exit.exits = {list(exit_points)}: list each module once, in the order the "
                          "forward calls them")
    last = len(cuts)

    def segment_of(node: fx.Node) -> int:
        return last if node.op == "output" else sum(1 for b in bounds if order[node] > b)

    segments: list[fx.GraphModule] = []
    for s in range(last + 1):
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}

        def lookup(n: fx.Node, s: int = s, graph: fx.Graph = graph, env: dict[fx.Node, fx.Node] = env) -> fx.Node:
            if n not in env:
                if n.op != "get_attr":  # a parameter/buffer read may be repeated in any segment
                    where = cuts[s - 1].target if s > 0 else "the input"
                    raise RecipeError(f"early_exit.exits: after {where!r} the forward still uses {n.name!r} from "
                                      "before it; put exits only where one tensor is passed on (between stages)")
                env[n] = graph.node_copy(n, lookup)
            return env[n]

        if s > 0:
            env[cuts[s - 1]] = graph.placeholder("h")
        for node in nodes:
            if segment_of(node) != s:
                continue
            if node.op == "placeholder":
                env[node] = graph.placeholder(node.name)
            elif node.op == "output":
                graph.output(fx.map_arg(node.args[0], lookup))
            else:
                env[node] = graph.node_copy(node, lookup)
        if s < last:
            graph.output(env[cuts[s]])
        graph.lint()
        segments.append(fx.GraphModule(gm, graph))
    return segments


# ---------------------------------------------------------------------------------------------- heads


class ExitHead(nn.Module):
    """A classifier on an intermediate output.

    Feature maps get one strided 3×3 conv block before pooling (as in Shallow-Deep Networks): early
    features are too local for pool + linear alone (in an earlier run of the early-exit benchmark
    with that head, almost no sample left at the first exit). The block costs about a tenth of a
    stage's MACs. Tokens are
    pooled and normalised, flat features go straight to the linear layer.
    """

    def __init__(self, example: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.kind = {4: "map", 3: "tokens", 2: "flat"}.get(example.dim())
        if self.kind is None:
            raise WorkbenchError(f"an exit head needs a 2-, 3- or 4-D output, got shape {list(example.shape)}")
        features = int(example.shape[1] if self.kind == "map" else example.shape[-1])
        self.norm = nn.LayerNorm(features) if self.kind == "tokens" else nn.Identity()
        self.block: nn.Module = nn.Identity()
        if self.kind == "map":
            width = max(32, 2 * features)
            stride = 2 if min(example.shape[2:]) >= 8 else 1
            self.block = nn.Sequential(nn.Conv2d(features, width, 3, stride=stride, padding=1, bias=False),
                                       nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            features = width
        self.fc = nn.Linear(features, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "map":
            h = self.block(h).mean(dim=(2, 3))
        elif self.kind == "tokens":
            h = self.norm(h.mean(dim=1))
        return self.fc(h)


def confidence(logits: torch.Tensor, rule: str) -> torch.Tensor:
    """Per-sample confidence, higher is surer: max softmax probability, or 1 − normalised entropy."""
    p = F.softmax(logits.float(), dim=-1)
    if rule == "max_prob":
        return p.max(dim=-1).values
    if rule == "entropy":
        ent = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)
        return 1.0 - ent / math.log(p.shape[-1])
    raise RecipeError(f"early_exit.rule = {rule!r}: expected one of {', '.join(RULES)}")


# ---------------------------------------------------------------------------------------------- model


class EarlyExitModel(nn.Module):
    """Backbone segments, one head per exit point, and the model's own head at the end.

    ``forward`` returns every exit's logits (list, last = the full model) while training or when
    ``all_exits`` is set, else the full model's logits (so plain evaluation and export still work).
    ``infer`` is the dynamic path: samples leave at the first confident head.
    """

    def __init__(self, segments: Sequence[nn.Module], heads: Sequence[nn.Module], exit_points: Sequence[str],
                 threshold: float = 1.01, rule: str = "max_prob") -> None:
        super().__init__()
        if len(segments) != len(heads) + 1:
            raise ValueError("one head per cut: len(segments) must be len(heads) + 1")
        self.segments = nn.ModuleList(segments)
        self.heads = nn.ModuleList(heads)
        self.exit_points = list(exit_points)
        self.threshold = threshold
        self.rule = rule
        self.all_exits = False

    @classmethod
    def build(cls, model: nn.Module, exit_points: Sequence[str], input_shape: Sequence[int],
              num_classes: int) -> EarlyExitModel:
        """Split ``model`` at ``exit_points`` and size a head for each cut from an example forward."""
        segments = split_backbone(model, exit_points)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        was_training = model.training
        heads = []
        with torch.no_grad():
            h = torch.randn((2, *input_shape), device=device)
            for seg in segments[:-1]:
                seg.eval()
                h = seg(h)
                heads.append(ExitHead(h, num_classes).to(device))
        for seg in segments:
            seg.train(was_training)
        return cls(segments, heads, exit_points)

    @property
    def num_exits(self) -> int:
        """Exits including the final one."""
        return len(self.heads) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        outs = []
        h = x
        for seg, head in zip(self.segments[:-1], self.heads, strict=True):
            h = seg(h)
            if self.training or self.all_exits:
                outs.append(head(h))
        final = self.segments[-1](h)
        if self.training or self.all_exits:
            return [*outs, final]
        return final

    @torch.no_grad()
    def infer(self, x: torch.Tensor, threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Dynamic inference: (logits, exit index per sample). Samples that exit leave the batch."""
        t = self.threshold if threshold is None else threshold
        n = x.shape[0]
        if n == 1:  # the latency path: no bookkeeping tensors, one scalar read per exit
            h = x
            for k, (seg, head) in enumerate(zip(self.segments[:-1], self.heads, strict=True)):
                h = seg(h)
                logits = head(h)
                if float(confidence(logits, self.rule)) >= t:
                    return logits, torch.tensor([k])
            return self.segments[-1](h), torch.tensor([self.num_exits - 1])
        logits_out: torch.Tensor | None = None
        exit_of = torch.full((n,), self.num_exits - 1, dtype=torch.long)
        alive = torch.arange(n)
        h = x
        for k, (seg, head) in enumerate(zip(self.segments[:-1], self.heads, strict=True)):
            h = seg(h)
            logits = head(h)
            if logits_out is None:
                logits_out = logits.new_empty((n, logits.shape[-1]))
            done = confidence(logits, self.rule) >= t
            if bool(done.any()):
                logits_out[alive[done]] = logits[done]
                exit_of[alive[done]] = k
                keep = ~done
                if not bool(keep.any()):
                    return logits_out, exit_of
                alive, h = alive[keep], h[keep]
        final = self.segments[-1](h)
        if logits_out is None:
            return final, exit_of
        logits_out[alive] = final
        return logits_out, exit_of


def exit_loss(weights: Sequence[float]) -> Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]:
    """BranchyNet's joint loss: the weighted sum of each exit's cross-entropy (a ``train`` loss_fn)."""

    def loss_fn(outputs: Any, targets: torch.Tensor, _inputs: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, list | tuple):
            return F.cross_entropy(outputs, targets)
        if len(outputs) != len(weights):
            raise ValueError(f"{len(outputs)} exits but {len(weights)} loss weights")
        return sum((w * F.cross_entropy(o.float(), targets) for w, o in zip(weights, outputs, strict=True)),
                   torch.zeros((), device=targets.device))

    return loss_fn


# ---------------------------------------------------------------------------------- threshold choice


@dataclass
class ExitProfile:
    """Every exit's confidence and correctness on one split, for replaying thresholds without a model.

    ``confidence`` and ``correct`` are (exits, samples); ``exit_macs`` is the MACs a sample costs
    when it leaves at each exit (cumulative backbone + the heads it passed).
    """

    confidence: np.ndarray
    correct: np.ndarray
    exit_macs: list[int]
    #: The plain model's MACs (no exit heads), what savings are counted against; 0 = ``exit_macs[-1]``.
    full_macs: int = 0

    def __post_init__(self) -> None:
        if not self.full_macs:
            self.full_macs = int(self.exit_macs[-1])

    @property
    def full_accuracy(self) -> float:
        return float(self.correct[-1].mean())

    def simulate(self, threshold: float) -> dict[str, Any]:
        """Accuracy, exit shares and mean MACs per sample when exiting at ``conf >= threshold``."""
        k, n = self.confidence.shape
        exits = np.full(n, k - 1)
        undecided = np.ones(n, dtype=bool)
        for e in range(k - 1):
            leave = undecided & (self.confidence[e] >= threshold)
            exits[leave] = e
            undecided &= ~leave
        acc = float(self.correct[exits, np.arange(n)].mean())
        shares = [float((exits == e).mean()) for e in range(k)]
        macs = float(np.asarray(self.exit_macs)[exits].mean())
        return {"threshold": float(threshold), "accuracy": acc, "exit_shares": shares, "mean_macs": macs,
                "macs_saved": 1.0 - macs / self.full_macs if self.full_macs else 0.0}

    def curve(self, points: int = 41) -> list[dict[str, Any]]:
        """The accuracy-vs-cost trade-off over thresholds (for the panel's chart and the report)."""
        grid = sorted({*np.linspace(0.0, 1.0, points).tolist(), 1.01})
        return [self.simulate(t) for t in grid]


def choose_threshold(profile: ExitProfile, max_drop_points: float, points: int = 101) -> dict[str, Any]:
    """The threshold with the lowest mean MACs whose accuracy stays within ``max_drop_points`` of the full model.

    ``1.01`` (nobody exits early) always qualifies, so there is always an answer. Compared with a
    small tolerance so a drop of exactly the budget counts as within it.
    """
    full = profile.full_accuracy
    candidates = [profile.simulate(t) for t in sorted({*np.linspace(0.0, 1.0, points).tolist(), 1.01})]
    ok = [c for c in candidates if (full - c["accuracy"]) * 100.0 <= max_drop_points + 1e-9]
    best = min(ok, key=lambda c: (c["mean_macs"], -c["accuracy"]))
    return {**best, "full_accuracy": full, "max_drop_points": max_drop_points}


@torch.no_grad()
def profile_exits(model: EarlyExitModel, loader: Any, exit_macs: Sequence[int], device: torch.device,
                  cancel: Any = None, full_macs: int = 0) -> ExitProfile:
    """Run every exit once on ``loader``: per-sample confidence and correctness at each exit."""
    model.eval()
    model.all_exits = True
    confs: list[list[np.ndarray]] = [[] for _ in range(model.num_exits)]
    corrects: list[list[np.ndarray]] = [[] for _ in range(model.num_exits)]
    try:
        for x, y in loader:
            if cancel is not None:
                cancel.raise_if_cancelled()
            outs = model(x.to(device))
            for e, logits in enumerate(outs):
                confs[e].append(confidence(logits, model.rule).cpu().numpy())
                corrects[e].append((logits.argmax(dim=-1).cpu() == y).numpy())
    finally:
        model.all_exits = False
    return ExitProfile(np.stack([np.concatenate(c) for c in confs]),
                       np.stack([np.concatenate(c) for c in corrects]), list(exit_macs), full_macs)


@dataclass
class ExitCosts:
    """MACs of each segment and head for one sample; ``exit_macs`` is what leaving at each exit costs."""

    segment_macs: list[int]
    head_macs: list[int]
    exit_macs: list[int] = field(default_factory=list)

    @property
    def model_macs(self) -> int:
        """The plain model's MACs per sample: every segment, no exit head."""
        return int(sum(self.segment_macs))

    def __post_init__(self) -> None:
        if not self.exit_macs:
            total, heads, out = 0, 0, []
            for i, seg in enumerate(self.segment_macs):
                total += seg
                if i < len(self.head_macs):
                    heads += self.head_macs[i]
                out.append(total + heads)
            self.exit_macs = out


def exit_costs(model: EarlyExitModel, input_shape: Sequence[int]) -> ExitCosts:
    """MACs per segment and head, counted with torch's FlopCounterMode on one sample."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    seg_macs, head_macs = [], []
    was = model.training
    model.eval()
    with torch.no_grad():
        h = torch.randn((1, *input_shape), device=device)
        for i, seg in enumerate(model.segments):
            with FlopCounterMode(display=False) as fc:
                h_next = seg(h)
            seg_macs.append(int(fc.get_total_flops()) // 2)
            if i < len(model.heads):
                with FlopCounterMode(display=False) as fc:
                    model.heads[i](h_next)
                head_macs.append(int(fc.get_total_flops()) // 2)
            h = h_next
    model.train(was)
    return ExitCosts(seg_macs, head_macs)


class EarlyExitInference(nn.Module):
    """The deployable form: ``forward`` is dynamic inference at a fixed threshold (logits only).

    Evaluation, the paired timing and saved weights all go through this one module, so what is
    measured is exactly what a user would run.
    """

    def __init__(self, model: EarlyExitModel, threshold: float) -> None:
        super().__init__()
        self.model = model
        self.threshold = float(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.infer(x, self.threshold)[0]
