"""GUI overhead: training throughput with live plots vs headless (alternated), and the longest event-loop stall.

The same recipe runs headless (``run_recipe`` with a silent reporter, as ``workbench run`` does)
and in the app (``MainWindow.start_run`` with the dashboard redrawing live). The two cannot share
one process's interleaved timing rounds (each is a whole training run), so they are ALTERNATED,
not paired: repetition 1 runs headless then GUI, repetition 2 GUI then headless, and so on (at
least 3 repetitions). Each repetition gives one GUI / headless ratio of the engine's own
steady-state ``train_samples_per_s``; the table reports their median with the range, the thread
count both used, and the CPU other processes took during every run. While a separate GUI run
streams metrics, a 5 ms QTimer on the GUI thread records the gaps between its ticks: a gap far
above 5 ms is a stall.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui_overhead.py            # full
    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui_overhead.py --quick    # smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("WORKBENCH_HOME", tempfile.mkdtemp(prefix="wb-bench-gui-"))

from _common import (  # noqa: E402
    ALTERNATED_NOTE,
    MIN_REPETITIONS,
    AlternatedRatio,
    TreeContentionMonitor,
    alternating_order,
    markdown_table,
    print_header,
    threads_line,
)
from PySide6.QtCore import QElapsedTimer, QEventLoop, QThread, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from workbench.core.measure.paired import CpuLoad, choose_threads  # noqa: E402
from workbench.core.store import RunStore  # noqa: E402
from workbench.gui.app import create_app  # noqa: E402
from workbench.gui.main_window import MainWindow  # noqa: E402
from workbench.recipe import Recipe, load_recipe  # noqa: E402
from workbench.techniques import run_recipe  # noqa: E402


def bench_recipe(epochs: int) -> Recipe:
    from workbench.core.paths import quickstart_recipe_path

    r = load_recipe(quickstart_recipe_path())
    r.name = "gui-overhead"
    r.train.epochs = epochs
    r.train.log_every = 5
    r.bench.enabled = False  # the comparison is about training throughput
    return r


def headless(recipe: Recipe, store: RunStore) -> float:
    outcome = run_recipe(recipe, store=store)
    assert outcome.status == "completed", outcome.error
    return float(outcome.summary["train"]["train_samples_per_s"])


def in_gui(app: QApplication, window: MainWindow, recipe: Recipe, probe: bool) -> tuple[float, list[float]]:
    """One run in the app. With ``probe``, a 5 ms timer records event-loop gaps (it costs CPU itself,
    so throughput rounds run without it)."""
    gaps: list[float] = []
    clock = QElapsedTimer()
    ticker = QTimer()
    ticker.setInterval(5)

    def tick() -> None:
        gaps.append(clock.nsecsElapsed() / 1e6)
        clock.restart()

    ticker.timeout.connect(tick)
    job = window.start_run()
    assert job is not None, "the app refused to start the run"
    result: dict[str, object] = {}
    loop = QEventLoop()
    job.finished.connect(lambda outcome: (result.setdefault("outcome", outcome), loop.quit()))
    clock.start()
    if probe:
        ticker.start()
    loop.exec()  # a real Qt event loop, as in the app
    ticker.stop()
    while window.jobs.busy:
        app.processEvents()
        QThread.msleep(1)
    outcome = result["outcome"]
    assert outcome.status == "completed", outcome.error  # type: ignore[attr-defined]
    return float(outcome.summary["train"]["train_samples_per_s"]), gaps[1:]  # type: ignore[attr-defined]


def settle(app: QApplication, window: MainWindow, timeout_s: float = 60.0) -> None:
    """Let the panels' background jobs (model summary, sample previews) finish before timing."""
    deadline = QElapsedTimer()
    deadline.start()
    while (window.jobs.jobs() or deadline.elapsed() < 700) and deadline.elapsed() < timeout_s * 1000:  # 700 ms: past the debounce
        app.processEvents()
        QThread.msleep(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=MIN_REPETITIONS,
                    help=f"alternated repetitions of headless and GUI (at least {MIN_REPETITIONS})")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--probe-rounds", type=int, default=1, help="extra GUI runs with the stall probe")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for every run (0 = auto: free cores)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 epoch on 100 images per class")
    args = ap.parse_args(argv)
    if args.rounds < MIN_REPETITIONS:
        ap.error(f"--rounds {args.rounds}: at least {MIN_REPETITIONS} are needed for a range")
    if args.quick:
        args.epochs = 1
    app = create_app()  # the app's own QApplication setup (style, plot options)
    store = RunStore()
    window = MainWindow(store=store)
    window.show()
    recipe = bench_recipe(args.epochs)
    if args.quick:
        recipe.data.samples_per_class = 100
    # One thread count for every run, chosen once: the pipeline would otherwise choose per run, and a
    # ratio of two runs with different thread counts measures the threads, not the GUI.
    choice = choose_threads(args.threads)
    recipe.bench.threads = choice.threads
    window.set_recipe(recipe, None)
    settle(app, window)  # the model summary and data previews the panels compute once, as before a click
    headless(recipe, store)  # warm-up: dataset generation, allocator, first-run imports
    sps: list[list[float]] = [[], []]  # headless, GUI
    loads: list[list[CpuLoad]] = [[], []]
    for _, mode in alternating_order(2, args.rounds):
        with TreeContentionMonitor() as mon:
            sps[mode].append(headless(recipe, store) if mode == 0 else in_gui(app, window, recipe, probe=False)[0])
        assert mon.load is not None
        loads[mode].append(mon.load)
    all_gaps: list[float] = []
    for _ in range(args.probe_rounds):
        all_gaps += in_gui(app, window, recipe, probe=True)[1]
    window.shutdown()
    window.close()
    ratio = AlternatedRatio([g / h for h, g in zip(sps[0], sps[1], strict=True)], loads[0] + loads[1])
    stalls = sorted(all_gaps)

    print_header("GUI overhead: live plots vs headless, alternated" + (" (QUICK smoke run: not a result)"
                                                                       if args.quick else ""),
                 argv=None if argv is None else [sys.argv[0], *argv], env=("QT_QPA_PLATFORM",))
    print(threads_line(choice) + "; the same count for headless and GUI runs  ")
    print(f"{args.rounds} alternated repetitions of {args.epochs} epoch(s) of the quickstart recipe "
          f"({recipe.data.samples_per_class} images per class, benchmark off), after one headless warm-up run; then "
          f"{args.probe_rounds} GUI run(s) with the stall probe\n")
    h, g = statistics.median(sps[0]), statistics.median(sps[1])
    problems = ratio.problems()
    print(markdown_table(
        ["Measure", "Headless", "GUI with live plots", "GUI / headless (median, range)", "Reliable"],
        [["training samples/s (median over repetitions)", f"{h:,.0f}", f"{g:,.0f}", ratio.cell(),
          "yes" if not problems else "NO: " + "; ".join(problems)],
         ["per repetition", ", ".join(f"{v:,.0f}" for v in sps[0]), ", ".join(f"{v:,.0f}" for v in sps[1]),
          ", ".join(f"{v:.3f}" for v in ratio.values), ""],
         ["others' cores per run", ", ".join(f"{ld.others_cores:.2f}" for ld in loads[0]),
          ", ".join(f"{ld.others_cores:.2f}" for ld in loads[1]), "", ""]],
        "lrrrl"))
    print()
    print(ALTERNATED_NOTE)
    print()
    print(markdown_table(["Event loop (5 ms probe timer on the GUI thread during a whole GUI run)", "Value"], [
        ["ticks observed", str(len(stalls))],
        ["median gap", f"{statistics.median(stalls):.1f} ms"],
        ["p99 gap", f"{stalls[int(0.99 * (len(stalls) - 1))]:.1f} ms"],
        ["longest gap (worst stall)", f"{stalls[-1]:.1f} ms"]], "lr"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
