"""The ``[early_exit]`` stage: attach exit heads, train them, choose the threshold on validation, measure.

1. Cut the trained model at the exit points and attach a head after each (``exits.EarlyExitModel``).
2. Train: jointly (every exit's weighted cross-entropy, BranchyNet) or the heads alone on a frozen
   backbone, for ``early_exit.epochs`` at ``early_exit.lr``.
3. Replay every exit's confidence on the **validation** split and keep the cheapest threshold whose
   accuracy stays within ``max_drop`` points of the full model (``exits.choose_threshold``); the
   accuracy-vs-cost curve over thresholds is recorded for the panel and the report.
4. Report on the **eval** split: accuracy, the share of samples leaving at each exit, mean MACs per
   sample, and batch-1 latency (mean and p95 over real eval samples) against the full model, timed
   paired on the same stream of samples.
5. Write the ONNX segments + runner, checked for parity against the PyTorch early-exit model.

The result becomes ``ctx.module`` (``EarlyExitInference``: dynamic inference at the chosen threshold),
so the run's final figures and paired timing are the early-exit model's; it is marked *dynamic*, so
every model in that timing runs on the same stream of real eval samples.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.core.measure.figures import real_batches
from workbench.core.measure.paired import Contestant, choose_threads, time_paired
from workbench.core.measure.runtimes import TorchRuntime
from workbench.core.measure.timing import fixed_threads, latency_stats, time_one_call_ns
from workbench.core.pipeline import RunContext, Stage, split_loader
from workbench.core.precision import unwrap
from workbench.core.telemetry import paused_for_timing
from workbench.errors import RecipeError, WorkbenchError
from workbench.recipe import Recipe
from workbench.techniques.early_exit.bundle import export_segments, verify_segments, write_early_exit_bundle
from workbench.techniques.early_exit.exits import (
    DEFAULT_EXITS,
    EarlyExitInference,
    EarlyExitModel,
    choose_threshold,
    exit_costs,
    exit_loss,
    profile_exits,
)

#: Eval samples timed one by one for the mean and p95 batch-1 latency.
LATENCY_SAMPLES = 64


def _preflight(recipe: Recipe) -> None:
    """Refuse combinations this stage cannot honour, before any work."""
    if recipe.quantize is not None or recipe.export is not None:
        raise RecipeError("[early_exit] cannot be combined with [quantize] or [export] yet: an early-exit model is "
                          "exported as ONNX segments with its own runner; set early_exit.bundle_dir instead of [export]")
    cfg = recipe.early_exit
    if cfg is not None and cfg.bundle_dir and Path(cfg.bundle_dir).expanduser().exists() and not cfg.force:
        raise RecipeError(f"early_exit.bundle_dir = {cfg.bundle_dir!r} already exists; set early_exit.force = true "
                          "to replace it, or choose another folder")
    if cfg is not None and not cfg.exits and recipe.model.source != "zoo":
        raise RecipeError("early_exit.exits is empty: name the modules to put exits after (e.g. "
                          "['layer1', 'layer2']) for a model that is not from the zoo")


def _exit_points(ctx: RunContext) -> list[str]:
    cfg = ctx.recipe.early_exit
    if cfg.exits:
        return list(cfg.exits)
    points = DEFAULT_EXITS.get(ctx.recipe.model.zoo)
    if not points:
        raise RecipeError(f"early_exit.exits: no default exits for zoo model {ctx.recipe.model.zoo!r}; name them")
    return list(points)


def _train(ctx: RunContext, ee: EarlyExitModel) -> Any:
    from workbench.core.train import train

    cfg = ctx.recipe.early_exit
    weights = list(cfg.loss_weights) or [1.0] * ee.num_exits
    if len(weights) != ee.num_exits:
        raise RecipeError(f"early_exit.loss_weights has {len(weights)} values; this model has {ee.num_exits} exits "
                          f"(the final head included): give {ee.num_exits} or none")
    if cfg.mode == "heads_only":
        for p in ee.segments.parameters():
            p.requires_grad_(False)
    try:
        return train(ee, split_loader(ctx, train=True), ctx.val_loader, ctx.recipe.train, ctx.recipe.batching,
                     ctx.plan, ctx.reporter, ctx.cancel, stage="early_exit:train", epochs=cfg.epochs, lr=cfg.lr,
                     loss_fn=exit_loss(weights))
    finally:
        for p in ee.segments.parameters():
            p.requires_grad_(True)


def _per_sample_ms(runtime: TorchRuntime, samples: list[np.ndarray], repeats: int = 3) -> list[float]:
    """Each sample's batch-1 latency (median of ``repeats`` calls), for the mean and the p95.

    Through the same runtime calls as the paired timing, so both see the model the same way.
    """
    out = []
    for x in samples:
        fn, sync = runtime.timed_call(x)
        fn()  # warm this path
        out.append(float(np.median([time_one_call_ns(fn, sync) / 1e6 for _ in range(repeats)])))
    return out


def _latency(ctx: RunContext, full: torch.nn.Module, early: torch.nn.Module) -> dict[str, Any]:
    """Mean and p95 batch-1 latency over real eval samples, and the paired mean-latency ratio."""
    bench = ctx.recipe.bench
    threads = choose_threads(bench.threads)
    samples = real_batches(ctx.data.eval, 1, LATENCY_SAMPLES)
    device = ctx.plan.device
    contestants = [Contestant("full model", "full model", TorchRuntime(full, device=device)),
                   Contestant("early_exit", "early exits", TorchRuntime(early, device=device))]
    with fixed_threads(threads.threads), paused_for_timing():
        timing = time_paired(contestants, ctx.input_shape, [1], threads=threads, rounds=bench.rounds,
                             # Twice the usual cap: exits vary per sample, so rounds need more calls to settle.
                             iters=bench.rounds, warmup=1, max_time_s=2 * bench.max_time_s,
                             cancel=ctx.cancel, stream=lambda _b: samples)
        full_ms = latency_stats(_per_sample_ms(contestants[0].runtime, samples), 1)
        early_ms = latency_stats(_per_sample_ms(contestants[1].runtime, samples), 1)
    d = timing.to_dict()
    return {"samples": len(samples), "paired": d["latency"]["1"], "reliable": d["reliable"], "reason": d["reason"],
            "threads": d["threads"], "full": {"mean_ms": full_ms.mean_ms, "p95_ms": full_ms.p95_ms},
            "early_exit": {"mean_ms": early_ms.mean_ms, "p95_ms": early_ms.p95_ms}}


def run_early_exit_stage(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.recipe.early_exit
    assert cfg is not None
    rep = ctx.reporter
    if ctx.module is None:
        raise WorkbenchError("[early_exit] needs a PyTorch model; an ONNX model cannot get exit heads")
    before = ctx.stages[-1]["after"] if ctx.stages and ctx.stages[-1].get("after") else ctx.baseline
    full = unwrap(ctx.module)
    points = _exit_points(ctx)
    ee = EarlyExitModel.build(copy.deepcopy(full), points, ctx.input_shape, ctx.data.num_classes)
    ee.rule = cfg.rule
    rep.log(f"early_exit: {len(points)} exit(s) after {', '.join(points)}; {cfg.mode} training for {cfg.epochs} "
            f"epoch(s) at lr {cfg.lr:g}")
    trained = _train(ctx, ee)
    ee.eval()
    costs = exit_costs(ee, ctx.input_shape)
    device = next(ee.parameters()).device
    val = profile_exits(ee, ctx.val_loader, costs.exit_macs, device, ctx.cancel, costs.model_macs)
    if cfg.threshold > 0:
        chosen = {**val.simulate(cfg.threshold), "full_accuracy": val.full_accuracy, "max_drop_points": cfg.max_drop}
        rep.log(f"early_exit: fixed threshold {cfg.threshold:g} (early_exit.threshold)")
    else:
        chosen = choose_threshold(val, cfg.max_drop)
    threshold = chosen["threshold"]
    ee.threshold = threshold
    ev = profile_exits(ee, ctx.eval_loader, costs.exit_macs, device, ctx.cancel, costs.model_macs)
    on_eval = ev.simulate(threshold)
    rep.log(f"early_exit: threshold {threshold:.3f} ({cfg.rule}) chosen on validation: accuracy "
            f"{chosen['accuracy']:.2%} vs full {val.full_accuracy:.2%}; on eval {on_eval['accuracy']:.2%} vs full "
            f"{ev.full_accuracy:.2%}, exits {', '.join(f'{s:.0%}' for s in on_eval['exit_shares'])}, "
            f"{on_eval['macs_saved']:.0%} of MACs saved")
    early = EarlyExitInference(ee, threshold).eval()
    full.eval()
    latency = _latency(ctx, full, early)
    ratio = latency["paired"]["ratio"]
    lo, hi = latency["paired"]["ci95"]
    rep.log(f"early_exit: mean batch-1 latency {latency['full']['mean_ms']:.3f} → {latency['early_exit']['mean_ms']:.3f}"
            f" ms, {ratio:.2f}x faster (95 % CI {lo:.2f}–{hi:.2f}x, paired on {latency['samples']} eval samples); "
            f"p95 {latency['full']['p95_ms']:.3f} → {latency['early_exit']['p95_ms']:.3f} ms")
    if not latency["reliable"]:
        rep.log(f"early_exit: latency measurement unreliable: {latency['reason']}", "warning")
    after = ctx.measure("early_exit", module=early)
    after["latency_ms_p50"] = latency["early_exit"]["mean_ms"]  # data-dependent: the mean over real samples
    after["latency_ms_p95"] = latency["early_exit"]["p95_ms"]
    after["latency_batch"] = 1
    after["latency_source"] = f"mean over {latency['samples']} real eval samples (the time depends on the input)"
    after["macs"] = int(on_eval["mean_macs"])

    bundle = _bundle(ctx, ee, threshold)
    ctx.module = early
    ctx.add_checkpoint("early_exit", f"early exits (t={threshold:.2f})", module=early, precision_plan=False,
                       dynamic=True)
    note = (f"{on_eval['macs_saved']:.0%} of MACs saved on eval at {on_eval['accuracy'] - ev.full_accuracy:+.2%} "
            f"accuracy; mean batch-1 latency {ratio:.2f}x the full model's (paired, CI {lo:.2f}–{hi:.2f}x)")
    return {
        "name": "early_exit", "exits": points, "mode": cfg.mode, "rule": cfg.rule, "threshold": threshold,
        "before": before, "after": after, "train": trained.to_dict(),
        "validation": {"full_accuracy": val.full_accuracy, **chosen, "curve": val.curve()},
        "eval": {"full_accuracy": ev.full_accuracy, **on_eval, "full_macs": costs.model_macs,
                 "exit_macs": costs.exit_macs},
        "latency": latency, "bundle": bundle, "note": note,
    }


def _bundle(ctx: RunContext, ee: EarlyExitModel, threshold: float) -> dict[str, Any]:
    """ONNX segments + runner in the run's artifacts (and ``bundle_dir``), with their parity check."""
    cfg = ctx.recipe.early_exit
    ee_cpu = ee.cpu().eval()
    folder = ctx.artifacts / "early_exit"
    paths = export_segments(ee_cpu, ctx.input_shape, folder / "segments")
    batches = real_batches(ctx.data.eval, 32, 128)
    parity = verify_segments(paths, ee_cpu, batches, threshold, cfg.rule)
    config = {"threshold": threshold, "rule": cfg.rule, "exits": list(ee.exit_points),
              "input_shape": list(ctx.input_shape), "class_names": list(getattr(ctx.data, "class_names", []) or [])}
    written = write_early_exit_bundle(folder / "bundle", paths, config, parity, force=True)
    ctx.store.add_artifact(ctx.run_id, "early_exit_bundle", written, {"parity": parity})
    out = {"path": str(written), "parity": parity}
    if cfg.bundle_dir:
        target = Path(cfg.bundle_dir).expanduser()
        write_early_exit_bundle(target, paths, config, parity, force=cfg.force)
        out["bundle_dir"] = str(target)
        ctx.reporter.log(f"early_exit: bundle written to {target}")
    if parity["top1_agreement"] < 1.0 or parity["exit_agreement"] < 0.99:
        ctx.reporter.log(f"early_exit: ONNX segments agree with PyTorch on {parity['top1_agreement']:.1%} of classes "
                         f"and {parity['exit_agreement']:.1%} of exits", "warning")
    ee.to(ctx.plan.device)
    return out


STAGE = Stage("early_exit", lambda r: r.early_exit is not None, run_early_exit_stage, preflight=_preflight)
