"""The GUI thread's pause for the full garbage collection the window runs after each job: startup heap
frozen (what ``workbench.gui.app.main`` does) vs not.

Why it exists: the window collects garbage on the GUI thread when a job ends (so a job thread never
frees a Qt object), and a full collection scans every tracked object. Each configuration runs in a
fresh process, as the app starts: the window on the built-in recipe with a static-INT8 ``[quantize]``
section, then (frozen only) ``freeze_startup_heap()``; it times full collections right after start-up
and again after one run through ``MainWindow.start_run`` (the first run imports the ONNX exporter and
onnxruntime.quantization). Processes alternate A B, B A, A B, …; each repetition gives the pause
the freeze saves (not frozen − frozen) per moment, in ms: a pause, not a speed-up.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gc_pause.py
    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gc_pause.py --quick    # smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from _common import (  # noqa: E402
    MIN_REPETITIONS,
    TreeContentionMonitor,
    alternating_order,
    contention_line,
    markdown_table,
    print_header,
)

CONFIGS = ("not frozen", "frozen")
COLLECTIONS = 5  # per moment; the median is kept

RECIPE = """\
version = 1
name = "gc-pause"
[data]
samples_per_class = 40
[train]
epochs = 1
[bench]
batch_sizes = [1]
max_time_s = 0.5
[quantize]
method = "static"
calibration_samples = 64
"""


def _pause_ms() -> float:
    out = []
    for _ in range(COLLECTIONS):
        t = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out)


def child(frozen: bool) -> dict[str, float]:
    """One app process: the pause after start-up and after one quantizing run (JSON on stdout)."""
    from PySide6.QtCore import QCoreApplication

    from workbench.gui.app import create_app, freeze_startup_heap
    from workbench.gui.main_window import MainWindow

    recipe = Path(tempfile.mkdtemp(prefix="wb-gc-")) / "gc.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    create_app()
    window = MainWindow(recipe=recipe)
    window.show()

    def settle() -> None:
        deadline = time.monotonic() + 300
        QCoreApplication.processEvents()
        while window.jobs.jobs() and time.monotonic() < deadline:
            QCoreApplication.processEvents()
            time.sleep(0.02)
        for _ in range(10):
            QCoreApplication.processEvents()

    settle()  # the model summary and data previews the window starts with
    if frozen:
        freeze_startup_heap()
    startup = _pause_ms()
    assert window.start_run(False) is not None
    settle()
    runs = window.store.list_runs()
    if [r.status for r in runs] != ["completed"]:
        raise SystemExit(f"the run did not complete: {[(r.status, r.error) for r in runs]}")
    return {"startup_ms": startup, "after_run_ms": _pause_ms(), "tracked": len(gc.get_objects()),
            "frozen": gc.get_freeze_count()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repetitions", type=int, default=MIN_REPETITIONS)
    ap.add_argument("--quick", action="store_true", help="one repetition: checks the script, not a result")
    ap.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "frozen")))
        return 0
    reps = 1 if args.quick else max(args.repetitions, MIN_REPETITIONS)
    print_header("GUI-thread pause of the per-job garbage collection: startup heap frozen vs not")
    if args.quick:
        print("QUICK smoke run: not a result\n")
    results: dict[int, list[dict[str, float]]] = {0: [], 1: []}
    loads = []
    for _rep, i in alternating_order(len(CONFIGS), reps):
        env = {**os.environ, "WORKBENCH_HOME": tempfile.mkdtemp(prefix="wb-gc-home-")}
        with TreeContentionMonitor() as mon:
            proc = subprocess.run([sys.executable, __file__, "--child", CONFIGS[i]], env=env, capture_output=True,
                                  text=True, timeout=600)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        loads.append(mon.load)
        results[i].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = []
    for i, name in enumerate(CONFIGS):
        r = results[i]
        rows.append([name, f"{statistics.median(x['startup_ms'] for x in r):.1f}",
                     f"{statistics.median(x['after_run_ms'] for x in r):.1f}",
                     f"{statistics.median(x['frozen'] for x in r):.0f}",
                     f"{statistics.median(x['tracked'] for x in r):.0f}"])
    print(markdown_table(["Startup heap", "Pause after start-up (ms)", "Pause after a quantizing run (ms)",
                          "Frozen objects", "Objects scanned after the run"], rows, "lrrrr"))
    print()
    for key, moment in (("startup_ms", "after start-up"), ("after_run_ms", "after a quantizing run")):
        saved = [a[key] - b[key] for a, b in zip(results[0], results[1], strict=True)]
        print(f"Pause saved by freezing, {moment}: {statistics.median(saved):.0f} ms (range {min(saved):.0f}–"
              f"{max(saved):.0f} ms, {len(saved)} repetition(s))")
    print()
    worst = max(loads, key=lambda ld: ld.others_cores)
    print(contention_line(worst, "during the busiest process (this one counted as ours)"))
    print("Alternated, NOT paired in-process: each configuration needs a fresh process, so they ran one after "
          "another in the order A B, B A, A B, …; each saving is one repetition's difference, both sides measured "
          "back to back. A change in machine load between the two sides of a repetition still moves it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
