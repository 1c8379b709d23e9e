"""``run_search``: find the fastest model within an accuracy budget, every trial a stored run.

How a search goes:

1. **Base model.** A recipe that trains (and names no weights) is trained once, as a run of its own;
   every trial starts from those weights. The reference, torch eager fp32 with the base weights, is
   loaded once: every trial is timed paired against it (interleaved rounds in the trial's run, with a
   95 % CI), so trials measured minutes apart under different load still compare fairly.
2. **Trials.** Optuna's TPE sampler (multi-objective: speed up, accuracy drop down, the budget as a
   constraint) picks configurations from ``space.suggest``; cheap ones (``space.cheap_first``) are
   queued first. Each trial is ``techniques.run_recipe`` on ``space.trial_recipe``: a stored run with
   its own log, figures and paired speedup. Accuracy is judged on the validation split; eval is
   reported. A configuration that cannot apply is *pruned* with its reason; one already run (by this
   or another worker) is pruned as a duplicate, so none runs twice, and its nearest untried neighbour is
   queued instead (the sampler repeating itself means it expects the best trade-offs around there).
3. **Result.** Over all finished trials: the Pareto front (speed vs drop), the fastest within the
   budget, its split by cause, and a deployment bundle written by re-running the winner from its own
   weights with ``[export]`` (parity checked). Everything lands in one run of kind ``accelerate``.

``run_worker`` joins an existing study (another process or machine) and only runs trials.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.analysis.accelerate import study as study_mod
from workbench.analysis.accelerate.space import (
    Capabilities,
    Objective,
    TrialPlan,
    all_configurations,
    cheap_first,
    describe,
    is_reference,
    nearest_untried,
    params_key,
    study_fingerprint,
    suggest,
    trial_recipe,
)
from workbench.core.budget import within_budget
from workbench.core.events import CancelToken, MultiReporter, Reporter, relay_warnings
from workbench.core.pipeline import (
    Checkpoint,
    RunOutcome,
    environment,
    record_process_exit,
    record_unfinished_run,
)
from workbench.errors import Cancelled, RecipeError, WorkbenchError, short
from workbench.recipe import Recipe, dumps_recipe

#: The time budget of the demo: from the built-in model to the Before → After card in two minutes.
QUICK_BUDGET_S = 120.0
#: Time kept back at the end of the budget for the winner's bundle at least (a re-run without training;
#: once trials have run, the median trial's time when that is longer).
BUNDLE_RESERVE_S = 8.0
#: The stage event a search sends whenever its stored trials table changed.
TRIALS_STAGE = "accelerate:trials"
#: Consecutive duplicate suggestions after which the search stops (a safety net: each duplicate queues an untried
#: neighbour, so this only trips when other workers keep taking those first).
MAX_DUPLICATES_IN_A_ROW = 12


@dataclass
class SearchSettings:
    """The three settings a user picks (objective, accuracy budget, time budget) and the rest."""

    objective: Objective = "latency"
    max_drop: float = 1.0
    time_budget_s: float = 600.0
    #: Stop after this many finished trials in the study (0 = only the time budget limits).
    trials: int = 0
    storage: str = ""
    study: str = ""
    bundle_dir: str = ""
    force: bool = False
    finetune_epochs: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in ("latency", "throughput"):
            raise RecipeError(f"objective {self.objective!r}: choose latency or throughput")
        if not (0 <= self.max_drop <= 100) or math.isnan(self.max_drop):
            raise RecipeError(f"max drop {self.max_drop!r}: give accuracy points between 0 and 100, e.g. 1.0")
        if not self.time_budget_s > 0:
            raise RecipeError(f"time budget {self.time_budget_s!r}: give a positive duration, e.g. 10m")
        if self.trials < 0:
            raise RecipeError(f"trials {self.trials}: give 0 (no limit) or a positive count")


class TrialFailed(Exception):
    """A trial whose run failed for an internal reason: recorded as failed, the search goes on."""


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h``, ``1h30m`` → seconds; anything else is one line saying what works."""
    import re

    raw = text.strip().lower()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s?)?", raw)
    if not raw or m is None or not any(m.groups()):
        raise RecipeError(f"time budget {text!r}: write e.g. 2m, 10m, 90s or 1h")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    total = h * 3600 + mi * 60 + s
    if total <= 0:
        raise RecipeError(f"time budget {text!r}: must be longer than 0 s")
    return total


# ------------------------------------------------------------------------------------------------ reporting


