"""Accelerate: the search space, the result rules, and searches that are resumed, killed and shared."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.helpers import ACCELERATE_MINI
from workbench.analysis.accelerate import SearchSettings, best_trial, card_text, pareto_rows, parse_duration
from workbench.analysis.accelerate.search import Searcher, duplicate_of
from workbench.analysis.accelerate.space import (
    PRUNE_RATIOS,
    TRIAL_TIMING_S,
    Capabilities,
    TrialPlan,
    all_configurations,
    cheap_first,
    describe,
    distance,
    is_reference,
    nearest_untried,
    params_key,
    suggest,
    trial_recipe,
)
from workbench.analysis.accelerate.study import default_storage_url, open_storage
from workbench.cli.main import main
from workbench.core.events import CancelToken, Reporter
from workbench.errors import RecipeError, WorkbenchError
from workbench.recipe import loads_recipe

MINI = ACCELERATE_MINI


def write_mini(tmp_path: Path) -> Path:
    path = tmp_path / "mini.toml"
    path.write_text(MINI, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- space


def test_space_follows_the_model_and_the_machine() -> None:
    cnn_cpu = Capabilities(torch_model=True, trainable=True, has_conv=True, native_bf16=False, cuda=False)
    params = suggest(optuna.trial.FixedTrial({"runtime": "eager", "precision": "fp32", "channels_last": True,
                                              "prune": 0.3}), cnn_cpu, "latency")
    assert params == {"runtime": "eager", "precision": "fp32", "channels_last": True, "prune": 0.3}
    assert cnn_cpu.precisions() == ["fp32"]  # no native bf16 and no CUDA: bf16 and fp16 are not offered
    assert Capabilities(native_bf16=True).precisions() == ["fp32", "bf16"]
    onnx_model = Capabilities(torch_model=False, trainable=False, has_conv=True)
    assert onnx_model.runtimes() == ["onnxruntime"]
    with pytest.raises(ValueError):  # an ONNX model is already onnxruntime fp32: "none" is not a choice
        suggest(optuna.trial.FixedTrial({"runtime": "onnxruntime", "quantize": "none"}), onnx_model, "latency")
    q = suggest(optuna.trial.FixedTrial({"runtime": "onnxruntime", "quantize": "static", "per_channel": False,
                                         "calibration": "entropy", "batch": 128}), onnx_model, "throughput")
    assert q == {"runtime": "onnxruntime", "quantize": "static", "per_channel": False, "calibration": "entropy",
                 "batch": 128}
    first = cheap_first(cnn_cpu, "latency")
    assert all(p.get("prune", 0.0) == 0.0 for p in first[:-1]) and first[-1]["prune"] > 0  # fine-tuning last
    assert not any(p["runtime"] == "compile" for p in first)
    assert not any(p.get("precision") == "bf16" for p in first)


def test_the_whole_space_is_walked_once_without_the_reference() -> None:
    cpu = Capabilities(native_bf16=True)
    every = all_configurations(cpu, "latency")
    keys = [params_key(p) for p in every]
    assert len(keys) == len(set(keys))  # no configuration twice
    # torch: eager/compile x fp32/bf16 x channels_last on/off; onnxruntime: fp32, dynamic x2, static x2 x3 calibrations.
    assert len(every) == (2 * 2 * 2 + 1 + 2 + 6) * len(PRUNE_RATIOS) - 1  # less the reference itself
    assert not any(is_reference(p, "latency", 1) for p in every)
    for p in every:  # each is exactly what the sampler could be asked for
        assert suggest(optuna.trial.FixedTrial(p), cpu, "latency") == p
    onnx = all_configurations(Capabilities(torch_model=False, trainable=False), "throughput", 64)
    assert len(onnx) == 8 * 5 and all("batch" in p and "prune" not in p for p in onnx)


def test_a_repeated_suggestion_queues_its_nearest_untried_neighbour() -> None:
    static = {"runtime": "onnxruntime", "quantize": "static", "per_channel": True, "calibration": "minmax",
              "prune": 0.0}
    cpu = Capabilities()
    every = all_configurations(cpu, "latency")
    near = nearest_untried(static, every, {params_key(static)}, random.Random(0))
    assert near is not None and distance(static, near) == 1
    caps = Capabilities(torch_model=False, trainable=False)  # 8 configurations
    study = optuna.create_study(directions=["maximize", "minimize"])
    searcher = Searcher(study=study, base=loads_recipe(MINI), plan=TrialPlan("latency", "", 1), caps=caps,
                        ref=None, settings=SearchSettings(), store=None, reporter=Reporter(),  # type: ignore[arg-type]
                        cancel=CancelToken(), deadline=time.monotonic() + 600, search_run_id=None)
    configs = all_configurations(caps, "latency")
    for p in configs[:-1]:
        study.enqueue_trial(p)  # queued settings count as tried
    searcher._duplicate(configs[0], 0)
    queued = [t.system_attrs["fixed_params"] for t in study.get_trials(deepcopy=False)]
    assert queued[-1] == configs[-1] and len(queued) == len(configs)  # the one left untried was queued
    assert searcher.should_stop(0.0) == ""
    searcher._duplicate(configs[0], 1)  # nothing left: the search says so instead of asking again
    assert searcher.should_stop(0.0) == "every configuration in the space has been tried"


def test_describe_and_reference() -> None:
    assert describe({"runtime": "onnxruntime", "quantize": "static", "per_channel": True, "calibration": "minmax",
                     "prune": 0.3}) == "onnxruntime + static INT8 (minmax) + 30% channels pruned"
    assert describe({"runtime": "eager", "precision": "bf16", "channels_last": True}) == \
        "torch eager + bf16 + channels_last"
    assert is_reference({"runtime": "eager", "precision": "fp32", "channels_last": False, "prune": 0.0}, "latency", 64)
    assert not is_reference({"runtime": "eager", "precision": "fp32", "prune": 0.2}, "latency", 64)
    assert not is_reference({"runtime": "eager", "precision": "fp32", "batch": 128}, "throughput", 64)


def test_trial_recipe_sets_what_the_trial_chose() -> None:
    base = loads_recipe(MINI + "\n[quantize]\nmethod = 'dynamic'\n")
    plan = TrialPlan("latency", "/w/base.safetensors", 16, finetune_epochs=1)
    r = trial_recipe(base, {"runtime": "onnxruntime", "quantize": "static", "per_channel": False,
                            "calibration": "percentile", "prune": 0.4}, plan)
    assert (r.quantize.method, r.quantize.per_channel, r.quantize.calibration) == ("static", False, "percentile")
    assert r.prune.ratio == 0.4 and r.prune.finetune_epochs == 1 and r.prune.method == "structured"
    assert r.prune.round_to == 8  # channel counts INT8 and vector kernels run fast
    assert r.model.weights == "/w/base.safetensors" and r.train.epochs == 0 and r.export is None
    assert r.bench.batch_sizes == [1] and r.bench.paired
    fp32_ort = trial_recipe(base, {"runtime": "onnxruntime", "quantize": "none", "prune": 0.0}, plan)
    assert fp32_ort.quantize is None and fp32_ort.export.formats == ["onnx"] and fp32_ort.prune is None
    eager = trial_recipe(base, {"runtime": "compile", "precision": "bf16", "channels_last": True, "prune": 0.0},
                         TrialPlan("throughput", "", 16))
    assert (eager.precision.autocast, eager.precision.channels_last, eager.precision.compile) == ("bf16", True, True)
    assert eager.bench.batch_sizes == [16, 64] and eager.quantize is None  # the user's [quantize] is not kept
    # a trial's paired timing is capped at TRIAL_TIMING_S, or lower where the recipe's own cap is lower
    assert r.bench.max_time_s == base.bench.max_time_s == 1.0
    assert trial_recipe(loads_recipe(MINI.replace("max_time_s = 1.0", "")), {"runtime": "eager"},
                        plan).bench.max_time_s == TRIAL_TIMING_S < 10.0


def test_settings_and_durations_give_one_line_errors() -> None:
    assert parse_duration("10m") == 600 and parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("45") == 45
    for bad in ("", "soon", "-5m", "0s"):
        with pytest.raises(RecipeError, match="time budget"):
            parse_duration(bad)
    with pytest.raises(RecipeError, match="max drop"):
        SearchSettings(max_drop=-1)
    with pytest.raises(RecipeError, match="objective"):
        SearchSettings(objective="speed")  # type: ignore[arg-type]


def _row(number: int, speed: float, drop: float, **extra: object) -> dict:
    return {"number": number, "state": "complete", "speedup": speed, "drop_points": drop, "ci95": [speed * 0.9,
            speed * 1.1], "label": f"t{number}", "size_ratio": 1.0, "eval_drop_points": drop, **extra}


def test_best_is_the_fastest_within_the_budget_and_the_front_spans_the_trade_off() -> None:
    rows = [_row(0, 3.0, 0.2), _row(1, 5.0, 0.9), _row(2, 8.0, 2.5), _row(3, 4.0, 0.5), _row(4, 6.0, 1.0),
            {"number": 5, "state": "pruned", "speedup": None, "drop_points": None}]
    assert best_trial(rows, 1.0)["number"] == 4  # 6.0x at exactly the budget counts as within it
    assert best_trial(rows, 0.1) is None
    assert [r["number"] for r in pareto_rows(rows)] == [0, 3, 1, 4, 2]
    # Speed-ups that the timing cannot tell apart are ties: both stay; a certainly slower one goes.
    ties = [_row(10, 5.8, 0.0, ci95=[5.4, 6.6]), _row(11, 5.3, 0.0, ci95=[5.1, 5.9]),
            _row(12, 4.0, 0.0, ci95=[3.8, 4.2])]
    assert [r["number"] for r in pareto_rows(ties)] == [10, 11]
    rows.append(_row(6, 2.0, 0.3))  # slower and worse than trial 0: not on the front
    # A lucky median from a noisy timing does not beat a certain speed-up: ranked by the CI's lower end.
    assert best_trial([_row(8, 9.0, 0.0, ci95=[2.0, 40.0]), _row(9, 6.0, 0.0, ci95=[5.8, 6.2])], 1.0)["number"] == 9
    assert 6 not in [r["number"] for r in pareto_rows(rows)]
    # The winner is on the front: a surer speed-up loses to a trial more accurate and faster at the median.
    surer, beats_it = _row(20, 5.5, 0.5, ci95=[5.0, 6.0]), _row(21, 6.0, 0.2, ci95=[4.0, 8.0])
    assert [r["number"] for r in pareto_rows([surer, beats_it])] == [21]
    assert best_trial([surer, beats_it], 1.0)["number"] == 21
    text = card_text(_row(7, 5.5, 0.4, ci95=[5.1, 5.9], size_ratio=3.7, label="onnxruntime + static INT8"),
                     "latency")
    assert text == "5.5x faster (95 % CI 5.1–5.9x) at -0.4 points, 3.7x smaller: onnxruntime + static INT8"


def test_a_trial_whose_reference_ran_differently_is_doubtful_and_proves_nothing() -> None:
    from workbench.analysis.accelerate.search import flag_reference_drift

    rows = [_row(0, 8.0, 0.0, reference_ms=3.5, reliable=True), _row(1, 7.0, 0.75, reference_ms=3.1, reliable=True),
            _row(2, 6.0, 0.5, reference_ms=2.9, reliable=True),
            # The reference ran twice as slow in this trial: its 10.8x is inflated.
            _row(3, 10.8, 0.0, ci95=[10.5, 11.3], reference_ms=6.0, reliable=True)]
    flag_reference_drift(rows)
    assert [r["reliable"] for r in rows] == [True, True, True, False]
    assert "6.00 ms here against 3.30 ms" in rows[3]["unreliable_reason"]
    assert best_trial(rows, 1.0)["number"] == 0  # the doubtful one wins only when it is alone
    assert best_trial([rows[3]], 1.0)["number"] == 3
    # It cannot push others off the front either: trial 0 would be dominated by a certain 10.8x at 0 drop.
    assert [r["number"] for r in pareto_rows(rows)] == [3, 0]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask/tell here, optimize in the app
def test_the_same_settings_never_run_twice(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"],
                                storage=open_storage(f"sqlite:///{tmp_path / 's.sqlite'}"))
    space = {"runtime": optuna.distributions.CategoricalDistribution(["eager", "onnxruntime"])}
    for _ in range(4):
        study.enqueue_trial({"runtime": "onnxruntime"})
    a, b = study.ask(space), study.ask(space)  # two workers drew the same settings at once
    assert duplicate_of(study, a.number, dict(a.params)) is None  # the lower number runs ...
    assert duplicate_of(study, b.number, dict(b.params)) == a.number  # ... the other is a duplicate
    study.tell(a, [2.0, 0.1])
    c = study.ask(space)
    assert duplicate_of(study, c.number, dict(c.params)) == a.number  # finished settings count
    study.tell(b, state=optuna.trial.TrialState.FAIL)
    study.tell(c, state=optuna.trial.TrialState.FAIL)
    d = study.ask(space)
    assert duplicate_of(study, d.number, dict(d.params)) == a.number  # failed ones do not, finished ones do
    study.enqueue_trial({"runtime": "eager"})
    e = study.ask(space)
    assert duplicate_of(study, e.number, dict(e.params)) is None


def test_bad_storage_and_unknown_study_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(WorkbenchError, match="not a database URL"):
        open_storage("accelerate.sqlite")
    with pytest.raises(WorkbenchError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'nowhere' / 'a.sqlite'}")
    assert default_storage_url().endswith("accelerate.sqlite")
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    assert main(["accelerate-worker", "nope", "--storage", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study 'nope' not found" in err[0]
    recipe = write_mini(tmp_path)
    assert main(["accelerate", str(recipe), "--time-budget", "soon"]) == 2
    assert "time budget 'soon'" in capsys.readouterr().err
    assert main(["accelerate", str(recipe), "--max-drop", "200"]) == 2


# ------------------------------------------------------------------------------------------- whole searches


def _study_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_a_search_records_every_trial_as_a_run_and_bundles_the_winner(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.core.store import RunStore

    recipe = write_mini(tmp_path)
    assert main(["accelerate", str(recipe), "--trials", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    acc = out["accelerate"]
    done = [t for t in acc["trials"] if t["state"] == "complete"]
    assert len(done) == 2
    with RunStore() as store:
        search = store.get_run(out["run_id"])
        assert search.kind == "accelerate" and search.status == "completed"
        for t in done:
            run = store.get_run(t["run_id"])
            assert run.status == "completed" and run.name == f"mlp · {t['label']}"  # runs named from what they did
            assert run.summary["accelerate"] == {"search_run": out["run_id"], "study": acc["study"],
                                                 "trial": t["number"]}
            # every trial is timed paired against the same fp32 eager reference, which leads its timing
            assert run.summary["speedup"]["models"][0]["label"] == "torch eager fp32"
            assert t["speedup"] == pytest.approx(run.summary["speedup"]["latency"]["1"]["ratio"])
            assert t["drop_points"] == pytest.approx(
                (acc["reference"]["val_accuracy"] - run.summary["final"]["val_accuracy"]) * 100)
        best = acc["best"]
        assert best["number"] in acc["pareto"] and best["drop_points"] <= 1.0 + 1e-9
        # the winner has the surest speed-up (CI's lower end) among trials on the front within budget,
        # trusting a trial timed while the CPU was contended only when no other is within budget
        within = [t for t in done if t["drop_points"] <= 1.0 + 1e-9 and t["number"] in acc["pareto"]]
        trusted = [t for t in within if t["reliable"] is not False] or within
        assert best["ci95"][0] == max(t["ci95"][0] for t in trusted)
        assert acc["card"].startswith(f"{best['speedup']:.1f}x faster")
        bundle = Path(acc["bundle"]["path"])
        assert (bundle / "model.onnx").is_file() and (bundle / "predict.py").is_file()
        assert store.get_run(acc["bundle"]["run_id"]).status == "completed"
        # The report carries the search: card, every trial, the chart, and the winner as a recipe to re-run.
        from workbench.analysis.report import collect_report_data, render_html

        data = collect_report_data(store, [out["run_id"]], predictions=False)
        page = render_html(data)
        assert data["searches"][0]["winner_recipe"] == store.get_run(best["run_id"]).recipe
        assert "Before → After" in page and acc["card"] in page.replace("&#43;", "+")
        assert page.count("<tr") >= len(acc["trials"]) + 1 and f"Search {out['run_id']}: speed-up" in page
        assert loads_recipe(data["searches"][0]["winner_recipe"]).name == f"mlp · {best['label']}"
    # The same command again resumes: the finished trials are kept and the study grows.
    assert main(["accelerate", str(recipe), "--trials", "3", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["accelerate"]
    assert again["study"] == acc["study"]
    kept = {t["number"]: t["speedup"] for t in again["trials"] if t["state"] == "complete"}
    assert all(kept[t["number"]] == t["speedup"] for t in done) and len(kept) == 3
    assert "base_run" not in again  # the base model was trained once, by the first search


def _wait_for(predicate, timeout_s: float, proc: subprocess.Popen | None = None) -> None:  # noqa: ANN001
    t0 = time.monotonic()
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError("timed out")
        time.sleep(0.3)


def _complete_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_a_killed_search_resumes_on_two_workers_without_losing_or_repeating_a_trial(
        tmp_path: Path, workbench_home: Path) -> None:
    """kill -9 mid-trial, then two workers join the same storage: nothing finished is lost, the killed
    trial is failed and queued again, and no settings run twice."""
    recipe = write_mini(tmp_path)
    db = tmp_path / "shared.sqlite"
    url = f"sqlite:///{db}"
    env = {**os.environ, "WORKBENCH_HOME": str(workbench_home)}
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "accelerate", str(recipe), "--trials", "5",
                             "--storage", url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _complete_count(db) >= 1, 240, proc)
        name = optuna.get_all_study_summaries(url)[0].study_name
        _wait_for(lambda: any(t.state == optuna.trial.TrialState.RUNNING for t in _study_trials(url, name)), 60, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {t.number: t.values for t in _study_trials(url, name) if t.state == optuna.trial.TrialState.COMPLETE}
    killed = [t for t in _study_trials(url, name) if t.state == optuna.trial.TrialState.RUNNING]
    assert before and killed, "the kill should land mid-trial, after a finished one"

    workers = [subprocess.Popen([sys.executable, "-m", "workbench", "accelerate-worker", name, "--storage", url,
                                 "--trials", "4", "--json"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = []
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    after = {t.number: t for t in _study_trials(url, name)}
    for number, values in before.items():  # nothing finished was lost or re-run
        assert after[number].state == optuna.trial.TrialState.COMPLETE and after[number].values == values
    for t in killed:
        assert after[t.number].state == optuna.trial.TrialState.FAIL
        assert "ended mid-trial" in after[t.number].user_attrs["reason"]
        retries = [r for r in after.values() if r.user_attrs.get("retry_of") == t.number]
        assert len(retries) == 1  # queued again exactly once, though both workers looked
    ran = [set(o["trials_run"]) for o in outputs]
    assert ran[0] and ran[1], "both workers should have run trials"
    assert not ran[0] & ran[1]
    done = [t for t in after.values() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 4
    keys = [tuple(sorted(t.params.items())) for t in done]
    assert len(keys) == len(set(keys)), "the same settings ran twice"
    run_ids = [t.user_attrs["run_id"] for t in done]
    assert len(run_ids) == len(set(run_ids))
    assert {w.pid for w in workers} <= {t.user_attrs["worker"]["pid"] for t in done}
