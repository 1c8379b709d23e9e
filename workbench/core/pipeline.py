"""Runs a recipe: load → (max batch) → train → measure baseline → optimization stages → measure final.

The CLI and the GUI both call ``run_recipe``; the only difference is the reporter they pass.
Optimization techniques plug in as ``Stage`` entries that the caller passes (``workbench.techniques``
holds the one ordered list). A stage receives the ``RunContext``, replaces
``ctx.module`` (or sets ``ctx.onnx_path``) with its result and returns its own before/after figures.
"""

from __future__ import annotations

import json
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench import __version__
from workbench.core.events import CancelToken, MultiReporter, Reporter, relay_warnings
from workbench.core.measure.paired import (
    ThreadChoice,
    choose_threads,
)
from workbench.core.paths import artifacts_dir, workbench_home
from workbench.core.precision import PrecisionPlan, prepare_module, resolve_precision, unwrap
from workbench.core.store import RunStore, StoreReporter
from workbench.core.telemetry import device_description
from workbench.errors import Cancelled, ModelLoadError, RecipeError, WorkbenchError, short
from workbench.recipe import Recipe, check_device_support, dumps_recipe


@dataclass
class Checkpoint:
    """A model kept for the paired before/after timing at the end of a run."""

    step: str
    label: str
    module: nn.Module | None = None
    onnx_path: Path | None = None
    precision_plan: bool = True
    #: Its time depends on the input (early exits): timed on streams of real eval samples, not one batch.
    dynamic: bool = False

    @property
    def runtime_kind(self) -> str:
        return "onnxruntime" if self.onnx_path is not None else "torch"


@dataclass
class RunContext:
    """Everything a stage may read or replace while a recipe runs."""

    recipe: Recipe
    store: RunStore
    run_id: int
    reporter: Reporter
    cancel: CancelToken
    plan: PrecisionPlan
    data: Any = None  # DatasetBundle
    loaded: Any = None  # LoadedModel
    module: nn.Module | None = None
    onnx_path: Path | None = None
    train_result: Any = None
    train_loader: Any = None
    val_loader: Any = None  # choose on this (accuracy budgets, per-epoch curves) ...
    eval_loader: Any = None  # ... and report on this
    baseline: dict[str, Any] | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    #: The intra-op thread count of this run (chosen once, so every timing uses the same one).
    threads: ThreadChoice | None = None
    #: The models a paired timing compares at the end: the baseline, then each stage's result.
    checkpoints: list[Checkpoint] = field(default_factory=list)

    @property
    def artifacts(self) -> Path:
        return artifacts_dir(self.run_id)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.data.input_shape)

    def measure(self, label: str, *, module: nn.Module | None = None, onnx_path: Path | None = None,
                train_samples_per_s: float | None = None) -> dict[str, Any]:
        """Accuracy on the eval split plus honest latency/throughput for a torch module or an ONNX file."""
        from workbench.core.measure.figures import measure_model

        return measure_model(self, label, module=module, onnx_path=onnx_path,
                             train_samples_per_s=train_samples_per_s)

    @property
    def thread_count(self) -> int:
        """Threads for torch and onnxruntime timings in this run (0 = leave each runtime's default)."""
        return self.threads.threads if self.threads is not None else self.recipe.bench.threads

    def add_checkpoint(self, step: str, label: str, *, module: nn.Module | None = None,
                       onnx_path: Path | None = None, precision_plan: bool = True, dynamic: bool = False) -> None:
        """Record a model the paired timing at the end compares (the baseline first, then each step's result).

        ``step`` names what produced it ("baseline", "prune", "runtime switch", "quantize", ...), ``label``
        what it is ("torch eager fp32", "onnxruntime static INT8"). ``precision_plan`` = False times a
        torch module without the run's autocast/channels_last (e.g. a quantized module).
        """
        if (module is None) == (onnx_path is None):
            raise ValueError("a checkpoint is either a torch module or an ONNX file")
        self.checkpoints.append(Checkpoint(step, label, module, onnx_path, precision_plan, dynamic))

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None

    def save_weights(self, module: nn.Module, name: str = "weights") -> Path:
        from workbench.core.models import save_weights

        path = self.artifacts / f"{name}.safetensors"
        label = (self.summary.get("model") or {}).get("name") or self.recipe.model.label
        save_weights(unwrap(module), path, model_name=label)
        self.store.add_artifact(self.run_id, "weights", path, {"name": name, "model": label})
        return path