class _TrialReporter(Reporter):
    """Passes a trial run's events on, prefixing logs and turning progress into the search's progress."""

    def __init__(self, outer: Reporter, progress: Callable[[str], None], prefix: str) -> None:
        self.outer = outer
        self._progress = progress
        self.prefix = prefix

    def run_started(self, run_id: int, name: str) -> None:
        hook = getattr(self.outer, "run_started", None)
        if callable(hook):
            hook(run_id, name)

    def stage_started(self, stage: str, total: int | None = None) -> None:
        self.outer.stage_started(stage, total)

    def stage_finished(self, stage: str, result: Mapping[str, Any] | None = None) -> None:
        self.outer.stage_finished(stage, result)

    def metrics(self, stage: str, step: int, values: Mapping[str, float], t: float | None = None) -> None:
        self.outer.metrics(stage, step, values, t)

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        self._progress(message)

    def log(self, message: str, level: str = "info") -> None:
        self.outer.log(f"{self.prefix}{message}", level)


def fmt_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ------------------------------------------------------------------------------------------------ the search


@dataclass
class Reference:
    """The model every trial is timed and judged against."""

    checkpoint: Checkpoint
    val_accuracy: float
    eval_accuracy: float
    size_bytes: int
    label: str


def capabilities(ctx: Any) -> Capabilities:
    """What the loaded model and this machine allow (``ctx``: a loaded run context)."""
    from workbench.core.hardware import native_bf16_cpu
    from workbench.core.measure.runtimes import compile_available

    absent: list[str] = []
    torch_model = ctx.module is not None
    has_conv = torch_model and any(isinstance(m, torch.nn.Conv2d) for m in ctx.module.modules())
    bf16 = native_bf16_cpu()
    cuda = torch.cuda.is_available()
    if torch_model and not bf16 and not cuda:
        absent.append("bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), where it runs slower than fp32")
    if not cuda:
        absent.append("fp16: needs a CUDA GPU")
    can_compile, why = compile_available() if torch_model else (False, "")
    if torch_model and not can_compile:
        absent.append(f"torch.compile: {why}")
    trainable = torch_model and bool(getattr(ctx.loaded, "trainable", False))
    if torch_model and not trainable:
        absent.append("pruning: this model cannot be fine-tuned here")
    if not torch_model:
        absent.append("torch runtimes and pruning: the model is an ONNX file")
    return Capabilities(torch_model=torch_model, trainable=trainable, has_conv=has_conv, native_bf16=bf16,
                        cuda=cuda, compile=can_compile, absent=tuple(absent))


def load_reference(recipe: Recipe, rep: Reporter, cancel: CancelToken) -> tuple[Reference, Any]:
    """Load the base model once: the reference checkpoint, its accuracies and size, and the run context."""
    from workbench.core.models import summarize
    from workbench.core.models.loaders import onnx_file_size
    from workbench.core.pipeline import load_for_training
    from workbench.core.precision import unwrap
    from workbench.core.train import evaluate

    ref_recipe = recipe.model_copy(deep=True)
    ref_recipe.precision.autocast = "none"
    ref_recipe.precision.channels_last = False
    ref_recipe.precision.compile = False
    ctx = load_for_training(ref_recipe, None, rep, cancel)
    if ctx.module is not None:
        module = unwrap(ctx.module).eval()
        val = evaluate(module, ctx.val_loader, ctx.plan, cancel)["accuracy"]
        ev = evaluate(module, ctx.eval_loader, ctx.plan, cancel)["accuracy"]
        label = f"torch eager {ctx.plan.label}"
        cp = Checkpoint("baseline", label, module=module, precision_plan=False)
        size = summarize(module, ctx.input_shape).size_bytes
    else:
        from workbench.core.measure.runtimes import OrtRuntime, evaluate_runtime

        rt = OrtRuntime(ctx.onnx_path)
        try:
            val = evaluate_runtime(rt, ctx.val_loader, cancel)
            ev = evaluate_runtime(rt, ctx.eval_loader, cancel)
        finally:
            rt.close()
        label = "onnxruntime"
        cp = Checkpoint("baseline", label, onnx_path=Path(ctx.onnx_path))
        size = onnx_file_size(Path(ctx.onnx_path))
    return Reference(cp, float(val), float(ev), int(size), label), ctx


