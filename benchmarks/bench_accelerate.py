"""Accelerate on the built-in small CNN and the ResNet-style zoo model: what a 10-minute search finds.

For each model: train it once (a normal run, not counted in the search budget), then run
``analysis.accelerate.run_search`` from those weights with the latency objective, a 1-point accuracy
budget on the validation split and a 10-minute time budget. Every trial is timed paired against torch
eager fp32 at batch 1 (interleaved rounds, 95 % CI). Printed: every trial, the Pareto front, the
winner's speed-up, CI, eval accuracy change and split by cause, and whether the acceptance holds.

    .venv/bin/python benchmarks/bench_accelerate.py                  # both models, 10 min each
    .venv/bin/python benchmarks/bench_accelerate.py --quick          # smoke: tiny data, 60 s

Goal (issue #12): the chosen model at least 3x faster than torch eager fp32 at batch 1, within 1 point
of accuracy on eval, and at least 5 trials on the Pareto front (speed-up against accuracy drop on
validation, over every finished trial).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("WORKBENCH_HOME", os.path.join(tempfile.gettempdir(), "workbench-bench-accelerate"))

from _common import markdown_table, print_header  # noqa: E402

from workbench.analysis.accelerate import SearchSettings, run_search  # noqa: E402
from workbench.analysis.accelerate.search import points_delta  # noqa: E402
from workbench.core.store import RunStore  # noqa: E402
from workbench.recipe import Recipe  # noqa: E402
from workbench.techniques import run_recipe  # noqa: E402


def train_base(model: str, samples_per_class: int, epochs: int, store: RunStore) -> tuple[int, float]:
    r = Recipe(name=f"bench-accelerate-{model}-base")
    r.model.zoo = model
    r.data.samples_per_class = samples_per_class
    r.train.epochs = epochs
    r.bench.enabled = False
    t0 = time.monotonic()
    out = run_recipe(r, store=store)
    if out.status != "completed":
        raise SystemExit(f"training {model} failed (run {out.run_id}): {out.error}")
    return out.run_id, time.monotonic() - t0


def search(model: str, base_run: int, samples_per_class: int, budget_s: float, max_drop: float,
           store: RunStore) -> dict:
    r = Recipe(name=f"bench-accelerate-{model}")
    r.model.zoo = model
    r.model.weights = f"run:{base_run}"
    r.data.samples_per_class = samples_per_class
    r.train.epochs = 0
    settings = SearchSettings(objective="latency", max_drop=max_drop, time_budget_s=budget_s,
                              study=f"bench-{model}-{int(time.time())}")
    t0 = time.monotonic()
    out = run_search(r, settings, store=store)
    if out.status != "completed":
        raise SystemExit(f"search on {model} {out.status} (run {out.run_id}): {out.error}")
    acc = out.summary["accelerate"]
    acc["wall_s"] = time.monotonic() - t0
    acc["run_id"] = out.run_id
    return acc


def report(model: str, acc: dict, train_s: float, max_drop: float) -> bool:
    front = set(acc["pareto"])
    rows = []
    for t in acc["trials"]:
        ci = t.get("ci95") or []
        rows.append([t["number"], t["label"], t["state"] + (f" ({t['reason']})" if t.get("reason") else ""),
                     f"{t['speedup']:.2f}x ({ci[0]:.2f}–{ci[1]:.2f})" if t.get("speedup") is not None else "",
                     points_delta(t.get("drop_points")), points_delta(t.get("eval_drop_points")),
                     f"{t['size_ratio']:.1f}x" if t.get("size_ratio") else "",
                     "yes" if t.get("reliable") else ("no" if t.get("reliable") is False else ""),
                     f"{t['duration_s']:.0f}" if t.get("duration_s") else "", "●" if t["number"] in front else ""])
    ref = acc["reference"]
    print(f"\n### {model}: search run {acc['run_id']} (study {acc['study']})\n")
    print(f"Reference: {ref['label']}, validation accuracy {ref['val_accuracy'] * 100:.2f} %, eval accuracy "
          f"{ref['eval_accuracy'] * 100:.2f} %; "
          + (f"base model trained in {train_s:.0f} s (outside the search budget); " if train_s == train_s else "")
          + f"search wall time {acc['wall_s']:.0f} s, stopped: {acc.get('stopped')}.\n")
    print(markdown_table(["#", "Configuration", "State", "Speed-up batch 1 (95 % CI)", "Δ acc val", "Δ acc eval",
                          "Smaller", "Reliable", "Trial s", "Pareto"], rows))
    done = [t for t in acc["trials"] if t["state"] == "complete"]
    best = acc.get("best")
    print(f"\nFinished trials: {len(done)}; on the Pareto front: {len(front)}; "
          f"pruned: {acc['counts'].get('pruned', 0)}; failed: {acc['counts'].get('fail', 0)}.")
    if best is None:
        print("No trial within the budget.")
        return False
    print(f"Before → After: {acc['card']}")
    split = " × ".join(f"{s['name']} {s['ratio']:.2f}x" for s in best.get("steps") or [] if s.get("ratio"))
    print(f"Split by cause: {split}; timing reliable: {best.get('reliable')} {best.get('unreliable_reason') or ''}")
    eval_drop = best.get("eval_drop_points")
    ok = best["speedup"] >= 3.0 and eval_drop is not None and eval_drop <= max_drop + 1e-9 and len(front) >= 5
    print(f"Acceptance (>= 3x at batch 1, within {max_drop:g} point on eval, >= 5 trials on the Pareto front): "
          f"{'MET' if ok else 'NOT MET'} ({best['speedup']:.2f}x, eval {-eval_drop:+.2f} points, "
          f"{len(front)} on the front of {len(done)} finished)")
    return ok


def report_stored(run_ids: list[int], max_drop: float) -> int:
    """The report of searches already run, from their study storage (no timing happens)."""
    from workbench.analysis.accelerate.search import _fill_results
    from workbench.analysis.accelerate.study import create_or_load, default_storage_url, open_storage

    print_header("Accelerate: stored searches reported again (nothing re-measured)")
    ok = []
    with RunStore() as store:
        for rid in run_ids:
            run = store.get_run(rid)
            if run is None or run.kind != "accelerate":
                print(f"run {rid}: not an Accelerate search in {store.path}")
                return 2
            acc = dict(run.summary["accelerate"])
            settings = SearchSettings(**{**acc["settings"], "time_budget_s": 1.0})
            study = create_or_load(acc["study"], open_storage(settings.storage or default_storage_url()),
                                   lambda t: [0.0], 0)
            _fill_results(acc, study, settings, store)
            acc.update(run_id=rid, wall_s=acc.get("elapsed_s") or 0.0)
            ok.append(report(run.model, acc, float("nan"), max_drop))
    return 0 if all(ok) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", default="small_cnn,resnet")
    ap.add_argument("--samples-per-class", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--budget", type=float, default=600.0, help="search time budget per model, seconds")
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report-runs", default="", metavar="IDS",
                    help="re-read stored searches (comma list of their run IDs) and report them with the current "
                    "rules, measuring nothing")
    args = ap.parse_args(argv)
    if args.report_runs:
        return report_stored([int(x) for x in args.report_runs.split(",")], args.max_drop)
    if args.quick:
        args.samples_per_class, args.epochs, args.budget = 40, 1, 60.0
    print_header("Accelerate: a time-boxed search for the fastest model within 1 point"
                 + (" (QUICK smoke run: not a result)" if args.quick else ""),
                 argv=None if argv is None else [sys.argv[0], *argv])
    results = []
    with RunStore() as store:
        for model in args.models.split(","):
            base, train_s = train_base(model, args.samples_per_class, args.epochs, store)
            acc = search(model, base, args.samples_per_class, args.budget, args.max_drop, store)
            results.append(report(model, acc, train_s, args.max_drop))
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