@dataclass
class Stage:
    """One technique's part in a run.

    An optimization step has ``run(ctx)``, returning a dict with at least ``name``, ``before`` and
    ``after``. A training-time technique (data-parallel training) has no ``run`` and acts through
    ``before_train``/``after_train`` around the pipeline's training step.
    """

    name: str
    applies: Callable[[Recipe], bool]
    run: Callable[[RunContext], dict[str, Any]] | None = None
    #: The stage trains the model itself (distillation: the student learns from a teacher), so the
    #: pipeline skips its own [train] step and baseline measurement; the stage sets ``ctx.baseline``.
    owns_training: bool = False
    #: Checks to run before anything is recorded or computed (e.g. that an output folder can be written).
    preflight: Callable[[Recipe], None] | None = None
    #: Called just before / after the pipeline's own training step (e.g. wrap and unwrap the model).
    before_train: Callable[[RunContext], None] | None = None
    after_train: Callable[[RunContext], None] | None = None
    #: The stage works on models with named token inputs (``forward(input_ids, attention_mask, ...)``).
    token_inputs: bool = False
    #: Checks that need the loaded data and model, before training (e.g. what a token model cannot do).
    check_loaded: Callable[[RunContext], None] | None = None


@dataclass
class RunOutcome:
    run_id: int
    status: str
    summary: dict[str, Any]
    error: str = ""
    exception: BaseException | None = None
    traceback_path: Path | None = None


def run_recipe(
    recipe: Recipe,
    *,
    store: RunStore | None = None,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
    benchmark_only: bool = False,
    stages: Sequence[Stage] = (),
    run_id: int | None = None,
    reference: Checkpoint | None = None,
) -> RunOutcome:
    """Run a whole recipe and record it. Never raises for run failures: the outcome says what happened.

    ``stages`` are the techniques in chain order; core knows none of them, so callers use
    ``workbench.techniques.run_recipe``, which passes every technique's stage. ``run_id`` records into
    a run another process already created (the launcher of a data-parallel run) instead of a new one.
    ``reference`` is a model the paired timing puts first, in place of the run's own baseline when that is
    the same configuration (a search times every trial against one fp32 eager model); the run's baseline,
    when it differs (bf16, channels_last, compile), becomes a step of its own, so the split says what the
    precision bought.
    """
    store = store or RunStore()
    cancel = cancel or CancelToken()
    outer = reporter or Reporter()
    check_device_support(recipe, torch.cuda.is_available())  # before anything is recorded
    if recipe.precision.compile or "compile" in recipe.bench.runtimes:
        # A fresh compile cache per run: runs in one process (a search's trials) otherwise pile up guards
        # on the same forward until dynamo's recompile limit, after which it silently runs eager.
        from torch import _dynamo

        _dynamo.reset()
    name = run_display_name(recipe, benchmark_only)
    if run_id is None:
        run_id = store.create_run(name, dumps_recipe(recipe), recipe_model_label(recipe), recipe.techniques)
    rep = MultiReporter([StoreReporter(store, run_id), outer])
    run_started = getattr(outer, "run_started", None)
    if callable(run_started):
        run_started(run_id, name)
    summary: dict[str, Any] = {"run_id": run_id, "name": name, "techniques": recipe.techniques,
                               "techniques_ran": [], "environment": environment()}
    sampler = None
    threads_before = torch.get_num_threads()  # process-wide: restored below so later jobs do not inherit it
    try:
        with relay_warnings(rep):
            plan = resolve_precision(recipe.precision)
            # Chosen once for the whole run (training and every timing), and recorded: a thread count
            # above the free cores turns intra-op barriers into waits on a busy machine.
            threads = choose_threads(recipe.bench.threads)
            torch.set_num_threads(threads.threads)
            summary["environment"]["threads"] = threads.to_dict()
            rep.log(f"threads: {threads.reason}")
            ctx = RunContext(recipe, store, run_id, rep, cancel, plan, summary=summary, threads=threads)
            sampler = _start_telemetry(recipe, rep)
            summary["environment"]["device"] = device_description()
            _run_stages(ctx, benchmark_only, stages, reference)
        summary["status"] = "completed"
        store.finish_run(run_id, "completed", summary, techniques=summary["techniques_ran"])
        return RunOutcome(run_id, "completed", summary)
    except (KeyboardInterrupt, SystemExit) as exc:
        return record_process_exit(store, run_id, summary, rep, exc)
    except Exception as exc:
        return record_unfinished_run(store, run_id, summary, rep, exc)
    finally:
        if sampler is not None:
            sampler.stop()
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)  # a run's choice must not leak into later jobs