def trial_figures(summary: Mapping[str, Any], params: Mapping[str, Any], ref: Reference, objective: Objective,
                  reference_batch: int) -> dict[str, Any]:
    """A finished trial's judged figures from its run summary: speed against the reference, drops, size."""
    speedup = summary.get("speedup") or {}
    final = summary.get("final") or {}
    if not speedup.get("latency"):
        raise WorkbenchError("the trial's run has no paired timing against the reference")
    if objective == "latency":
        entry = speedup["latency"]["1"]
        speed, ci = float(entry["ratio"]), [float(v) for v in entry["ci95"]]
        basis = "latency at batch 1, paired against the reference"
        judged = 1
    else:
        b = int(params.get("batch", reference_batch))
        entry = speedup["latency"][str(b)]
        ref_ms = speedup["models"][0]["p50_ms"]
        # Throughput at the trial's batch against the reference's at its own batch: the paired ratio at
        # batch b times the reference's batch-size effect measured in the same run.
        scale = (b / ref_ms[str(b)]) / (reference_batch / ref_ms[str(reference_batch)])
        speed = float(entry["ratio"]) * scale
        ci = [float(v) * scale for v in entry["ci95"]]
        basis = f"samples/s at batch {b} against the reference's at batch {reference_batch}"
        judged = b
    val = final.get("val_accuracy")
    if val is None:
        raise WorkbenchError("the trial's run measured no validation accuracy")
    ev = final.get("accuracy")
    size = final.get("size_bytes")
    return {
        "speedup": speed, "ci95": ci, "basis": basis,
        "reliable": bool(speedup.get("reliable", False)), "unreliable_reason": speedup.get("reason", ""),
        "drop_points": (ref.val_accuracy - float(val)) * 100.0,
        "val_accuracy": float(val),
        "eval_accuracy": float(ev) if ev is not None else None,
        "eval_drop_points": (ref.eval_accuracy - float(ev)) * 100.0 if ev is not None else None,
        "size_bytes": int(size) if size else None,
        "size_ratio": (ref.size_bytes / int(size)) if size else None,
        "steps": [{"name": s.get("name"), "detail": s.get("detail"), "ratio": s.get("ratio")}
                  for s in speedup.get("steps") or []],
        "reference_ms": reference_ms(speedup, judged),
    }


def reference_ms(speedup: Mapping[str, Any], batch: int) -> float | None:
    """The reference's median time per batch in a trial's paired timing (the first model timed)."""
    models = speedup.get("models") or []
    value = (models[0].get("p50_ms") or {}).get(str(batch)) if models else None
    return float(value) if value is not None else None


#: A trial whose reference ran this many times slower or faster than its median over the search has
#: its speed-up marked doubtful: a paired ratio holds only when both sides are slowed alike. Measured: the
#: same fp32 ResNet took 2.4 ms in most trials of a search and 6 ms in a few, while a VM host took cycles
#: from one vCPU at a time (torch at 2 threads waits for the slower core; onnxruntime lost less), unseen
#: by the process-list monitor.
REFERENCE_DRIFT = 1.5


def flag_reference_drift(rows: list[dict[str, Any]]) -> None:
    """Mark finished trials whose reference timing is far from the search's usual one as unreliable."""
    times = [r["reference_ms"] for r in completed(rows) if r.get("reference_ms")]
    if len(times) < 3:
        return
    usual = statistics.median(times)
    for r in completed(rows):
        ms = r.get("reference_ms")
        if ms and not 1 / REFERENCE_DRIFT <= ms / usual <= REFERENCE_DRIFT:
            r["reliable"] = False
            why = (f"the reference took {ms:.2f} ms here against {usual:.2f} ms in most trials of this search, so "
                   "this speed-up is doubtful")
            r["unreliable_reason"] = "; ".join(x for x in (r.get("unreliable_reason"), why) if x)


def _constraints(max_drop: float) -> Callable[[Any], list[float]]:
    def constraints(trial: Any) -> list[float]:
        drop = trial.user_attrs.get("drop_points")
        return [float(drop) - max_drop if drop is not None else 0.0]
    return constraints


