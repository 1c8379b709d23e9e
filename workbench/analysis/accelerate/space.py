"""What Accelerate may try on a model: the search space, the cheap trials tried first, and trial → recipe.

A trial is a plain dict of choices (Optuna's params): ``runtime`` (eager, compile, onnxruntime),
``precision`` (fp32, bf16, fp16) and ``channels_last`` for torch runtimes, ``quantize`` (none,
dynamic, static) with ``per_channel`` and ``calibration`` for onnxruntime, ``prune`` (a structured
channel ratio, 0 = none) for trainable PyTorch models, and ``batch`` for the throughput objective.
The space is conditional and shaped by what the model and the machine allow (``Capabilities``), so
an impossible combination is never suggested; one that fails anyway is pruned with its reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from workbench.recipe import Recipe, dumps_recipe

Objective = Literal["latency", "throughput"]

#: Structured pruning ratios tried (0 = not pruned). The zoo CNNs start to lose points at 50 %; 60 and 70 %
#: are past most accuracy budgets but draw the fast end of the Pareto front (what more speed would cost).
PRUNE_RATIOS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
#: Pruned layers keep a multiple of this many channels. INT8 kernels run odd channel counts on slow paths:
#: a 30 % pruned zoo ResNet in static INT8 ran 0.80x the unpruned INT8 model at batch 1 with exact counts
#: and 1.07x rounded to 8 (benchmarks/bench_prune_rounding.py, onnxruntime, 2 threads, AMD EPYC).
PRUNE_ROUND_TO = 8
#: Batch sizes the throughput objective may pick.
THROUGHPUT_BATCHES = (16, 32, 64, 128, 256)
#: Calibration methods of static INT8 (onnxruntime's names, lower-cased as the recipe spells them).
CALIBRATIONS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Capabilities:
    """What the model and this machine allow; decides the space (and why an option is absent)."""

    torch_model: bool = True
    trainable: bool = True
    has_conv: bool = True
    native_bf16: bool = False
    cuda: bool = False
    compile: bool = True
    #: Reasons for options left out, shown to the user once ("bf16: this CPU has no AVX-512 BF16/AMX").
    absent: tuple[str, ...] = field(default_factory=tuple)

    def runtimes(self) -> list[str]:
        if not self.torch_model:
            return ["onnxruntime"]
        return ["eager", *(["compile"] if self.compile else []), "onnxruntime"]

    def precisions(self) -> list[str]:
        return ["fp32", *(["bf16"] if self.native_bf16 or self.cuda else []), *(["fp16"] if self.cuda else [])]


def suggest(trial: Any, caps: Capabilities, objective: Objective) -> dict[str, Any]:
    """Ask an Optuna trial for one configuration, following the conditional space."""
    params: dict[str, Any] = {}
    runtime = trial.suggest_categorical("runtime", caps.runtimes())
    params["runtime"] = runtime
    if runtime in ("eager", "compile"):
        params["precision"] = trial.suggest_categorical("precision", caps.precisions())
        if caps.has_conv:
            params["channels_last"] = trial.suggest_categorical("channels_last", [False, True])
    else:
        # An ONNX model already runs on onnxruntime in fp32: that is the reference, not a trial.
        quant = trial.suggest_categorical("quantize", ["none", "dynamic", "static"] if caps.torch_model
                                          else ["dynamic", "static"])
        params["quantize"] = quant
        if quant != "none":
            params["per_channel"] = trial.suggest_categorical("per_channel", [True, False])
        if quant == "static":
            params["calibration"] = trial.suggest_categorical("calibration", list(CALIBRATIONS))
    if caps.trainable:
        params["prune"] = trial.suggest_categorical("prune", list(PRUNE_RATIOS))
    if objective == "throughput":
        params["batch"] = trial.suggest_categorical("batch", list(THROUGHPUT_BATCHES))
    return params


class _Walker:
    """Stands in for an Optuna trial: answers each ``suggest_categorical`` from a fixed list of choice indices
    (0 past its end) and records how many choices each decision had, to walk the whole conditional space."""

    def __init__(self, taken: tuple[int, ...]) -> None:
        self.taken = list(taken)
        self.widths: list[int] = []

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        depth = len(self.widths)
        self.widths.append(len(choices))
        if depth >= len(self.taken):
            self.taken.append(0)
        return choices[self.taken[depth]]


def all_configurations(caps: Capabilities, objective: Objective, reference_batch: int = 0) -> list[dict[str, Any]]:
    """Every configuration ``suggest`` can produce (the reference itself left out), in a fixed order.

    Walks ``suggest`` itself, so the list can never disagree with what the sampler is offered.
    """
    out: list[dict[str, Any]] = []
    pending: list[tuple[int, ...]] = [()]
    while pending:
        prefix = pending.pop()
        walker = _Walker(prefix)
        params = suggest(walker, caps, objective)
        if not is_reference(params, objective, reference_batch):
            out.append(params)
        for depth in range(len(prefix), len(walker.widths)):
            pending.extend((*walker.taken[:depth], choice) for choice in range(1, walker.widths[depth]))
    return out


def distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """How many choices two configurations differ in (a choice one of them does not make counts as one)."""
    return sum(1 for key in a.keys() | b.keys() if a.get(key, None) != b.get(key, None))


def nearest_untried(params: Mapping[str, Any], candidates: list[dict[str, Any]], tried: set[Any],
                    rng: Any) -> dict[str, Any] | None:
    """An untried configuration closest to ``params`` (ties drawn with ``rng``), or None when all were tried.

    When the sampler keeps proposing settings it has run, the region around them is where it expects the
    best trade-offs: their untried neighbours are the most useful next trials.
    """
    untried = [c for c in candidates if params_key(c) not in tried]
    if not untried:
        return None
    best = min(distance(params, c) for c in untried)
    return rng.choice([c for c in untried if distance(params, c) == best])


def cheap_first(caps: Capabilities, objective: Objective) -> list[dict[str, Any]]:
    """Trials enqueued before the sampler takes over: cheap, usually strong options first.

    No fine-tuning in the first ones (pruning costs epochs), and no compile (it costs a compile per
    trial); then one pruned combination so the sampler has seen the axis.
    """
    batch = {"batch": 64} if objective == "throughput" else {}
    prune0 = {"prune": 0.0} if caps.trainable else {}
    out: list[dict[str, Any]] = [
        *([{"runtime": "onnxruntime", "quantize": "none", **prune0, **batch}] if caps.torch_model else []),
        {"runtime": "onnxruntime", "quantize": "static", "per_channel": True, "calibration": "minmax", **prune0,
         **batch},
    ]
    if caps.torch_model and "bf16" in caps.precisions():
        out.append({"runtime": "eager", "precision": "bf16", **({"channels_last": False} if caps.has_conv else {}),
                    **prune0, **batch})
    out.append({"runtime": "onnxruntime", "quantize": "dynamic", "per_channel": True, **prune0, **batch})
    if caps.trainable:
        out.append({"runtime": "onnxruntime", "quantize": "static", "per_channel": True, "calibration": "minmax",
                    "prune": 0.3, **batch})
    return out


def describe(params: Mapping[str, Any]) -> str:
    """What a trial did, in words: 'onnxruntime + static INT8 + 30 % channels pruned'."""
    parts: list[str] = []
    runtime = params.get("runtime", "eager")
    if runtime == "onnxruntime":
        parts.append("onnxruntime")
        quant = params.get("quantize", "none")
        if quant != "none":
            detail = []
            if quant == "static":
                detail.append(str(params.get("calibration", "minmax")))
            if not params.get("per_channel", True):
                detail.append("per-tensor")
            parts.append(f"{quant} INT8" + (f" ({', '.join(detail)})" if detail else ""))
        else:
            parts.append("fp32")
    else:
        parts.append("torch.compile" if runtime == "compile" else "torch eager")
        parts.append(str(params.get("precision", "fp32")))
        if params.get("channels_last"):
            parts.append("channels_last")
    ratio = float(params.get("prune", 0.0) or 0.0)
    if ratio > 0:
        parts.append(f"{ratio:.0%} channels pruned")
    if "batch" in params:
        parts.append(f"batch {params['batch']}")
    return " + ".join(parts)


def is_reference(params: Mapping[str, Any], objective: Objective, reference_batch: int) -> bool:
    """The configuration of the reference itself (torch eager fp32, nothing applied): nothing to try."""
    return (params.get("runtime", "eager") == "eager" and params.get("precision", "fp32") == "fp32"
            and not params.get("channels_last") and not float(params.get("prune", 0.0) or 0.0)
            and (objective == "latency" or int(params.get("batch", reference_batch)) == reference_batch))


def params_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable identity of a configuration (two trials with the same key are the same experiment)."""
    return tuple(sorted((k, v) for k, v in params.items()))