def record_process_exit(store: RunStore, run_id: int, summary: dict[str, Any], rep: Reporter,
                        exc: KeyboardInterrupt | SystemExit) -> RunOutcome:
    """Ctrl-C (KeyboardInterrupt) is recorded as ``cancelled`` and re-raised so the CLI exits 130;
    ``sys.exit()`` called by user model code mid-run is a failed run with one line, not a dead process."""
    if isinstance(exc, KeyboardInterrupt):
        record_unfinished_run(store, run_id, summary, rep, Cancelled())
        raise exc
    code = f"sys.exit({exc.code!r})" if exc.code is not None else "sys.exit()"
    return record_unfinished_run(store, run_id, summary, rep, WorkbenchError(
        f"model code called {short(code)} during the run; remove that call from the model file"))


def record_unfinished_run(store: RunStore, run_id: int, summary: dict[str, Any], rep: Reporter,
                          exc: Exception) -> RunOutcome:
    """Record a run that did not complete: cancelled, a user error (one line), or an internal error.

    An internal error keeps its full traceback in the error log and gives the user one line saying where.
    """
    traceback_path = None
    if isinstance(exc, Cancelled):
        status, message, level = "cancelled", "cancelled by user", "warning"
    elif isinstance(exc, WorkbenchError | FloatingPointError):
        status, level = "failed", "error"
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        traceback_path = log_internal_error(exc)
        status, level = "failed", "error"
        message = f"internal error: {type(exc).__name__}: {exc} (full traceback in {traceback_path})"
    summary["status"] = status
    store.finish_run(run_id, status, summary, message, techniques=summary.get("techniques_ran"))
    rep.log(message, level)
    return RunOutcome(run_id, status, summary, message, None if status == "cancelled" else exc, traceback_path)


def _run_stages(ctx: RunContext, benchmark_only: bool, all_stages: Sequence[Stage],
                reference: Checkpoint | None = None) -> None:
    recipe, rep = ctx.recipe, ctx.reporter
    applying = [] if benchmark_only else [s for s in all_stages if s.applies(recipe)]
    for stage in applying:
        if stage.preflight is not None:
            stage.preflight(recipe)  # before any work: e.g. an export folder that cannot be written
    stages = [s for s in applying if s.run is not None]  # the optimization chain
    _stage_load(ctx)
    check_token_stages(ctx, applying, all_stages)
    if recipe.batching.find_max_batch and ctx.module is not None:
        from workbench.core.batching import find_max_batch

        res = find_max_batch(ctx.module, ctx.input_shape, ctx.plan,
                             budget_bytes=int(recipe.batching.memory_budget_gb * 2**30),
                             safety_margin=recipe.batching.safety_margin, start=2, reporter=rep,
                             cancel=ctx.cancel)  # start at 2: BatchNorm cannot train on one sample
        ctx.summary["max_batch"] = res.to_dict()
        if res.max_batch == 0:  # training would only die later with an allocation error
            raise WorkbenchError(
                f"batching.find_max_batch: even a training batch of 2 does not fit in the "
                f"{res.budget_bytes / 2**30:.2f} GiB memory budget (batching.memory_budget_gb = "
                f"{recipe.batching.memory_budget_gb:g}, 0 = half the free memory); raise the budget, or make the "
                "model (model.width) or the inputs (data.image_size) smaller")
    owned = any(s.owns_training for s in stages)
    trains = recipe.train.epochs > 0 and not benchmark_only
    # What is in effect from here on (the table shows what ran, not what the recipe asked for).
    labels = dict(recipe.section_techniques())
    ran: list[str] = ctx.summary.setdefault("techniques_ran", [])
    ran += recipe.runtime_techniques(trained=trains)
    ran += [labels[s.name] for s in applying if s.run is None and trains and not owned and s.name in labels]
    if trains and not owned:
        train_with_hooks(ctx, applying)
    train_sps = ctx.train_result.train_samples_per_s if ctx.train_result else None
    if ctx.baseline is None and not owned:
        ctx.baseline = ctx.measure("baseline", module=ctx.module, onnx_path=ctx.onnx_path,
                                   train_samples_per_s=train_sps)
        if ctx.module is not None:
            ctx.add_checkpoint("baseline", f"torch eager {ctx.plan.label}", module=ctx.module)
        elif ctx.onnx_path is not None:
            ctx.add_checkpoint("baseline", "onnxruntime", onnx_path=ctx.onnx_path)
    ctx.store.update_summary(ctx.run_id, {**ctx.summary, "baseline": ctx.baseline})
    for stage in stages:
        ctx.cancel.raise_if_cancelled()
        rep.stage_started(stage.name)
        assert stage.run is not None
        record = stage.run(ctx)
        record.setdefault("name", stage.name)
        ran.append(record.pop("technique_label", None) or labels.get(stage.name, stage.name))
        ctx.stages.append(record)
        ctx.summary["stages"] = ctx.stages
        ctx.store.update_summary(ctx.run_id, ctx.summary)
        rep.stage_finished(stage.name, record)
    if stages:
        final = ctx.stages[-1].get("after") or ctx.measure("final", module=ctx.module, onnx_path=ctx.onnx_path)
        ctx.summary["baseline"] = ctx.baseline
        ctx.summary["final"] = final
    else:
        ctx.summary["final"] = ctx.baseline
    ctx.summary["stages"] = ctx.stages
    if ctx.module is not None and ctx.loaded.kind != "onnx" and not benchmark_only:
        ctx.save_weights(ctx.module)
    if reference is not None:
        _put_reference_first(ctx, reference)
    if stages or reference is not None:
        from workbench.core.measure.figures import paired_speedup

        speedup = paired_speedup(ctx)
        if speedup is not None:
            ctx.summary["speedup"] = speedup