class Searcher:
    """One process's part in a study: runs trials until the budget, the trial count or a cancel stops it."""

    def __init__(self, *, study: Any, base: Recipe, plan: TrialPlan, caps: Capabilities, ref: Reference,
                 settings: SearchSettings, store: Any, reporter: Reporter, cancel: CancelToken,
                 deadline: float, search_run_id: int | None, on_trial: Callable[[], None] | None = None) -> None:
        self.study, self.base, self.plan, self.caps, self.ref = study, base, plan, caps, ref
        self.settings, self.store, self.rep, self.cancel = settings, store, reporter, cancel
        self.deadline = deadline
        self.search_run_id = search_run_id
        self.on_trial = on_trial
        self.durations: list[float] = []
        self.duplicates_in_a_row = 0
        self.exhausted = False  # every configuration of the space has been tried
        self.space = all_configurations(caps, settings.objective, plan.reference_batch)
        self.ran: list[int] = []
        self.model_label = base.model.label

    # -- progress -------------------------------------------------------------------------------
    def finished_count(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def best_line(self) -> str:
        best = best_trial(trial_rows(self.study), self.settings.max_drop)
        if best is None:
            return "none within the budget yet"
        return f"best {best['speedup']:.2f}x at {-best['drop_points']:+.2f} pts ({best['label']})"

    def progress(self, number: int, label: str, message: str) -> None:
        now = time.monotonic()
        total = self.settings.time_budget_s
        left = max(0.0, self.deadline - now)
        self.rep.progress(int(total - left), int(total),
                          f"trial {number} ({label}): {message} · {self.finished_count()} done · "
                          f"{self.best_line()} · {fmt_eta(left)} left")

    # -- the objective ----------------------------------------------------------------------------
    def objective(self, trial: Any) -> tuple[float, float]:
        import optuna

        self.cancel.raise_if_cancelled()
        params = suggest(trial, self.caps, self.settings.objective)
        label = describe(params)
        trial.set_user_attr("worker", study_mod.worker_identity())
        trial.set_user_attr("label", label)
        if is_reference(params, self.settings.objective, self.plan.reference_batch):
            trial.set_user_attr("reason", "this is the reference itself (torch eager fp32, nothing applied)")
            self._duplicate(params, trial.number)
            raise optuna.TrialPruned("the reference itself")
        dup = duplicate_of(self.study, trial.number, params)
        if dup is not None:
            trial.set_user_attr("reason", f"same settings as trial {dup}")
            self._duplicate(params, trial.number)
            raise optuna.TrialPruned(f"same settings as trial {dup}")
        self.duplicates_in_a_row = 0
        recipe = trial_recipe(self.base, params, self.plan)
        recipe.name = f"{self.model_label} · {label}"
        self.rep.log(f"accelerate: trial {trial.number}: {label}")
        t0 = time.monotonic()
        from workbench.techniques import run_recipe

        trial_rep = _TrialReporter(self.rep, lambda msg: self.progress(trial.number, label, msg),
                                   f"trial {trial.number}: ")
        outcome = run_recipe(recipe, store=self.store, reporter=trial_rep, cancel=self.cancel,
                             reference=self.ref.checkpoint)
        self.durations.append(time.monotonic() - t0)
        trial.set_user_attr("run_id", outcome.run_id)
        self.ran.append(trial.number)
        self._link(outcome.run_id, trial.number)
        if outcome.status == "cancelled":
            trial.set_user_attr("reason", "cancelled by user")
            raise Cancelled()
        if outcome.status != "completed":
            trial.set_user_attr("reason", outcome.error)
            if isinstance(outcome.exception, WorkbenchError | FloatingPointError):
                # It cannot apply to this model (or its numbers went bad): pruned with its reason, not failed.
                self.rep.log(f"accelerate: trial {trial.number} ({label}) does not apply: {outcome.error}", "warning")
                raise optuna.TrialPruned(outcome.error)
            raise TrialFailed(outcome.error)
        try:
            figures = trial_figures(outcome.summary, params, self.ref, self.settings.objective,
                                    self.plan.reference_batch)
        except (KeyError, TypeError, ValueError, WorkbenchError) as exc:
            trial.set_user_attr("reason", f"no usable figures: {short(exc)}")
            raise TrialFailed(str(exc)) from None
        for key, value in figures.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("duration_s", round(self.durations[-1], 2))
        within = within_budget(figures["drop_points"], self.settings.max_drop)
        self.rep.log(f"accelerate: trial {trial.number}: {figures['speedup']:.2f}x (CI {figures['ci95'][0]:.2f}–"
                     f"{figures['ci95'][1]:.2f}x) at {-figures['drop_points']:+.2f} points on validation"
                     + ("" if within else f", over the {self.settings.max_drop:g}-point budget"))
        return figures["speedup"], figures["drop_points"]

    def _duplicate(self, params: Mapping[str, Any], number: int) -> None:
        """The sampler proposed settings already run: queue their nearest untried neighbour instead."""
        self.duplicates_in_a_row += 1
        nearest = nearest_untried(params, self.space, tried_keys(self.study),
                                  random.Random(self.settings.seed * 100_003 + number))
        if nearest is None:
            self.exhausted = True
            return
        self.study.enqueue_trial(nearest, skip_if_exists=True)
        self.rep.log(f"accelerate: trial {number} repeated settings already run; next: {describe(nearest)}, "
                     "an untried neighbour of them")

    def _link(self, run_id: int, number: int) -> None:
        """The trial's run names its search (the runs table and report find trials by it)."""
        run = self.store.get_run(run_id)
        if run is None:
            return
        summary = dict(run.summary or {})
        summary["accelerate"] = {"search_run": self.search_run_id, "study": self.study.study_name, "trial": number}
        self.store.update_summary(run_id, summary)

    # -- the loop ---------------------------------------------------------------------------------
    def should_stop(self, reserve_s: float) -> str:
        """Why to start no further trial ('' = go on)."""
        if self.cancel.cancelled:
            return "cancelled"
        if self.settings.trials and self.finished_count() >= self.settings.trials:
            return f"{self.settings.trials} trials finished"
        # The next trial is expected to take as long as the slower half of those so far (pruned ones fine-tune).
        typical = statistics.quantiles(self.durations, n=4)[-1] if len(self.durations) >= 2 else (
            self.durations[0] if self.durations else 0.0)
        # The winner's bundle is a re-run of one trial without its fine-tuning: keep about a trial's time.
        reserve_s = max(reserve_s, statistics.median(self.durations)) if self.durations else reserve_s
        if time.monotonic() + typical + reserve_s > self.deadline:
            return "time budget reached"
        if self.exhausted or self.duplicates_in_a_row >= MAX_DUPLICATES_IN_A_ROW:
            return "every configuration in the space has been tried"
        return ""

    def run(self, reserve_s: float = 0.0) -> str:
        """Run trials one at a time until a stop reason; returns it."""
        import optuna

        reason = ""
        while not (reason := self.should_stop(reserve_s)):
            try:
                self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
            except Cancelled:
                return "cancelled"
            except optuna.exceptions.StorageInternalError as exc:  # pragma: no cover - database gone mid-search
                raise WorkbenchError(f"the study storage failed: {short(exc)}") from None
            if self.on_trial is not None:
                self.on_trial()
        return reason


def tried_keys(study: Any) -> set[Any]:
    """The settings of every trial that ran, runs, is queued or could not apply (failed ones included)."""
    return {params_key(t.system_attrs.get("fixed_params") or t.params) for t in study.get_trials(deepcopy=False)}


def duplicate_of(study: Any, number: int, params: Mapping[str, Any]) -> int | None:
    """The trial that already has (or is running) these settings, else None.

    Of two workers that drew the same settings at once, the lower trial number runs; failed trials do
    not count (a retry of a killed trial must run).
    """
    from optuna.trial import TrialState

    key = params_key(params)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)):
        if t.number == number or params_key(t.params) != key:
            continue
        if t.state == TrialState.RUNNING and t.number > number:
            continue
        if t.state == TrialState.PRUNED and str(t.user_attrs.get("reason", "")).startswith("same settings"):
            continue
        return t.number
    return None


