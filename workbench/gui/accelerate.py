"""Accelerate view: one button searches for the fastest model within an accuracy budget.

Three settings (objective, accuracy budget, time budget; "Quick" is the two-minute demo budget) and
Start. The search (``analysis.accelerate.run_search``) runs as an exclusive job like a training run
(progress with ETA, Stop, log). Every trial is a stored run, so the trials table and the Pareto
chart fill in live from the search's stored summary each time a trial run starts; at the end the
"Before → After" card shows the chosen model, its paired speed-up with CI, the split by cause, and
where its deployment bundle is. A stored search re-opens here from the Runs tab.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from workbench.analysis.accelerate.search import points_delta as _delta
from workbench.core.store import RunStore
from workbench.gui.jobs import Job, JobManager
from workbench.recipe import Recipe

#: Time budgets offered (label, seconds). Quick is the demo: launch to Before → After in two minutes.
BUDGETS = (("Quick (2 min)", 120.0), ("10 min", 600.0), ("30 min", 1800.0), ("1 h", 3600.0))
COLUMNS = ("#", "Configuration", "State", "Speed-up (95 % CI)", "Δ acc val", "Δ acc eval", "Smaller", "Run")
FRONT_COLOUR, BEST_COLOUR, OTHER_COLOUR = "#1f77b4", "#d62728", "#9e9e9e"


class AccelerateView(QWidget):
    """The Accelerate tab: settings, Start, the live trials table, the Pareto chart and the card."""

    jobStarted = Signal(object)  # Job
    cardShown = Signal(int)  # the search run's ID

    def __init__(self, store: RunStore, jobs: JobManager, current_recipe: Callable[[], Recipe | None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.jobs = jobs
        self.current_recipe = current_recipe
        self.run_id: int | None = None
        self._job_id: int | None = None
        self._recipe_valid = True
        outer = QVBoxLayout(self)
        form = QFormLayout()
        self.objective = QComboBox()
        self.objective.setObjectName("accelerateObjective")
        self.objective.addItem("Latency (batch 1)", "latency")
        self.objective.addItem("Throughput (batch size searched too)", "throughput")
        self.objective.setToolTip("Latency: how fast one input is answered (batch 1). Throughput: samples per "
                                  "second, the batch size is part of the search.")
        form.addRow("Objective", self.objective)
        self.max_drop = QDoubleSpinBox()
        self.max_drop.setObjectName("accelerateMaxDrop")
        self.max_drop.setRange(0.0, 100.0)
        self.max_drop.setDecimals(2)
        self.max_drop.setSingleStep(0.25)
        self.max_drop.setValue(1.0)
        self.max_drop.setSuffix(" points")
        self.max_drop.setToolTip("Accuracy budget: a model that loses more than this on the validation split is "
                                 "never chosen (the eval split reports the winner).")
        form.addRow("Accuracy budget", self.max_drop)
        self.budget = QComboBox()
        self.budget.setObjectName("accelerateBudget")
        for label, seconds in BUDGETS:
            self.budget.addItem(label, seconds)
        self.budget.setToolTip("When to stop starting trials. Quick reaches a result in two minutes on a laptop; "
                               "longer budgets try pruning ratios, calibration methods and torch.compile too. The "
                               "same settings resume the same search.")
        form.addRow("Time budget", self.budget)
        outer.addLayout(form)
        row = QHBoxLayout()
        self.start_button = QPushButton("Start Accelerate")
        self.start_button.setObjectName("accelerateStart")
        self.start_button.setToolTip("Train the model once if needed, then try precisions, runtimes, INT8 and "
                                     "pruning; every trial is a stored run timed paired against torch eager fp32")
        self.start_button.clicked.connect(self.start)
        row.addWidget(self.start_button)
        self.status = QLabel("Pick the settings and press Start; the recipe on the left gives the model and data.")
        self.status.setObjectName("accelerateStatus")
        self.status.setWordWrap(True)
        row.addWidget(self.status, 1)
        outer.addLayout(row)
        self.card = QFrame()
        self.card.setObjectName("beforeAfterCard")
        self.card.setFrameShape(QFrame.Shape.StyledPanel)
        self.card.setStyleSheet("#beforeAfterCard { background: #f3f8fc; border: 1px solid #9cc3e4; "
                                "border-radius: 4px; }")
        card_lay = QVBoxLayout(self.card)
        self.card_title = QLabel()
        self.card_title.setObjectName("beforeAfterHeadline")
        self.card_title.setWordWrap(True)
        self.card_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.card_body = QLabel()
        self.card_body.setObjectName("beforeAfterDetails")
        self.card_body.setWordWrap(True)
        self.card_body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        card_lay.addWidget(self.card_title)
        card_lay.addWidget(self.card_body)
        self.card.setVisible(False)
        outer.addWidget(self.card)
        split = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("accelerateTrials")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # numbers and titles never cut
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        split.addWidget(self.table)
        self.chart = pg.PlotWidget(background="w")
        self.chart.setObjectName("acceleratePareto")
        # The legend is part of the title, above the data: inside the plot it would hide trials.
        self.chart.setTitle("Every finished trial: speed-up against accuracy change (validation)<br>"
                            f"<span style='font-size:8pt'><span style='color:{OTHER_COLOUR}'>●</span> trial &nbsp; "
                            f"<span style='color:{FRONT_COLOUR}'>●━</span> Pareto front &nbsp; "
                            f"<span style='color:{BEST_COLOUR}'>★</span> chosen &nbsp; "
                            f"<span style='color:{BEST_COLOUR}'>┆</span> accuracy budget</span>")
        self.chart.setLabel("bottom", "accuracy change (points, validation)")
        self.chart.setLabel("left", "speed-up vs torch eager fp32 (x)")
        self.chart.showGrid(x=True, y=True, alpha=0.2)
        self.chart.setMinimumHeight(180)
        self._others = pg.ScatterPlotItem(size=8, brush=pg.mkBrush(OTHER_COLOUR), pen=None, name="trial")
        self._front = pg.PlotDataItem(pen=pg.mkPen(FRONT_COLOUR, width=2), symbol="o", symbolSize=9,
                                      symbolBrush=FRONT_COLOUR, name="Pareto front")
        self._best = pg.ScatterPlotItem(size=16, symbol="star", brush=pg.mkBrush(BEST_COLOUR), pen=None,
                                        name="chosen")
        # Labelled on the chart itself: a legend cannot draw an InfiniteLine's sample.
        self._budget_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(BEST_COLOUR, style=Qt.PenStyle.DashLine),
                                            label="accuracy budget", labelOpts={"position": 0.06,
                                                                                "color": BEST_COLOUR})
        for item in (self._others, self._front, self._best):
            self.chart.addItem(item)
        self.chart.addItem(self._budget_line)
        split.addWidget(self.chart)
        outer.addWidget(split, 1)

    # ------------------------------------------------------------------------------------------ state
    def set_recipe_valid(self, ok: bool) -> None:
        self._recipe_valid = ok
        self._update_enabled()

    def set_busy(self, busy: bool) -> None:
        self.start_button.setEnabled(not busy and self._recipe_valid)

    def _update_enabled(self) -> None:
        self.start_button.setEnabled(self._recipe_valid and not self.jobs.busy)

    def choose_quick(self) -> None:
        """The demo path: the Quick budget with default objective and budget."""
        self.budget.setCurrentIndex(0)

    # ------------------------------------------------------------------------------------------ running
    def start(self) -> Job | None:
        """Start a search of the current recipe (None when busy or the recipe has errors)."""
        if self.jobs.busy:
            return None
        recipe = self.current_recipe()
        if recipe is None:
            self._set_status("The recipe has errors (fields marked in red); fix them first.", error=True)
            return None
        from workbench.analysis.accelerate import SearchSettings

        settings = SearchSettings(objective=self.objective.currentData(), max_drop=float(self.max_drop.value()),
                                  time_budget_s=float(self.budget.currentData()))
        store = self.store

        def work(reporter: Any, cancel: Any) -> Any:
            from workbench.analysis.accelerate import run_search

            return run_search(recipe, settings, store=store, reporter=reporter, cancel=cancel)

        self.run_id = None
        self.card.setVisible(False)
        self.table.setRowCount(0)
        self._plot([], [], None, settings.max_drop)
        job = self.jobs.start("Accelerate", work)
        self._job_id = job.id
        job.runStarted.connect(self._on_run_started)
        job.stageFinished.connect(self._on_stage_finished)
        job.finished.connect(self._on_finished)
        job.cancelledJob.connect(lambda: self._set_status("Accelerate stopped; finished trials are kept (Start "
                                                          "with the same settings resumes).", error=True))
        self._set_status(f"Searching ({self.budget.currentText()})… trials appear below as they finish.")
        self.jobStarted.emit(job)
        return job

    def _on_run_started(self, run_id: int, _name: str) -> None:
        if self.run_id is None:  # the first run a search records is the search itself
            self.run_id = run_id

    def _on_stage_finished(self, stage: str, _result: object) -> None:
        from workbench.analysis.accelerate.search import TRIALS_STAGE

        if stage == TRIALS_STAGE:  # the search stored its trials table again: a trial finished (or was queued)
            self.refresh()

    def _on_finished(self, outcome: object) -> None:
        self._job_id = None
        run_id = getattr(outcome, "run_id", None)
        if run_id is not None:
            self.run_id = int(run_id)
        self.refresh()
        status = getattr(outcome, "status", "")
        if status == "failed":
            self._set_status(f"Accelerate failed: {getattr(outcome, 'error', '')}", error=True)

    def refresh(self) -> None:
        """Show the search run's stored state (trials, chart, and the card once there is a winner)."""
        if self.run_id is None:
            return
        run = self.store.get_run(self.run_id)
        if run is None:
            return
        acc = (run.summary or {}).get("accelerate") or {}
        self.show_search(acc, run.status, self.run_id)

    def open_run(self, run_id: int) -> bool:
        """Show a stored search (from the Runs tab)."""
        run = self.store.get_run(run_id)
        if run is None or run.kind != "accelerate":
            return False
        self.run_id = run_id
        self.show_search((run.summary or {}).get("accelerate") or {}, run.status, run_id)
        return True

    # ------------------------------------------------------------------------------------------ drawing
    def show_search(self, acc: dict[str, Any], status: str, run_id: int) -> None:
        trials = acc.get("trials") or []
        front = set(acc.get("pareto") or [])
        best = acc.get("best")
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(trials))
        for i, t in enumerate(trials):
            ci = t.get("ci95") or []
            speed = f"{t['speedup']:.2f}x" if t.get("speedup") is not None else ""
            if speed and len(ci) == 2:
                speed += f" ({ci[0]:.2f}–{ci[1]:.2f})"
            state = t["state"] + (" · Pareto" if t["number"] in front else "")
            cells = (str(t["number"]), t["label"], state + (f": {t['reason']}" if t.get("reason") else ""), speed,
                     _delta(t.get("drop_points")), _delta(t.get("eval_drop_points")),
                     f"{t['size_ratio']:.1f}x" if t.get("size_ratio") else "", str(t.get("run_id") or ""))
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if best is not None and t["number"] == best["number"]:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                if j == 2 and t.get("reason"):
                    item.setToolTip(t["reason"])
                self.table.setItem(i, j, item)
        done = [t for t in trials if t["state"] == "complete" and t.get("speedup") is not None
                and t.get("drop_points") is not None]
        max_drop = float((acc.get("settings") or {}).get("max_drop", 1.0))
        self._plot(done, [t for t in done if t["number"] in front], best, max_drop)
        counts = acc.get("counts") or {}
        if status == "running":
            line = f"Search run #{run_id}: {counts.get('complete', len(done))} trial(s) finished"
            if best:
                line += f"; best so far {best['speedup']:.2f}x ({best['label']})"
            self._set_status(line + ".")
        elif best and acc.get("card"):
            self.show_card(acc, run_id)
            self._set_status(f"Search run #{run_id} {status}: {len(done)} finished trial(s), stopped because "
                             f"{acc.get('stopped', '')}.")
        elif status == "completed":
            self._set_status(f"Search run #{run_id}: no trial stayed within {max_drop:g} points; the chart shows the "
                             "trade-offs found.", error=True)

    def _plot(self, done: list[dict[str, Any]], front: list[dict[str, Any]], best: dict[str, Any] | None,
              max_drop: float) -> None:
        self._others.setData([-t["drop_points"] for t in done], [t["speedup"] for t in done],
                             data=[t["label"] for t in done])
        front = sorted(front, key=lambda t: -t["drop_points"])
        self._front.setData([-t["drop_points"] for t in front], [t["speedup"] for t in front])
        self._best.setData([-best["drop_points"]] if best else [], [best["speedup"]] if best else [])
        self._budget_line.setValue(-max_drop)
        self.chart.getPlotItem().enableAutoRange()

    def show_card(self, acc: dict[str, Any], run_id: int) -> None:
        """The Before → After card of a finished search."""
        best = acc["best"]
        ref = acc.get("reference") or {}
        self.card_title.setText(f"<span style='font-size:15pt'><b>Before → After:</b> "
                                f"{html.escape(acc['card'])}</span>")
        lines = []
        ev_before, ev_after = ref.get("eval_accuracy"), best.get("eval_accuracy")
        before = f"<b>Before</b>: {html.escape(ref.get('label', 'torch eager fp32'))}"
        if ev_before is not None:
            before += f", eval accuracy {ev_before * 100:.2f} %"
        if ref.get("size_bytes"):
            before += f", {ref['size_bytes'] / 1e6:.2f} MB"
        lines.append(before)
        after = f"<b>After</b>: {html.escape(best['label'])} (trial {best['number']}, run #{best.get('run_id')})"
        if ev_after is not None:
            after += f", eval accuracy {ev_after * 100:.2f} %"
        if best.get("size_bytes"):
            after += f", {best['size_bytes'] / 1e6:.2f} MB"
        lines.append(after)
        steps = [s for s in best.get("steps") or [] if s.get("ratio") is not None]
        if steps:
            lines.append("<b>Split by cause</b>: " + " × ".join(
                f"{html.escape(str(s['name']))} {s['ratio']:.2f}x" for s in steps))
        lines.append(html.escape(f"Measured paired against {ref.get('label', 'the reference')} "
                                 f"({best.get('basis', '')}); accuracy judged on validation, reported on eval."))
        if best.get("reliable") is False:
            lines.append(f"<span style='color:#8c1d18'>Unreliable timing: "
                         f"{html.escape(str(best.get('unreliable_reason', '')))}</span>")
        bundle = acc.get("bundle") or {}
        if bundle.get("path"):
            lines.append(f"<b>Bundle</b>: {html.escape(str(bundle['path']))}"
                         + (f" ({html.escape(bundle['note'])})" if bundle.get("note") else ""))
        elif bundle.get("error"):
            lines.append(f"Bundle not written: {html.escape(str(bundle['error']))}")
        self.card_body.setText("<br>".join(lines))
        self.card.setVisible(True)
        self.cardShown.emit(run_id)

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #8c1d18;" if error else "")