def _put_reference_first(ctx: RunContext, reference: Checkpoint) -> None:
    """The reference leads the paired timing; the run's own baseline stays only when it is a different model.

    Same label (e.g. both "torch eager fp32"): the run's baseline is the reference's configuration, timed
    once. Different (the run trains or runs in bf16, channels_last or compiled): it is the first step.
    """
    if ctx.checkpoints and ctx.checkpoints[0].step == "baseline":
        own = ctx.checkpoints[0]
        if own.label == reference.label:
            ctx.checkpoints.pop(0)
        else:
            own.step = "precision" if not ctx.recipe.precision.compile else "runtime options"
    ctx.checkpoints.insert(0, reference)


def _stage_load(ctx: RunContext) -> None:
    from workbench.core.data import load_dataset
    from workbench.core.models import (
        check_model_data_compat,
        load_model,
        summarize,
        summarize_onnx,
    )

    recipe, rep = ctx.recipe, ctx.reporter
    rep.stage_started("load")
    rep.progress(0, None, "loading data")
    ctx.data = load_dataset(recipe.data)
    rep.log(f"data: {ctx.data.source_desc}: {len(ctx.data.train)} train / {len(ctx.data.val)} val / "
            f"{len(ctx.data.eval)} eval samples, "
            f"{ctx.data.num_classes} classes, input {list(ctx.data.input_shape)}")
    ctx.cancel.raise_if_cancelled()
    rep.progress(0, None, "loading model")
    torch.manual_seed(recipe.train.seed)  # the initial weights are part of a reproducible run
    ctx.loaded = load_model(recipe.model, ctx.data.num_classes, ctx.input_shape)
    if recipe.model.weights.startswith("run:"):
        from workbench.core.models.resize import load_pruned_weights  # a run's weights may be pruned

        resized = load_pruned_weights(ctx.loaded.module, weights_of_run(ctx.store, recipe.model.weights))
        if resized:
            rep.log(f"weights of {recipe.model.weights} are pruned: resized {len(resized)} layers to match")
    if ctx.data.kind == "tokens":
        _wrap_token_model(ctx)
    check_model_data_compat(ctx.loaded, ctx.data.num_classes, ctx.input_shape)
    if ctx.loaded.kind == "onnx":
        ctx.onnx_path = ctx.loaded.onnx_path
        model_summary = summarize_onnx(ctx.onnx_path)
    else:
        model_summary = summarize(ctx.loaded.module, ctx.input_shape)
        ctx.module = prepare_module(ctx.loaded.module, ctx.plan)
    ctx.summary["model"] = model_summary.to_dict()
    ctx.summary["model"]["name"] = model_name(recipe, ctx.loaded)
    ctx.summary["data"] = {"source": recipe.data.source, "description": ctx.data.source_desc,
                           "num_classes": ctx.data.num_classes, "input_shape": list(ctx.input_shape),
                           "train_samples": len(ctx.data.train), "val_samples": len(ctx.data.val),
                           "eval_samples": len(ctx.data.eval),
                           "kind": ctx.data.kind}
    ctx.summary["precision"] = ctx.plan.label
    rep.log(f"model: {ctx.loaded.description or recipe.model.zoo}: {model_summary.params:,} params, "
            f"{(model_summary.macs or 0) / 1e6:.1f} M MACs, {model_summary.size_bytes / 1e6:.2f} MB")
    ctx.val_loader = split_loader(ctx, train=False, dataset=ctx.data.val)
    ctx.eval_loader = split_loader(ctx, train=False)
    rep.stage_finished("load", {"model": ctx.summary["model"]["params"]})