# ------------------------------------------------------------------------------------------------ results


def trial_rows(study: Any, store: Any = None) -> list[dict[str, Any]]:
    """Every trial of the study as a plain row (the trials table, the Pareto chart, the report).

    With ``store``, a finished trial recorded before trials kept their reference time reads it from its run.
    """
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = dict(t.user_attrs)
        params = dict(t.params) or dict(t.system_attrs.get("fixed_params") or {})  # queued: its planned settings
        duration = attrs.get("duration_s")
        if duration is None and t.datetime_start and t.datetime_complete:
            duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 2)
        rows.append({
            "number": t.number, "state": t.state.name.lower(), "params": params,
            "label": attrs.get("label") or describe(params), "run_id": attrs.get("run_id"),
            "speedup": attrs.get("speedup"), "ci95": attrs.get("ci95"), "drop_points": attrs.get("drop_points"),
            "eval_drop_points": attrs.get("eval_drop_points"), "eval_accuracy": attrs.get("eval_accuracy"),
            "size_ratio": attrs.get("size_ratio"), "size_bytes": attrs.get("size_bytes"),
            "reliable": attrs.get("reliable"), "unreliable_reason": attrs.get("unreliable_reason", ""),
            "steps": attrs.get("steps") or [], "basis": attrs.get("basis", ""),
            "reference_ms": attrs.get("reference_ms"),
            "reason": attrs.get("reason", ""), "duration_s": duration,
            "worker": (attrs.get("worker") or {}).get("host", ""),
            "worker_pid": (attrs.get("worker") or {}).get("pid"),
        })
    if store is not None:
        for r in completed(rows):
            run = store.get_run(r["run_id"]) if r.get("reference_ms") is None and r.get("run_id") else None
            if run is not None:
                batch = int(r["params"].get("batch", 1)) if "throughput" in r.get("basis", "") else 1
                r["reference_ms"] = reference_ms(run.summary.get("speedup") or {}, batch)
    flag_reference_drift(rows)
    return rows


def completed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["state"] == "complete" and r["speedup"] is not None and r["drop_points"] is not None]


def best_trial(rows: list[dict[str, Any]], max_drop: float,
               front: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The fastest finished trial on the Pareto front within the budget, else None.

    "Fastest" is ranked by the lower end of the speed-up's 95 % CI (then the median, then the smaller
    drop): a trial timed while the machine was busy has a wide interval, and a lucky median must not
    beat a speed-up that is certain. Only trials on the front compete, so the winner is never one that
    another trial beats (more accurate and at least as fast). Trials whose timing is marked unreliable
    compete only when no reliable one is within the budget. ``front``: ``pareto_rows(rows)`` when the
    caller has it already.
    """
    on_front = {r["number"] for r in (pareto_rows(rows) if front is None else front)}
    ok = [r for r in completed(rows) if r["number"] in on_front and within_budget(r["drop_points"], max_drop)]
    ok = [r for r in ok if r.get("reliable") is not False] or ok  # a doubtful timing wins only when alone

    def rank(r: dict[str, Any]) -> tuple[float, float, float]:
        ci = r.get("ci95") or [r["speedup"], r["speedup"]]
        return (float(ci[0]), float(r["speedup"]), -float(r["drop_points"]))

    return max(ok, key=rank) if ok else None


def _dominates(b: Mapping[str, Any], a: Mapping[str, Any]) -> bool:
    """``b`` beats ``a`` for sure: as accurate and faster beyond both CIs, or more accurate and not slower.

    A trial whose timing is unreliable beats nothing (it may still be on the front itself).
    """
    if b.get("reliable") is False:
        return False
    a_hi = (a.get("ci95") or [a["speedup"]] * 2)[1]
    b_lo = (b.get("ci95") or [b["speedup"]] * 2)[0]
    if b["drop_points"] <= a["drop_points"] and b_lo > a_hi:
        return True
    return b["drop_points"] < a["drop_points"] and b["speedup"] >= a["speedup"]


def pareto_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished trials no other trial beats for sure on speed-up and accuracy drop, by drop then speed.

    Speed-ups are measured with a 95 % CI: two trials at the same accuracy whose intervals overlap are a
    tie, and both stay on the front (the chart shows which options the timing cannot tell apart).
    """
    done = completed(rows)
    front = [a for a in done if not any(b is not a and _dominates(b, a) for b in done)]
    return sorted(front, key=lambda r: (r["drop_points"], -r["speedup"]))


