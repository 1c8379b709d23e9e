"""GUI overhead: training throughput with live plots vs headless, and the longest event-loop stall.

The same recipe runs alternately headless (``run_recipe`` with a silent reporter, as
``workbench run`` does) and in the app (``MainWindow.start_run`` with the dashboard redrawing
live), round by round, so machine noise hits both alike. Throughput is the engine's own
steady-state ``train_samples_per_s`` of each run. While the GUI run streams metrics, a 5 ms
QTimer on the GUI thread records the gaps between its ticks: a gap far above 5 ms is a stall.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui_overhead.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("WORKBENCH_HOME", tempfile.mkdtemp(prefix="wb-bench-gui-"))

from PySide6.QtCore import QElapsedTimer, QEventLoop, QThread, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from workbench.engine.pipeline import run_recipe  # noqa: E402
from workbench.engine.store import RunStore  # noqa: E402
from workbench.engine.telemetry import device_description  # noqa: E402
from workbench.gui.app import create_app  # noqa: E402
from workbench.gui.main_window import MainWindow  # noqa: E402
from workbench.recipe import Recipe, load_recipe  # noqa: E402


def bench_recipe(epochs: int) -> Recipe:
    from workbench.cli import quickstart_recipe_path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--probe-rounds", type=int, default=1, help="extra GUI runs with the stall probe")
    args = ap.parse_args()
    app = create_app()  # the app's own QApplication setup (style, plot options)
    store = RunStore()
    window = MainWindow(store=store)
    window.show()
    recipe = bench_recipe(args.epochs)
    window.set_recipe(recipe, None)
    settle(app, window)  # the model summary and data previews the panels compute once, as before a click
    headless(recipe, store)  # warm-up: dataset generation, allocator, first-run imports
    heads, guis, all_gaps = [], [], []
    for _ in range(args.rounds):
        heads.append(headless(recipe, store))
        guis.append(in_gui(app, window, recipe, probe=False)[0])
    for _ in range(args.probe_rounds):
        all_gaps += in_gui(app, window, recipe, probe=True)[1]
    window.shutdown()
    window.close()
    h, g = statistics.median(heads), statistics.median(guis)
    stalls = sorted(all_gaps)
    p99 = stalls[int(0.99 * (len(stalls) - 1))]
    print(f"machine: {device_description()}; load average {os.getloadavg()[0]:.2f}; "
          f"{args.rounds} interleaved rounds of {args.epochs} epochs of the quickstart recipe; "
          f"then {args.probe_rounds} GUI run(s) with the stall probe\n")
    print("| measure | headless | GUI with live plots | GUI / headless |")
    print("|---|---:|---:|---:|")
    print(f"| training samples/s (median) | {h:,.0f} | {g:,.0f} | {g / h:.3f} |")
    print(f"| per round | {', '.join(f'{v:,.0f}' for v in heads)} | {', '.join(f'{v:,.0f}' for v in guis)} | |")
    print()
    print("| event loop (5 ms probe timer on the GUI thread during a whole GUI run) | value |")
    print("|---|---:|")
    print(f"| ticks observed | {len(stalls)} |")
    print(f"| median gap | {statistics.median(stalls):.1f} ms |")
    print(f"| p99 gap | {p99:.1f} ms |")
    print(f"| longest gap (worst stall) | {stalls[-1]:.1f} ms |")


if __name__ == "__main__":
    main()