def _wrap_token_model(ctx: RunContext) -> None:
    """Token data: the model takes named arguments (``forward(input_ids, attention_mask, ...)``).

    Training, evaluation, timing, quantization and export run through ``TokenInputs`` (ONNX files
    take the named inputs); ONNX token models are refused with the route that works for them.
    """
    from workbench.core.models.token_inputs import wrap_for_tokens

    recipe = ctx.recipe
    path = recipe.data.path
    if ctx.loaded.module is None or ctx.loaded.kind == "onnx":
        raise RecipeError(f"data.path {path}: token data runs PyTorch models (model.source = 'python' or 'zoo'); "
                          "for an ONNX token model use `workbench bench MODEL.onnx --data TOKENS.npz` or "
                          "`workbench quantize MODEL.onnx --calib TOKENS.npz`")
    ctx.loaded.module = wrap_for_tokens(ctx.loaded.module, ctx.data.preprocess["token_inputs"],
                                        f"model.path {recipe.model.path or recipe.model.zoo}")
    ctx.reporter.log(f"token model: forward({', '.join(ctx.loaded.module.used)}) fed from {path}; synthetic "
                     f"timing inputs: ids in 1..{ctx.loaded.module.vocab - 1}, all-ones mask, zero token types")


def check_token_stages(ctx: RunContext, stages: Sequence[Any], known: Sequence[Any] = ()) -> None:
    """Token data: refuse the stages that cannot take named token inputs, and run the others' own checks.

    Up front, after loading and before any training: a stage says ``token_inputs = True`` when it works
    on such models, and its ``check_loaded`` refuses what it cannot do with them (one line each).
    """
    if ctx.data is None or ctx.data.kind != "tokens":
        return
    refused = [s for s in stages if not s.token_inputs]
    if refused:
        names = ", ".join(f"[{s.name}]" for s in refused)
        able = " and ".join(f"[{s.name}]" for s in known if s.token_inputs)
        raise RecipeError(f"{names} with token data ({ctx.recipe.data.path}): a run trains, scores and times "
                          "PyTorch token models" + (f" and applies {able} to them" if able else "") + "; remove "
                          f"{'that section' if len(refused) == 1 else 'those sections'} for token data")
    for stage in stages:
        if stage.check_loaded is not None:
            stage.check_loaded(ctx)


def split_loader(ctx: RunContext, train: bool, dataset: Any = None) -> Any:
    """The train loader, or an inference loader over ``dataset`` (default: the eval split)."""
    from workbench.core.data import build_loader

    b = ctx.recipe.batching
    if dataset is None:
        dataset = ctx.data.train if train else ctx.data.eval
    size = b.batch_size if train else b.eval_batch_size
    return build_loader(dataset, size, ctx.recipe.loader, train=train, seed=ctx.recipe.train.seed,
                        length_aware=b.length_aware)


def train_with_hooks(ctx: RunContext, stages: Sequence[Stage]) -> None:
    """The training step between the applying stages' ``before_train`` and ``after_train`` hooks.

    ``after_train`` runs only when training succeeded: it may talk to other processes (DDP ranks
    gather checksums), and a rank whose training raised must leave at once, not wait for its peers.
    """
    hooked = [s for s in stages if s.before_train is not None or s.after_train is not None]
    for stage in hooked:
        if stage.before_train is not None:
            stage.before_train(ctx)
    _stage_train(ctx)
    for stage in reversed(hooked):
        if stage.after_train is not None:
            stage.after_train(ctx)