def points_delta(drop: float | None) -> str:
    """An accuracy drop shown as the change it is: '-0.83' lost, '+0.40' gained, '0.00' none ('' unknown)."""
    if drop is None:
        return ""
    change = -drop
    return "0.00" if abs(change) < 0.005 else f"{change:+.2f}"


def card_text(best: Mapping[str, Any], objective: Objective) -> str:
    """The Before → After headline: '5.5x faster (95 % CI 5.1–5.9x) at −0.4 points, 3.7x smaller: …'."""
    lo, hi = best["ci95"]
    drop = best.get("eval_drop_points")
    if drop is None:
        drop = best["drop_points"]
    what = "faster" if objective == "latency" else "more throughput"
    change = "no accuracy change" if abs(drop) < 0.05 else f"{-drop:+.1f} points"
    text = f"{best['speedup']:.1f}x {what} (95 % CI {lo:.1f}–{hi:.1f}x) at {change}"
    if best.get("size_ratio") and best["size_ratio"] > 1.05:
        text += f", {best['size_ratio']:.1f}x smaller"
    return f"{text}: {best['label']}"


# ------------------------------------------------------------------------------------------------ entry points


@dataclass
class AccelerateOutcome:
    run_id: int
    status: str
    summary: dict[str, Any]
    error: str = ""


def _base_weights(recipe: Recipe, store: Any, rep: Reporter, cancel: CancelToken,
                  stored: str) -> tuple[str, int | None]:
    """The weights every trial starts from (trained once here when the recipe trains); and that run's id."""
    from workbench.core.pipeline import weights_of_run

    if recipe.model.source == "onnx":
        return "", None
    if stored:
        if Path(stored).is_file():
            return stored, None
        rep.log(f"accelerate: the study's base weights {stored} are gone; training the base model again", "warning")
    if recipe.model.weights:
        w = recipe.model.weights
        return (str(weights_of_run(store, w)) if w.startswith("run:") else w), None
    if recipe.train.epochs == 0:
        rep.log("accelerate: train.epochs = 0 and no model.weights: trials start from untrained weights, so "
                "accuracy drops mean little", "warning")
        return "", None
    from workbench.techniques import run_recipe

    base = recipe.model_copy(deep=True)
    for name in ("distributed", "prune", "distill", "early_exit", "quantize", "export"):
        setattr(base, name, None)
    base.name = f"{recipe.model.label} · baseline (trained for Accelerate)"
    base.bench.enabled = False
    rep.log(f"accelerate: training the base model ({recipe.train.epochs} epoch(s)); every trial starts from it")
    outcome = run_recipe(base, store=store, reporter=rep, cancel=cancel)
    if outcome.status == "cancelled":
        raise Cancelled()
    if outcome.status != "completed":
        raise WorkbenchError(f"training the base model failed (run {outcome.run_id}): {outcome.error}")
    return str(weights_of_run(store, f"run:{outcome.run_id}")), outcome.run_id