#: Seconds of paired timing a trial gets per batch size at most (the rounds stop earlier once the
#: speed-up's interval is tight): enough for a tight interval on the zoo models on 2 cores.
TRIAL_TIMING_S = 6.0


@dataclass(frozen=True)
class TrialPlan:
    """The settings every trial shares: the base model, the objective and how carefully to time."""

    objective: Objective
    base_weights: str
    reference_batch: int
    finetune_epochs: int = 2


def trial_recipe(base: Recipe, params: Mapping[str, Any], plan: TrialPlan) -> Recipe:
    """The recipe of one trial: the user's model and data, the base weights, the trial's choices.

    Training is off (the base model is trained once); pruning fine-tunes ``plan.finetune_epochs``.
    Timings use few calls per unpaired measurement: the paired timing against the reference is what
    a trial is judged on, for at most ``TRIAL_TIMING_S`` per batch size (less when the recipe's own
    ``[bench] max_time_s`` is lower) so that a search gets through many trials.
    """
    from workbench.techniques.export.config import ExportSection
    from workbench.techniques.prune.config import PruneSection
    from workbench.techniques.quantize.config import QuantizeSection

    data = base.model_dump()
    for name in ("distributed", "prune", "distill", "early_exit", "quantize", "export"):
        data.pop(name, None)
    recipe = type(base).model_validate(data)
    if plan.base_weights:
        recipe.model.weights = plan.base_weights
    recipe.train.epochs = 0
    recipe.batching.find_max_batch = False
    runtime = params.get("runtime", "eager")
    recipe.precision.autocast = "none"
    recipe.precision.channels_last = False
    recipe.precision.compile = False
    if runtime in ("eager", "compile"):
        prec = params.get("precision", "fp32")
        recipe.precision.autocast = "none" if prec == "fp32" else prec
        recipe.precision.channels_last = bool(params.get("channels_last", False))
        recipe.precision.compile = runtime == "compile"
    else:
        quant = params.get("quantize", "none")
        if quant == "none":
            recipe.export = ExportSection(formats=["onnx"], parity_batches=2)
        else:
            recipe.quantize = QuantizeSection(method=quant, per_channel=bool(params.get("per_channel", True)),
                                              calibration=params.get("calibration", "minmax"))
    ratio = float(params.get("prune", 0.0) or 0.0)
    if ratio > 0:
        recipe.prune = PruneSection(method="structured", ratio=ratio, finetune_epochs=plan.finetune_epochs,
                                    round_to=PRUNE_ROUND_TO)
    batches = [1] if plan.objective == "latency" else sorted({plan.reference_batch, int(params.get("batch", 64))})
    recipe.bench.batch_sizes = batches
    recipe.bench.runtimes = ["eager"]
    recipe.bench.enabled = True
    recipe.bench.paired = True
    recipe.bench.iters = 20
    recipe.bench.warmup = 3
    recipe.bench.min_time_s = 0.0
    recipe.bench.max_time_s = min(TRIAL_TIMING_S, base.bench.max_time_s)
    recipe.bench.rounds = 10
    return recipe


def study_fingerprint(recipe: Recipe, objective: str, max_drop: float) -> str:
    """A short hash of what defines a search: the same recipe and settings resume the same study."""
    text = f"{dumps_recipe(recipe)}\n{objective}\n{max_drop:g}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