def load_for_training(recipe: Recipe, store: RunStore | None, reporter: Reporter, cancel: CancelToken,
                      run_id: int = 0) -> RunContext:
    """Data, model and loaders as a run has them, without recording anything (other ranks of a DDP run)."""
    plan = resolve_precision(recipe.precision)
    ctx = RunContext(recipe, store, run_id, reporter, cancel, plan)  # type: ignore[arg-type]
    _stage_load(ctx)
    return ctx


def _stage_train(ctx: RunContext) -> None:
    from workbench.core.train import train

    if ctx.module is None or not ctx.loaded.trainable:
        raise RecipeError(f"model.source = {ctx.recipe.model.source!r} cannot be trained here; "
                          "set train.epochs = 0 to evaluate and benchmark it")
    if ctx.train_loader is None:
        ctx.train_loader = split_loader(ctx, train=True)
    if len(ctx.train_loader) == 0:
        raise RecipeError(f"batching.batch_size = {ctx.recipe.batching.batch_size} is larger than the "
                          f"{len(ctx.data.train)} training samples with loader.drop_last = true; lower it")
    ctx.train_result = train(ctx.module, ctx.train_loader, ctx.val_loader, ctx.recipe.train, ctx.recipe.batching,
                             ctx.plan, ctx.reporter, ctx.cancel)
    ctx.summary["train"] = ctx.train_result.to_dict()
    from workbench.core.diagnose import loader_verdict

    verdict = loader_verdict(ctx.train_result.data_wait_s, ctx.train_result.compute_s, ctx.recipe)
    ctx.summary["loader_verdict"] = verdict.to_dict()
    ctx.reporter.log(verdict.message)


def weights_of_run(store: RunStore, ref: str) -> Path:
    """Resolve ``run:ID`` to that run's trained weights (safetensors)."""
    raw = ref.removeprefix("run:")
    if not raw.isdigit():
        raise ModelLoadError(f"{ref!r}: a run reference is run:ID with a numeric ID (see `workbench runs`)")
    run = store.get_run(int(raw))
    if run is None:
        raise ModelLoadError(f"{ref!r}: no run with ID {raw} in the store (see `workbench runs`)")
    arts = store.artifacts(int(raw), "weights")
    if not arts or not arts[-1].path.exists():
        raise ModelLoadError(f"{ref!r}: run {raw} ({run.status}) has no saved weights; only completed training runs do")
    return arts[-1].path


#: Recipe names that say nothing about a run (the defaults): such runs are named from what they did.
GENERIC_RECIPE_NAMES = frozenset({"", "experiment", "quickstart"})


def run_display_name(recipe: Recipe, benchmark_only: bool = False) -> str:
    """A run's name in the runs table: the recipe's own name, or (for a default name) what the run did,
    e.g. 'small_cnn · int8-static' rather than every run called 'quickstart'."""
    if recipe.name.strip() not in GENERIC_RECIPE_NAMES:
        return recipe.name
    what = ", ".join(recipe.techniques) or "fp32"
    if benchmark_only:
        what = f"benchmark, {what}"
    elif recipe.train.epochs:
        what = f"{recipe.train.epochs} epoch(s), {what}"
    return f"{recipe.model.label} · {what}"


def recipe_model_label(recipe: Recipe) -> str:
    """How a run's model is named in the runs table (zoo name, or class and file)."""
    return recipe.model.label


def model_name(recipe: Recipe, loaded: Any) -> str:
    """The model's name in summaries, weights metadata and bundles: the zoo name, or e.g. 'ResNet18 from resnet.py'."""
    return recipe.model.zoo if recipe.model.source == "zoo" else (loaded.label or recipe.model.label)


def _start_telemetry(recipe: Recipe, rep: Reporter) -> Any:
    from workbench.core.telemetry import TelemetrySampler

    counter = iter(range(1 << 62))
    sampler = TelemetrySampler(hz=recipe.bench.telemetry_hz,
                               on_sample=lambda s: rep.metrics("telemetry", next(counter), s), reporter=rep)
    sampler.start()
    return sampler


def environment() -> dict[str, Any]:
    """Versions and hardware: printed in summaries and reports so numbers can be reproduced."""
    import onnxruntime

    env = {"workbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
           "cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def log_internal_error(exc: BaseException) -> Path:
    path = workbench_home() / "logs" / "errors.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
        f.write("".join(traceback.format_exception(exc)))
    return path


def summary_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, default=str)