def run_search(
    recipe: Recipe,
    settings: SearchSettings,
    *,
    store: Any = None,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> AccelerateOutcome:
    """Search, choose, bundle; recorded as one run of kind ``accelerate`` (never raises for run failures)."""
    from workbench.core.store import RunStore, StoreReporter

    store = store or RunStore()
    cancel = cancel or CancelToken()
    outer = reporter or Reporter()
    t_start = time.monotonic()
    deadline = t_start + settings.time_budget_s
    name = f"{recipe.model.label} · Accelerate ({settings.objective}, ≤ {settings.max_drop:g} pts)"
    run_id = store.create_run(name, dumps_recipe(recipe), recipe.model.label, ["accelerate"], kind="accelerate")
    rep = MultiReporter([StoreReporter(store, run_id), outer])
    hook = getattr(outer, "run_started", None)
    if callable(hook):
        hook(run_id, name)
    summary: dict[str, Any] = {"run_id": run_id, "name": name, "kind": "accelerate", "techniques": ["accelerate"],
                               "environment": environment(), "accelerate": {"settings": asdict(settings)}}
    acc = summary["accelerate"]
    try:
        with relay_warnings(rep):
            storage_url = settings.storage or study_mod.default_storage_url()
            storage = study_mod.open_storage(storage_url)
            study_name = settings.study or (f"{_slug(recipe.name)}-{settings.objective}-"
                                            f"{study_fingerprint(recipe, settings.objective, settings.max_drop)}")
            study = study_mod.create_or_load(study_name, storage, _constraints(settings.max_drop), settings.seed)
            acc.update(study=study_name, storage=_redact(storage_url))
            resumed = len(study.trials)
            if resumed:
                recovered = study_mod.recover_dead_workers(study)
                rep.log(f"accelerate: resuming study {study_name!r}: {len(completed(trial_rows(study)))} finished "
                        f"trial(s) kept" + (f"; trial(s) {', '.join(map(str, recovered))} ended with their process "
                                             "and are queued again" if recovered else ""))
            stored_weights = str(study.user_attrs.get("base_weights", ""))
            weights, base_run = _base_weights(recipe, store, rep, cancel, stored_weights)
            if base_run is not None:
                acc["base_run"] = base_run
            ref_recipe = recipe.model_copy(deep=True)
            if weights:
                ref_recipe.model.weights = weights
            ref_recipe.train.epochs = 0
            rep.stage_started("accelerate:reference")
            ref, ctx = load_reference(ref_recipe, rep, cancel)
            caps = capabilities(ctx)
            reference_batch = max(recipe.bench.batch_sizes)
            rep.stage_finished("accelerate:reference", {"val_accuracy": ref.val_accuracy})
            acc["reference"] = {"label": ref.label, "val_accuracy": ref.val_accuracy, "eval_accuracy":
                                ref.eval_accuracy, "size_bytes": ref.size_bytes, "weights": weights,
                                "batch": 1 if settings.objective == "latency" else reference_batch}
            acc["absent"] = list(caps.absent)
            for line in caps.absent:
                rep.log(f"accelerate: not in the search: {line}")
            if not resumed:
                study.set_user_attr("recipe", dumps_recipe(recipe))
                study.set_user_attr("settings", {"objective": settings.objective, "max_drop": settings.max_drop,
                                                 "finetune_epochs": settings.finetune_epochs})
                study.set_user_attr("base_weights", weights)
                for params in cheap_first(caps, settings.objective):
                    study.enqueue_trial(params, skip_if_exists=True)
            elif weights != stored_weights:
                study.set_user_attr("base_weights", weights)
            plan = TrialPlan(settings.objective, weights, reference_batch, settings.finetune_epochs)

            def publish() -> None:
                """The trials so far into the search's stored summary; the GUI redraws on this stage event."""
                _fill_results(acc, study, settings)
                store.update_summary(run_id, summary)
                rep.stage_finished(TRIALS_STAGE, dict(acc.get("counts") or {}))

            publish()  # the queued trials show at once

            searcher = Searcher(study=study, base=recipe, plan=plan, caps=caps, ref=ref, settings=settings,
                                store=store, reporter=rep, cancel=cancel, deadline=deadline, search_run_id=run_id,
                                on_trial=publish)
            stop = searcher.run(reserve_s=BUNDLE_RESERVE_S)
            acc["stopped"] = stop
            rep.log(f"accelerate: search stopped: {stop}")
            if stop == "cancelled":
                raise Cancelled()
            publish()
            best = acc.get("best")
            if best is None:
                rep.log(f"accelerate: no trial is within {settings.max_drop:g} points on validation; the Pareto "
                        "front shows the trade-offs found", "warning")
            else:
                rep.log(f"accelerate: Before → After: {acc['card']}")
                bundle = _write_bundle(recipe, best, settings, plan, ref, store, rep, cancel, run_id)
                acc["bundle"] = bundle
            acc["elapsed_s"] = round(time.monotonic() - t_start, 1)
        summary["status"] = "completed"
        store.finish_run(run_id, "completed", summary)
        return AccelerateOutcome(run_id, "completed", summary)
    except (KeyboardInterrupt, SystemExit) as exc:
        out: RunOutcome = record_process_exit(store, run_id, summary, rep, exc)
        return AccelerateOutcome(run_id, out.status, summary, out.error)
    except Exception as exc:
        out = record_unfinished_run(store, run_id, summary, rep, exc)
        return AccelerateOutcome(run_id, out.status, summary, out.error)


def _fill_results(acc: dict[str, Any], study: Any, settings: SearchSettings, store: Any = None) -> None:
    rows = trial_rows(study, store)
    acc["trials"] = rows
    front = pareto_rows(rows)
    acc["pareto"] = [r["number"] for r in front]
    best = best_trial(rows, settings.max_drop, front)
    acc["best"] = best
    acc["card"] = card_text(best, settings.objective) if best else ""
    acc["counts"] = {s: sum(1 for r in rows if r["state"] == s) for s in ("complete", "pruned", "fail", "running")}


def _write_bundle(recipe: Recipe, best: Mapping[str, Any], settings: SearchSettings, plan: TrialPlan, ref: Reference,
                  store: Any, rep: Reporter, cancel: CancelToken, search_run_id: int) -> dict[str, Any]:
    """Re-run the winner from its own trial weights with ``[export]`` into a deployment bundle (parity checked)."""
    from workbench.core.paths import artifacts_dir
    from workbench.techniques import run_recipe
    from workbench.techniques.export.config import ExportSection

    params = dict(best["params"])
    target = settings.bundle_dir or str(artifacts_dir(search_run_id) / "bundle")
    again = trial_recipe(recipe, {**params, "prune": 0.0}, plan)  # the pruned weights are loaded below
    if recipe.model.source != "onnx" and best.get("run_id") is not None:
        again.model.weights = f"run:{best['run_id']}"
    again.name = f"{recipe.model.label} · {best['label']} (Accelerate's choice, bundled)"
    formats: list[Any] = ["onnx"] if recipe.model.source == "onnx" else ["onnx", "safetensors"]
    again.export = ExportSection(formats=formats, bundle_dir=target, force=settings.force, parity_batches=2)
    again.bench.paired = False  # the winner's speed was measured paired in its trial; this run writes files
    rep.log(f"accelerate: writing the winner's deployment bundle to {target}")
    outcome = run_recipe(again, store=store, reporter=rep, cancel=cancel)
    if outcome.status == "cancelled":
        raise Cancelled()
    if outcome.status != "completed":
        rep.log(f"accelerate: the bundle could not be written: {outcome.error}", "warning")
        return {"run_id": outcome.run_id, "error": outcome.error}
    export = next((s for s in outcome.summary.get("stages", []) if s.get("name") == "export"), {})
    parity = export.get("parity") or {}
    note = ""
    if params.get("runtime") != "onnxruntime":
        note = (f"the chosen model runs in {describe({**params, 'prune': 0.0})}; the bundle's model.onnx is its "
                "fp32 export for onnxruntime, weights.safetensors the trained weights")
    return {"run_id": outcome.run_id, "path": export.get("bundle"), "parity": parity, "note": note}


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:40] or "search"


