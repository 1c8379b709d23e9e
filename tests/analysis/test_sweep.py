"""Sweeps (batch x precision, DataLoader settings), their helpers and the loader verdict."""

from __future__ import annotations

import math

import pytest

from workbench.analysis.pareto import pareto_front
from workbench.analysis.sweep import (
    BatchPoint,
    SweepSpec,
    best_within_budget,
    loader_configs,
    loader_sweep,
    precision_plan,
    run_sweep,
)
from workbench.core.diagnose import COMPUTE_BOUND_BELOW, LOADER_BOUND_ABOVE, loader_verdict
from workbench.core.events import CancelToken, RecordingReporter
from workbench.core.store import RunStore
from workbench.errors import WorkbenchError
from workbench.recipe import Recipe


def _recipe(**sections: dict) -> Recipe:
    """Small and single-threaded: a shared 2-core CI box makes multi-threaded timings erratic."""
    base: dict = {"name": "sweep-test", "model": {"zoo": "mlp"},
                  "data": {"source": "synthetic", "synthetic_samples": 160},
                  "batching": {"batch_size": 16},
                  "bench": {"iters": 3, "warmup": 1, "threads": 1, "max_time_s": 2.0, "telemetry_hz": 10.0}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return Recipe.model_validate(base)


# ----------------------------------------------------------------------------------- pure helpers


def test_best_within_budget_picks_highest_throughput_under_the_budget() -> None:
    pts = [{"batch_size": 1, "p95_ms": 1.0, "p50_ms": 0.8, "throughput": 1000.0},
           {"batch_size": 8, "p95_ms": 4.0, "p50_ms": 3.0, "throughput": 2600.0},
           {"batch_size": 32, "p95_ms": 11.0, "p50_ms": 9.0, "throughput": 3400.0},
           {"batch_size": 64, "p95_ms": None, "p50_ms": 20.0, "throughput": 9999.0}]
    assert best_within_budget(pts, 5.0)["batch_size"] == 8
    assert best_within_budget(pts, 10.0, latency_key="p50_ms")["batch_size"] == 32  # p50 budget is looser
    assert best_within_budget(pts, 0.5) is None
    objs = [BatchPoint("inference", "fp32", b, p50, p95, thr, p50, 3) for b, p50, p95, thr in
            ((1, 1.0, 2.0, 100.0), (2, 1.0, 2.0, 100.0), (4, 3.0, 6.0, 400.0))]
    tie = best_within_budget(objs, 2.0)
    assert isinstance(tie, BatchPoint) and tie.batch_size in (1, 2)


def test_pareto_front_keeps_only_undominated_points_sorted_by_x() -> None:
    pts = [{"n": "a", "lat": 1.0, "acc": 0.80}, {"n": "b", "lat": 2.0, "acc": 0.90},
           {"n": "c", "lat": 3.0, "acc": 0.85},  # slower and worse than b: dominated
           {"n": "d", "lat": 4.0, "acc": 0.95}, {"n": "e", "lat": 0.5, "acc": 0.70},
           {"n": "f", "lat": 2.5, "acc": float("nan")}, {"n": "g", "lat": 1.5}]
    assert [p["n"] for p in pareto_front(pts, "lat", "acc")] == ["e", "a", "b", "d"]
    assert pareto_front([], "lat", "acc") == []
    one = [{"lat": 1.0, "acc": 0.5}]
    assert pareto_front(one, "lat", "acc") == one


def test_pareto_front_flipped_objectives() -> None:
    pts = [{"x": 1.0, "y": 1.0}, {"x": 2.0, "y": 0.5}, {"x": 3.0, "y": 2.0}]
    # maximise x, minimise y: (2, 0.5) beats (1, 1); (3, 2) has the best x.
    assert pareto_front(pts, "x", "y", minimize_x=False, maximize_y=False) == [pts[1], pts[2]]


def test_spec_validation_names_the_problem() -> None:
    with pytest.raises(WorkbenchError, match="unknown precision 'int4'"):
        SweepSpec(precisions=["int4"])
    with pytest.raises(WorkbenchError, match="nothing to sweep"):
        SweepSpec(batch_sizes=[])
    with pytest.raises(WorkbenchError, match="latency budget"):
        SweepSpec(latency_budget_ms=0)


def test_fp16_is_skipped_with_a_reason_on_cpu() -> None:
    plan, reason = precision_plan(_recipe(), "fp16")
    if plan is None:
        assert "CUDA" in reason
    fp32, note = precision_plan(_recipe(), "fp32")
    assert fp32 is not None and fp32.autocast_dtype is None and note == ""


def test_loader_configs_put_the_default_first_and_skip_what_cannot_differ() -> None:
    r = _recipe(data={"source": "default", "samples_per_class": 20, "cache": False}, loader={"num_workers": 0})
    default, configs, skipped = loader_configs(r, SweepSpec(batch_sizes=[], workers=[0, 1], pin_memory=[False, True],
                                                            cache=[False, True]))
    assert configs[0] == default and (default.num_workers, default.cache) == (0, False)
    assert len(configs) == len(set(configs))
    import torch

    if not torch.cuda.is_available():
        assert len(configs) == 4 and any("pin_memory" in s["what"] for s in skipped)
    # In-memory data: cache cannot change anything, so it is not measured twice.
    _, configs, skipped = loader_configs(_recipe(), SweepSpec(batch_sizes=[], workers=[0], cache=[False, True]))
    assert [c.cache for c in configs] == [False] and any("cache" in s["what"] for s in skipped)


# ---------------------------------------------------------------------------------------- verdict


def test_verdict_thresholds_and_suggestions() -> None:
    r = _recipe(data={"source": "default", "cache": False, "image_size": 96}, loader={"num_workers": 0})
    v = loader_verdict(3.0, 1.0, r, cores=4)
    assert v.kind == "loader-bound" and math.isclose(v.wait_fraction, 0.75)
    text = " ".join(v.suggestions)
    assert "loader.num_workers" in text and "data.cache = true" in text and "augment" in text
    assert "image_size" in text and "batch_size" in text and "4.0x" in v.message
    assert loader_verdict(0.05, 1.0, r).kind == "compute-bound"
    mid = (LOADER_BOUND_ABOVE + COMPUTE_BOUND_BELOW) / 2
    assert loader_verdict(mid, 1 - mid, r).kind == "balanced"
    assert loader_verdict(0.0, 0.0, r).kind == "unknown"
    # Already using every core: do not suggest more workers.
    busy = _recipe(data={"source": "default", "cache": True}, loader={"num_workers": 1})
    assert not any("more workers" in s for s in loader_verdict(3.0, 1.0, busy, cores=2).suggestions)


def test_verdict_loader_bound_for_a_recipe_made_slow_on_purpose() -> None:
    """PNG decode + resize to 96 px + augmentation in the training process, a tiny model."""
    r = _recipe(model={"zoo": "mlp", "kwargs": {"hidden": [16]}},
                data={"source": "default", "samples_per_class": 20, "image_size": 96, "augment": True,
                      "cache": False})
    out = loader_sweep(r, SweepSpec(batch_sizes=[], workers=[0], cache=[False], loader_batches=4,
                                    loader_train_steps=6))
    (point,) = out["points"]
    assert point["is_default"] and point["verdict"]["kind"] == "loader-bound", point
    assert point["data_wait_fraction"] >= LOADER_BOUND_ABOVE
    assert any("cache" in s for s in point["verdict"]["suggestions"])


def test_verdict_compute_bound_for_a_heavy_model_on_cheap_data() -> None:
    r = _recipe(model={"zoo": "resnet", "width": 2.0}, data={"source": "synthetic", "synthetic_samples": 160})
    out = loader_sweep(r, SweepSpec(batch_sizes=[], workers=[0], loader_batches=4, loader_train_steps=4))
    (point,) = out["points"]
    assert point["verdict"]["kind"] == "compute-bound", point
    assert point["compute_s"] > 5 * point["data_wait_s"]


# ------------------------------------------------------------------------------------- run_sweep


def test_sweep_over_four_batch_sizes_is_one_stored_run_with_every_point() -> None:
    store = RunStore()
    rep = RecordingReporter()
    spec = SweepSpec(batch_sizes=[2, 4, 8, 16], precisions=["fp32", "bf16", "fp16"], latency_budget_ms=1000.0,
                     train_steps=3, train_warmup_steps=1, workers=[0], loader_batches=3, loader_train_steps=3)
    out = run_sweep(_recipe(), spec, store=store, reporter=rep)
    assert out.status == "completed", out.error
    runs = store.list_runs()
    assert len(runs) == 1 and runs[0].kind == "sweep" and runs[0].id == out.run_id
    sw = store.get_run(out.run_id).summary["sweep"]  # re-opened from the store
    import torch

    precs = ["fp32", "bf16"] + (["fp16"] if torch.cuda.is_available() else [])
    assert {(p["precision"], p["batch_size"]) for p in sw["inference"]} == {(q, b) for q in precs
                                                                           for b in (2, 4, 8, 16)}
    assert {(p["precision"], p["batch_size"]) for p in sw["train"]} == {(q, b) for q in precs for b in (2, 4, 8, 16)}
    for p in sw["inference"] + sw["train"]:
        assert p["p95_ms"] >= p["p50_ms"] > 0 and p["throughput"] > 0
    if not torch.cuda.is_available():
        assert any(s["what"] == "fp16" and "CUDA" in s["reason"] for s in sw["skipped"])
    assert sw["budget"]["best"] in sw["inference"]
    assert len(sw["loader"]["points"]) == 1 and sw["loader"]["points"][0]["is_default"]
    # Precisions are also timed together, in interleaved rounds, against the first one (fp32).
    ip = sw["inference_paired"]
    assert ip["paired"] is True and ip["reference"] == "fp32" and isinstance(ip["reliable"], bool)
    assert set(ip["against_reference"]["bf16"]) == {"2", "4", "8", "16"}
    e = ip["against_reference"]["bf16"]["2"]
    assert e["ci95"][0] <= e["ratio"] <= e["ci95"][1]
    # Loader configurations are sequential and say so.
    assert sw["loader"]["measurement"]["paired"] is False and "not interleaved" in sw["loader"]["measurement"]["caveat"]
    series = store.metrics(out.run_id)
    inf = [row for row in series["p95_ms"] if row[1] == "sweep:inference:fp32"]
    assert sorted(row[2] for row in inf) == [2, 4, 8, 16]  # one metric row per point, keyed by batch size
    assert "train_samples_per_s" in series and "loader_samples_per_s" in series and "cpu_percent" in series
    stages = [args[0] for args in rep.of("stage_started")]
    assert "sweep:inference:fp32" in stages and "sweep:train:bf16" in stages and "sweep:loader" in stages


def test_batch_sizes_are_capped_at_the_max_batch_finders_limit() -> None:
    # ~20 MiB: the MLP's parameters, gradients and Adam state (~13 MB) fit, a batch of 4096 does not.
    r = _recipe(batching={"batch_size": 16, "memory_budget_gb": 0.02})
    spec = SweepSpec(batch_sizes=[2, 4, 64, 4096], cap_at_max_batch=True, inference=True, train=False)
    out = run_sweep(r, spec, store=RunStore())
    assert out.status == "completed", out.error
    sw = out.summary["sweep"]
    limit = sw["max_batch"]["max_batch"]
    assert 2 <= limit < 4096
    assert all(p["batch_size"] <= limit for p in sw["inference"])
    assert any("4096" in s["what"] and "max-batch" in s["reason"] for s in sw["skipped"])


def test_cancelled_sweep_is_recorded_as_cancelled() -> None:
    cancel = CancelToken()
    cancel.cancel()
    store = RunStore()
    out = run_sweep(_recipe(), SweepSpec(batch_sizes=[1, 2]), store=store, cancel=cancel)
    assert out.status == "cancelled"
    assert store.get_run(out.run_id).status == "cancelled"


def test_onnx_models_are_refused_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "m.onnx"
    p.write_bytes(b"not really")
    r = _recipe(model={"source": "onnx", "path": str(p)}, train={"epochs": 0})
    out = run_sweep(r, SweepSpec(batch_sizes=[1]), store=RunStore())
    assert out.status == "failed" and "\n" not in out.error
