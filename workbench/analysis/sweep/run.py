"""``run_sweep``: every grid of a ``SweepSpec`` on one recipe, recorded as ONE stored run."""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch
from torch import nn

from workbench.analysis.sweep.batch_grid import batch_sweep
from workbench.analysis.sweep.loader_grid import loader_sweep
from workbench.analysis.sweep.spec import SweepSpec, best_within_budget
from workbench.core.events import CancelToken, MultiReporter, Reporter, relay_warnings
from workbench.core.measure.paired import ContentionMonitor
from workbench.core.measure.timing import fixed_threads
from workbench.core.pipeline import RunOutcome, environment, record_process_exit, record_unfinished_run
from workbench.errors import WorkbenchError
from workbench.recipe import Recipe, dumps_recipe

#: A sweep's outcome is a run's outcome (status, summary, error).
SweepOutcome = RunOutcome


def _budget_summary(inference: list[dict[str, Any]], spec: SweepSpec) -> dict[str, Any] | None:
    if spec.latency_budget_ms is None:
        return None
    best = best_within_budget(inference, spec.latency_budget_ms, latency_key=spec.latency_key)
    per_precision = {}
    for prec in dict.fromkeys(p["precision"] for p in inference):
        per_precision[prec] = best_within_budget([p for p in inference if p["precision"] == prec],
                                                 spec.latency_budget_ms, latency_key=spec.latency_key)
    return {"budget_ms": spec.latency_budget_ms, "latency_key": spec.latency_key, "best": best,
            "per_precision": per_precision,
            "message": (f"best within {spec.latency_budget_ms:g} ms ({spec.latency_key.removesuffix('_ms')}): "
                        f"{best['precision']} batch {best['batch_size']}, {best['throughput']:,.0f} samples/s"
                        if best else f"no point meets {spec.latency_budget_ms:g} ms at "
                        f"{spec.latency_key.removesuffix('_ms')}; the fastest is "
                        + (f"{min(p[spec.latency_key] for p in inference):.3f} ms" if inference else "unmeasured"))}


LOADER_CAVEAT = ("loader configurations are timed one after the other in this process (not interleaved): a "
                 "change in machine load between them changes the ratio")