def _redact(url: str) -> str:
    """A storage URL without its password (it is stored in summaries and shown)."""
    import re

    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)


# ------------------------------------------------------------------------------------------------ workers


def run_worker(
    study_name: str,
    storage_url: str,
    *,
    time_budget_s: float,
    trials: int = 0,
    store: Any = None,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Join an existing study and run trials (no base training, no bundle): the scale-out half."""
    from workbench.core.store import RunStore
    from workbench.recipe import loads_recipe

    store = store or RunStore()
    cancel = cancel or CancelToken()
    rep = reporter or Reporter()
    storage = study_mod.open_storage(storage_url)
    probe = study_mod.load_existing(study_name, storage, lambda t: [0.0], 0)
    attrs = probe.user_attrs
    if "recipe" not in attrs or "settings" not in attrs:
        raise WorkbenchError(f"study {study_name!r} was not started by `workbench accelerate` (it has no recipe)")
    recipe = loads_recipe(str(attrs["recipe"]), f"study {study_name}")
    s = dict(attrs["settings"])
    settings = SearchSettings(objective=s["objective"], max_drop=float(s["max_drop"]), time_budget_s=time_budget_s,
                              trials=trials, storage=storage_url, study=study_name,
                              finetune_epochs=int(s.get("finetune_epochs", 2)))
    study = study_mod.create_or_load(study_name, storage, _constraints(settings.max_drop), seed=0)
    weights = str(attrs.get("base_weights", ""))
    if weights and not Path(weights).is_file():
        raise WorkbenchError(f"study {study_name!r}: its base weights {short(weights)} are not on this machine; put "
                             "them at the same path (a shared folder) or start the search with model.weights "
                             "pointing at a file every machine has")
    study_mod.recover_dead_workers(study)
    ref_recipe = recipe.model_copy(deep=True)
    if weights:
        ref_recipe.model.weights = weights
    ref_recipe.train.epochs = 0
    ref, ctx = load_reference(ref_recipe, rep, cancel)
    plan = TrialPlan(settings.objective, weights, max(recipe.bench.batch_sizes), settings.finetune_epochs)
    searcher = Searcher(study=study, base=recipe, plan=plan, caps=capabilities(ctx), ref=ref, settings=settings,
                        store=store, reporter=rep, cancel=cancel, deadline=time.monotonic() + time_budget_s,
                        search_run_id=None)
    stop = searcher.run()
    return {"study": study_name, "trials_run": searcher.ran, "stopped": stop}
