from __future__ import annotations

import pytest

from tests.helpers import tiny_recipe
from workbench.core.events import CancelToken, RecordingReporter
from workbench.core.measure.figures import METRIC_KEYS
from workbench.core.store import RunStore
from workbench.techniques import run_recipe


def test_recipe_trains_evaluates_benchmarks_and_records_everything() -> None:
    store = RunStore()
    rep = RecordingReporter()
    outcome = run_recipe(tiny_recipe(epochs=2), store=store, reporter=rep)
    assert outcome.status == "completed", outcome.error
    final = outcome.summary["final"]
    for key in METRIC_KEYS:
        assert final[key] is not None and final[key] > 0, key
    assert "baseline" not in outcome.summary  # nothing optimized: final is the plain model
    assert final["latency_ms_p95"] >= final["latency_ms_p50"]
    history = outcome.summary["train"]["history"]
    assert len(history) == 2 and all(0 <= h["val_accuracy"] <= 1 for h in history)  # curves on validation
    data = outcome.summary["data"]
    assert data["val_samples"] == 10 * round(24 * 0.1) and data["eval_samples"] == 10 * round(30 * 0.2)
    assert data["train_samples"] + data["val_samples"] + data["eval_samples"] == 300
    assert any(f"/ {data['val_samples']} val /" in args[0] for args in rep.of("log"))  # the data log line
    run = store.get_run(outcome.run_id)
    assert run is not None and run.status == "completed"
    series = store.metrics(outcome.run_id)
    assert len(series["loss"]) >= 2 and "val_accuracy" in series and "cpu_percent" in series
    weights = store.artifacts(outcome.run_id, "weights")
    assert weights and weights[0].path.exists()
    stages = [args[0] for args in rep.of("stage_started")]
    assert stages[:2] == ["load", "train"] and "measure:baseline" in stages


def test_benchmark_only_skips_training() -> None:
    outcome = run_recipe(tiny_recipe(), store=RunStore(), benchmark_only=True)
    assert outcome.status == "completed"
    assert "train" not in outcome.summary
    assert outcome.summary["final"]["train_samples_per_s"] is None


def test_a_run_records_the_techniques_that_ran(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workbench.techniques.prune.config import PruneSection

    r = tiny_recipe()
    r.prune = PruneSection(method="structured", ratio=0.3, finetune_epochs=0)
    assert r.techniques == ["cache", "prune-structured-0.3"]
    store = RunStore()
    timed = run_recipe(r, store=store, benchmark_only=True)
    run = store.get_run(timed.run_id)
    assert run is not None and run.summary["techniques"] == r.techniques
    assert run.techniques == []  # only timed: no training (no cache), no pruning
    full = run_recipe(r, store=store)
    assert full.status == "completed" and store.get_run(full.run_id).techniques == r.techniques  # type: ignore[union-attr]
    r.data.source, r.data.path = "image_folder", str(tmp_path / "missing")
    failed = run_recipe(r, store=store)
    assert failed.status == "failed" and store.get_run(failed.run_id).techniques == []  # type: ignore[union-attr]


def test_cancel_marks_run_cancelled() -> None:
    cancel = CancelToken()

    class CancelOnFirstMetric(RecordingReporter):
        def metrics(self, stage, step, values, t=None):  # type: ignore[no-untyped-def]
            if stage == "train":
                cancel.cancel()

    store = RunStore()
    outcome = run_recipe(tiny_recipe(epochs=50), store=store, reporter=CancelOnFirstMetric(), cancel=cancel)
    assert outcome.status == "cancelled"
    assert store.get_run(outcome.run_id).status == "cancelled"  # type: ignore[union-attr]


def test_bad_data_path_fails_with_one_line_and_is_recorded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = tiny_recipe()
    r.data.source = "image_folder"
    r.data.path = str(tmp_path / "missing")
    store = RunStore()
    outcome = run_recipe(r, store=store)
    assert outcome.status == "failed"
    assert "missing" in outcome.error and "\n" not in outcome.error
    assert store.get_run(outcome.run_id).error == outcome.error  # type: ignore[union-attr]


def test_class_count_mismatch_between_model_and_data(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model_file = tmp_path / "three.py"
    model_file.write_text(
        "from torch import nn\n"
        "class Three(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(3 * 32 * 32, 3)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.flatten(1))\n"
    )
    r = tiny_recipe()
    r.model.source = "python"
    r.model.path = str(model_file)
    r.model.class_name = "Three"
    outcome = run_recipe(r, store=RunStore())
    assert outcome.status == "failed"
    assert "3 classes" in outcome.error and "10" in outcome.error


def test_weights_from_a_previous_run() -> None:
    store = RunStore()
    first = run_recipe(tiny_recipe(), store=store)
    r = tiny_recipe(epochs=0)
    r.model.weights = f"run:{first.run_id}"
    second = run_recipe(r, store=store)
    assert second.status == "completed", second.error
    assert second.summary["final"]["accuracy"] == pytest.approx(first.summary["final"]["accuracy"], abs=1e-6)
    r.model.weights = "run:99999"
    missing = run_recipe(r, store=store)
    assert missing.status == "failed" and "no run with ID 99999" in missing.error


def test_same_recipe_same_seed_same_result() -> None:
    """The seed covers the initial weights too: two runs of one recipe train identically."""
    results = []
    for _ in range(2):
        r = tiny_recipe(epochs=2, samples_per_class=40)
        r.bench.enabled = False
        outcome = run_recipe(r, store=RunStore())
        results.append((outcome.summary["train"]["final_loss"], outcome.summary["final"]["accuracy"]))
    assert results[0] == results[1]


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 8])
def test_onecycle_schedule_works_for_a_handful_of_steps(steps: int) -> None:
    """A small train split for one epoch gives few steps; 4 used to divide by zero inside OneCycleLR."""
    import torch

    from workbench.core.train import make_scheduler
    from workbench.recipe import TrainSection

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_scheduler(opt, TrainSection(schedule="onecycle"), steps, 0.1)
    assert sched is not None
    lrs = []
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(lr >= 0 for lr in lrs) and max(lrs) <= 0.1 + 1e-12