def run_sweep(
    recipe: Recipe,
    spec: SweepSpec,
    *,
    store: Any = None,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
    name: str | None = None,
) -> SweepOutcome:
    """Run every grid of ``spec`` on ``recipe`` and record it as ONE stored run (kind ``sweep``).

    Like ``run_recipe`` it never raises for run failures: the outcome's status says what happened,
    and whatever was measured before a failure or cancel stays in the run's summary.
    """
    from workbench.core.store import RunStore, StoreReporter
    from workbench.recipe import check_device_support

    store = store or RunStore()
    cancel = cancel or CancelToken()
    outer = reporter or Reporter()
    check_device_support(recipe, torch.cuda.is_available())
    run_name = name or f"{recipe.name} sweep"
    run_id = store.create_run(run_name, dumps_recipe(recipe), recipe.model.label, recipe.techniques, kind="sweep")
    rep = MultiReporter([StoreReporter(store, run_id), outer])
    run_started = getattr(outer, "run_started", None)
    if callable(run_started):
        run_started(run_id, run_name)
    summary: dict[str, Any] = {"run_id": run_id, "name": run_name, "kind": "sweep", "techniques": recipe.techniques,
                               "environment": environment(), "sweep": {"spec": spec.to_dict()}}
    sweep = summary["sweep"]
    sampler = None
    try:
        with relay_warnings(rep), fixed_threads(recipe.bench.threads if spec.threads is None else spec.threads):
            from workbench.core.telemetry import TelemetrySampler, device_description

            summary["environment"]["device"] = device_description()
            counter = itertools.count()
            sampler = TelemetrySampler(hz=recipe.bench.telemetry_hz, reporter=rep,
                                       on_sample=lambda s: rep.metrics("telemetry", next(counter), s))
            sampler.start()
            t0 = time.perf_counter()
            module, shape, num_classes = _load(recipe, summary, rep, cancel)
            if spec.batch_sizes and (spec.inference or spec.train):
                res = batch_sweep(module, shape, num_classes, recipe, spec, reporter=rep, cancel=cancel)
                sweep.update(res)
                sweep["budget"] = _budget_summary(res["inference"], spec)
                if sweep["budget"]:
                    rep.log(f"sweep: {sweep['budget']['message']}")
                store.update_summary(run_id, summary)
            if spec.workers is not None:
                with ContentionMonitor(include_children=True) as loader_load:  # workers are ours
                    sweep["loader"] = loader_sweep(recipe, spec, module=module, reporter=rep, cancel=cancel)
                ld = sweep["loader"]
                assert loader_load.load is not None
                # Loader configurations cannot share one process's interleaved rounds (each owns worker
                # processes), so their ratio is sequential: say so, and say if others competed meanwhile.
                ld["measurement"] = {"paired": False, "caveat": LOADER_CAVEAT,
                                     "contention": loader_load.load.to_dict()}
                if loader_load.load.contended:
                    rep.log(f"sweep: other processes used {loader_load.load.others_cores:.2f} CPU cores during the "
                            "loader sweep; its ratios are unreliable", "warning")
                if ld.get("speedup"):
                    rep.log(f"sweep: best loader configuration {ld['best']['label']}: "
                            f"{ld['best']['train_samples_per_s']:,.0f} training samples/s, {ld['speedup']:.2f}x the "
                            f"default ({ld['default']['label']})")
                store.update_summary(run_id, summary)
            sweep["wall_s"] = time.perf_counter() - t0
        summary["status"] = "completed"
        store.finish_run(run_id, "completed", summary)
        return SweepOutcome(run_id, "completed", summary)
    except (KeyboardInterrupt, SystemExit) as exc:
        return record_process_exit(store, run_id, summary, rep, exc)
    except Exception as exc:
        return record_unfinished_run(store, run_id, summary, rep, exc)
    finally:
        if sampler is not None:
            sampler.stop()


def _load(recipe: Recipe, summary: dict[str, Any], rep: Reporter,
          cancel: CancelToken) -> tuple[nn.Module, tuple[int, ...], int]:
    """Data (for its shape and classes) and the model, recorded in the summary like a normal run."""
    from workbench.core.data import load_dataset
    from workbench.core.models import load_model, summarize

    rep.stage_started("load")
    bundle = load_dataset(recipe.data)
    cancel.raise_if_cancelled()
    shape = tuple(int(d) for d in bundle.input_shape)
    loaded = load_model(recipe.model, bundle.num_classes, shape)
    if loaded.module is None:
        raise WorkbenchError(f"model.source = {recipe.model.source!r}: sweeps need a PyTorch model "
                             "(use `workbench bench` for ONNX files)")
    if bundle.kind == "tokens":  # forward(input_ids, attention_mask, ...) fed from stacked token batches
        from workbench.core.models.token_inputs import wrap_for_tokens

        loaded.module = wrap_for_tokens(loaded.module, bundle.preprocess["token_inputs"],
                                        f"model.path {recipe.model.path or recipe.model.zoo}")
    if recipe.model.weights.startswith("run:"):
        rep.log("sweep: model.weights = run:ID is not loaded for a sweep: speed does not depend on the weights")
    s = summarize(loaded.module, shape)
    summary["model"] = s.to_dict()
    summary["data"] = {"source": recipe.data.source, "description": bundle.source_desc,
                       "num_classes": bundle.num_classes, "input_shape": list(shape),
                       "train_samples": len(bundle.train), "val_samples": len(bundle.val),
                       "eval_samples": len(bundle.eval), "kind": bundle.kind}
    rep.log(f"sweep: model {loaded.description or recipe.model.zoo}: {s.params:,} params; data {bundle.source_desc}")
    rep.stage_finished("load", {"params": s.params})
    return loaded.module, shape, bundle.num_classes


