"""Runs view: every stored run in a sortable table, side-by-side comparison charts, exports.

The table reads only run rows (the summary JSON rides along); metric series are never loaded here,
so ``refresh()`` stays cheap enough for the GUI thread. Charts are created once and updated with
new bar data, as DESIGN.md asks of every plot.

A speedup is only meaningful between two measured runs, so the comparison always names its
baseline: a plain fp32 run (no techniques) among the selection by default, else the oldest one.
A single run that recorded its own baseline is compared against it ("baseline vs final").

Beside the bars, a Pareto chart places every compared model by accuracy against latency (or
throughput), with the frontier from the engine's ``pareto_front`` (the same one the HTML report
draws). "Report…" writes that report through ``engine.report.write_report`` on a background job:
it may rebuild models for sample predictions, which must never freeze the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QPoint,
    Qt,
    QUrl,
    Signal,
)
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.core.fileio import atomic_write_bytes, atomic_write_text
from workbench.core.measure.comparison import (
    compare_run_to_baseline,
)
from workbench.core.store import RunRecord, RunStore
from workbench.gui.jobs import Job, JobManager
from workbench.gui.runs.charts import CHARTS, BarChart, ParetoChart, pareto_points, scaled
from workbench.gui.runs.compare import (
    SPEEDUP_COLUMNS,
    STAGE_COLUMNS,
    STAGE_METRICS,
    CompareEntry,
    default_baseline,
    fmt_delta,
    fmt_metric,
    fmt_ratio,
    proof_banner,
    ratio_text,
    short_label,
    speedup_row,
)
from workbench.gui.runs.export import csv_text, fit_rows, small_table, table_cell
from workbench.gui.runs.layers import LayersTab
from workbench.gui.runs.table import (
    COL_DATE,
    COL_ID,
    COLUMNS,
    EMPTY_MESSAGE,
    RunsFilterProxy,
    RunsTableModel,
)

# -- table columns -------------------------------------------------------------------------------


# -- Pareto --------------------------------------------------------------------------------------


# -- the view ------------------------------------------------------------------------------------

class RunsView(QWidget):
    """Browse, compare, export and delete stored runs."""

    openRecipeRequested = Signal(str)
    openSweepRequested = Signal(int)  # a stored sweep run to show in the Sweep view
    openAccelerateRequested = Signal(int)  # a stored Accelerate search to show in the Accelerate view
    runsDeleted = Signal(list)
    reportWritten = Signal(str)  # path of the HTML report just written
    pinnedBaselineChanged = Signal(object)  # run ID of the pinned baseline, or None (the window keeps it)

    def __init__(self, store: RunStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self._baseline_id: int | None = None  # the user's choice, kept while that run stays selected
        self._entries: list[CompareEntry] = []
        self._mode = "none"
        self._last_dir = Path.home()
        self._jobs: JobManager | None = None
        self._report_job_id: int | None = None
        self._report_out: Path | None = None
        self._report_extras: list[Path] = []

        self.model = RunsTableModel(self)
        self.proxy = RunsFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setDynamicSortFilter(True)

        self._build_actions()
        self._build_ui()
        self.refresh()

    # -- construction ----------------------------------------------------------------------------
    def _action(self, text: str, tip: str, slot: Callable[[], object]) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        self.open_recipe_action = self._action(
            "Open recipe", "Load the selected run's recipe into the editor, to rerun or vary it.",
            self.open_recipe)
        self.delete_action = self._action(
            "Delete…", "Delete the selected runs with their metric series, logs and saved files "
            "(asks first).", self.delete_selected)
        self.export_csv_action = self._action(
            "Export table as CSV…", "Save the rows shown in the table (after filtering) as a CSV file.",
            self._export_csv_dialog)
        self.refresh_action = self._action(
            "Refresh", "Reload the runs from the run store.", self.refresh)
        self.save_png_action = self._action(
            "Save chart as PNG…", "Save each comparison chart as a PNG image into a folder you choose.",
            self._save_png_dialog)
        self.save_chart_csv_action = self._action(
            "Save chart data as CSV…", "Save the numbers behind the comparison charts and the speedup "
            "table as a CSV file.", self._save_chart_csv_dialog)
        self.open_sweep_action = self._action(
            "Open sweep", "Show the selected sweep run's charts in the Sweep tab (or double-click a sweep row).",
            self.open_sweep)
        self.pin_action = self._action(
            "Pin as baseline", "Keep this run on top of the table and measure every comparison against it, "
            "even when it is not selected (kept across sessions).", self.pin_selected)
        self.unpin_action = self._action("Unpin baseline", "Stop measuring comparisons against the pinned run.",
                                         lambda: self.set_pinned_baseline(None))
        self.report_action = self._action(
            "Report…", "Write one self-contained HTML report (plus CSV and JSON of every number) for the "
            "selected runs; the baseline run comes first.", self.report_selected)

    def _button(self, action: QAction) -> QToolButton:
        button = QToolButton(self)
        button.setDefaultAction(action)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.setAutoRaise(False)
        return button

    def _build_ui(self) -> None:
        self.stack = QStackedWidget(self)
        root = QVBoxLayout(self)
        root.setContentsMargins(0, 0, 0, 0)
        root.addWidget(self.stack)

        self.empty_label = QLabel(EMPTY_MESSAGE, self)
        self.empty_label.setObjectName("runsEmptyLabel")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setToolTip("Runs appear here as soon as they start, and stay after the app closes.")
        self.stack.addWidget(self.empty_label)

        content = QWidget(self)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(6, 6, 6, 6)
        bar = QHBoxLayout()
        self.filter_edit = QLineEdit(content)
        self.filter_edit.setObjectName("runsFilter")
        self.filter_edit.setPlaceholderText("Filter by name, model or technique")
        self.filter_edit.setToolTip("Show only runs whose name, model or techniques contain every word typed.")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.proxy.set_filter_text)
        bar.addWidget(self.filter_edit, 1)
        for action in (self.open_recipe_action, self.open_sweep_action, self.report_action, self.delete_action,
                       self.export_csv_action, self.refresh_action):
            bar.addWidget(self._button(action))
        self.report_status = QLabel(content)
        self.report_status.setObjectName("reportStatus")
        self.report_status.setToolTip("Progress of the report being written.")
        bar.addWidget(self.report_status)
        layout.addLayout(bar)

        self.table = QTableView(content)
        self.table.setObjectName("runsTable")
        self.table.setToolTip("Stored runs. Select two or more (Ctrl/Shift-click) to compare them; "
                              "select one to see its baseline against its optimized result.")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL_ID, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._show_context_menu)
        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.table.doubleClicked.connect(self._on_double_clicked)

        self.context_menu = QMenu(self)
        self.context_menu.setToolTipsVisible(True)
        for action in (self.open_recipe_action, self.open_sweep_action, self.delete_action, None,
                       self.pin_action, self.unpin_action, None, self.report_action, self.export_csv_action,
                       self.save_png_action, self.save_chart_csv_action, None, self.refresh_action):
            if action is None:
                self.context_menu.addSeparator()
            else:
                self.context_menu.addAction(action)

        splitter = QSplitter(Qt.Orientation.Vertical, content)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.table)
        splitter.addWidget(self._build_compare(content))
        # The table gets room for about ten rows before the charts take the rest.
        header_h = self.table.horizontalHeader().sizeHint().height()
        self.table.setMinimumHeight(header_h + 10 * self.table.verticalHeader().defaultSectionSize() + 4)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        layout.addWidget(splitter, 1)
        self.stack.addWidget(content)

    def _build_compare(self, parent: QWidget) -> QWidget:
        self.compare_stack = QStackedWidget(parent)
        self.compare_hint = QLabel(self.compare_stack)
        self.compare_hint.setObjectName("compareHint")
        self.compare_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.compare_hint.setWordWrap(True)
        self.compare_hint.setToolTip("Comparison charts appear here for the runs selected above.")
        self.compare_stack.addWidget(self.compare_hint)

        page = QFrame(self.compare_stack)
        page.setObjectName("comparePanel")
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 4, 0, 0)
        top = QHBoxLayout()
        self.compare_title = QLabel(page)
        self.compare_title.setObjectName("compareTitle")
        self.compare_title.setToolTip("What the charts compare.")
        font = self.compare_title.font()
        font.setBold(True)
        self.compare_title.setFont(font)
        top.addWidget(self.compare_title)
        top.addStretch(1)
        self.baseline_label = QLabel("Baseline:", page)
        self.baseline_combo = QComboBox(page)
        self.baseline_combo.setObjectName("baselineCombo")
        self.baseline_combo.setToolTip("Run that speedups are measured against (grey bars). "
                                       "Defaults to a plain fp32 run, else the oldest selected.")
        self.baseline_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.baseline_label.setToolTip(self.baseline_combo.toolTip())
        self.baseline_combo.activated.connect(self._on_baseline_chosen)
        top.addWidget(self.baseline_label)
        top.addWidget(self.baseline_combo)
        top.addWidget(self._button(self.save_png_action))
        top.addWidget(self._button(self.save_chart_csv_action))
        layout.addLayout(top)

        self.compare_tabs = QTabWidget(page)
        self.compare_tabs.setObjectName("compareTabs")
        self.compare_tabs.setDocumentMode(True)
        bars_page = QWidget(self.compare_tabs)
        charts_row = QHBoxLayout(bars_page)
        charts_row.setContentsMargins(0, 0, 0, 0)
        self.charts: dict[str, BarChart] = {}
        for chart in CHARTS:
            self.charts[chart.key] = BarChart(chart, bars_page)
            charts_row.addWidget(self.charts[chart.key].widget)
        self.compare_tabs.addTab(bars_page, "Side by side")
        self.pareto = ParetoChart(self.compare_tabs)
        self.pareto.pointClicked.connect(self._on_pareto_clicked)
        self.compare_tabs.addTab(self.pareto, "Accuracy vs speed (Pareto)")
        self.layers_tab = LayersTab(self.store, self._job_manager, self.compare_tabs)
        self.compare_tabs.addTab(self.layers_tab, "Layers")
        self.compare_tabs.setTabToolTip(2, "Per-layer time before and after, and why the model is not faster.")
        self.compare_tabs.setTabToolTip(0, "Bars per metric; the grey bar is the baseline.")
        self.compare_tabs.setTabToolTip(1, "Accuracy against latency or throughput, with the Pareto frontier.")
        for button in self.compare_tabs.tabBar().findChildren(QToolButton):  # the tab bar's scroll arrows
            button.setToolTip("Scroll the chart tabs")
        layout.addWidget(self.compare_tabs, 3)

        self.proof_label = QLabel(page)
        self.proof_label.setObjectName("proofBanner")
        self.proof_label.setWordWrap(True)
        self.proof_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.proof_label.setToolTip(
            "How these ratios were measured. Paired: the baseline and the optimized model were timed in "
            "interleaved rounds in one process, so a busy machine slows both alike; the speedup is the median "
            "per-round ratio with its 95 % confidence interval. Unpaired: figures from runs timed at different "
            "times, which machine load can skew.")
        layout.addWidget(self.proof_label)
        self.speedup_table = small_table(SPEEDUP_COLUMNS, "speedupTable",
                                          "Each run against the chosen baseline, measured side by side.")
        header = self.speedup_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.speedup_table)
        self.stages_box = QWidget(page)
        stages_layout = QVBoxLayout(self.stages_box)
        stages_layout.setContentsMargins(0, 4, 0, 0)
        stages_title = QLabel("Stages of this run", self.stages_box)
        stages_title.setFont(font)
        stages_title.setToolTip("The optimization stages of this run, each measured before and after.")
        stages_layout.addWidget(stages_title)
        self.stages_table = small_table(STAGE_COLUMNS, "stagesTable",
                                         "Each optimization stage of this run, measured before and after.")
        stages_layout.addWidget(self.stages_table)
        layout.addWidget(self.stages_box)
        self.compare_stack.addWidget(page)
        return self.compare_stack

    # -- data --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload the run rows from the store, keeping the selection where the runs still exist."""
        keep = self.selected_ids()
        first_load = self.model.rowCount() == 0
        self.model.set_runs(self.store.list_runs())
        if first_load:
            self.table.resizeColumnsToContents()  # once: later refreshes keep the user's column widths
        self.stack.setCurrentIndex(0 if self.model.rowCount() == 0 else 1)
        present = [i for i in keep if self.model.row_of(i) is not None]
        if present:
            self.select_runs(present)
        else:
            self._on_selection_changed()

    def runs(self) -> list[RunRecord]:
        """All runs currently loaded (unfiltered), newest first."""
        return self.model.runs()

    def selected_runs(self) -> list[RunRecord]:
        """Selected runs, oldest first (the order the bars are drawn in)."""
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        return sorted((self.model.run_at(r) for r in rows), key=lambda r: (r.created_at, r.id))

    def selected_ids(self) -> list[int]:
        return [r.id for r in self.selected_runs()]

    def select_runs(self, ids: Sequence[int]) -> None:
        """Select exactly these runs (clearing the filter if it hides any of them)."""
        rows = []
        for run_id in ids:
            row = self.model.row_of(run_id)
            if row is None:
                raise KeyError(f"no run with ID {run_id} in the table")
            rows.append(row)
        if self.filter_edit.text() and any(
                not self.proxy.mapFromSource(self.model.index(r, 0)).isValid() for r in rows):
            self.filter_edit.clear()
        selection = QItemSelection()
        for row in rows:
            index = self.proxy.mapFromSource(self.model.index(row, 0))
            selection.select(index, index)
        flags = (QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.table.selectionModel().select(selection, flags)
        if rows:
            self.table.scrollTo(self.proxy.mapFromSource(self.model.index(rows[0], 0)))
        self._on_selection_changed()

    # -- selection and comparison -----------------------------------------------------------------
    def _on_selection_changed(self, *_: object) -> None:
        runs = self.selected_runs()
        running = any(r.status == "running" for r in runs)
        one = len(runs) == 1
        self.open_recipe_action.setEnabled(one and bool(runs[0].recipe))
        self.open_sweep_action.setEnabled(one and runs[0].kind == "sweep")
        pinned = self.model.pinned
        self.pin_action.setEnabled(one and runs[0].status == "completed" and bool(runs[0].final)
                                   and runs[0].id != pinned)
        self.unpin_action.setEnabled(pinned is not None)
        self.report_action.setEnabled(bool(runs) and not running and self._report_job_id is None)
        self.delete_action.setEnabled(bool(runs) and not running)
        self.delete_action.setToolTip(
            "A running run cannot be deleted: cancel it first." if running else
            "Delete the selected runs with their metric series, logs and saved files (asks first).")
        self.export_csv_action.setEnabled(self.model.rowCount() > 0)
        self._update_compare(runs)

    def _with_pinned(self, runs: list[RunRecord]) -> list[RunRecord]:
        """The selection plus the pinned baseline (first), when one is pinned and not already selected.

        A single run that measured its own baseline keeps that paired comparison.
        """
        pinned = self.pinned_run()
        if pinned is None or not runs or pinned.id in {r.id for r in runs}:
            return runs
        if len(runs) == 1 and runs[0].baseline and runs[0].final:
            return runs
        return [pinned, *runs]

    def pinned_run(self) -> RunRecord | None:
        row = None if self.model.pinned is None else self.model.row_of(self.model.pinned)
        return None if row is None else self.model.run_at(row)

    def pinned_baseline(self) -> int | None:
        return self.model.pinned

    def set_pinned_baseline(self, run_id: int | None) -> None:
        """Pin a run as the baseline of every comparison (None unpins); the table keeps it on top."""
        if run_id is not None and self.model.row_of(run_id) is None:
            run_id = None  # deleted since it was pinned
        if run_id == self.model.pinned:
            return
        self.model.set_pinned(run_id)
        if run_id is not None:
            self._baseline_id = run_id
            self.table.resizeColumnsToContents()  # the pinned row is bold: wider than the widths set before
        self.pinnedBaselineChanged.emit(run_id)
        self._on_selection_changed()

    def pin_selected(self) -> None:
        runs = self.selected_runs()
        if len(runs) == 1:
            self.set_pinned_baseline(runs[0].id)

    def _update_compare(self, runs: list[RunRecord]) -> None:
        entries: list[CompareEntry] = []
        runs = self._with_pinned(runs)
        if len(runs) >= 2:
            ids = [r.id for r in runs]
            if self._baseline_id not in ids:
                self._baseline_id = default_baseline(runs, self.model.pinned).id
            entries = [CompareEntry(short_label(r), r.id, r.final, r.id == self._baseline_id) for r in runs]
            self._mode = "runs"
            self.compare_title.setText(f"Comparing {len(runs)} runs (final models)")
        elif len(runs) == 1 and runs[0].baseline and runs[0].final:
            run = runs[0]
            entries = [CompareEntry(f"#{run.id} baseline", run.id, run.baseline, True),
                       CompareEntry(f"#{run.id} optimized", run.id, run.final)]
            self._mode = "baseline_vs_final"
            self.compare_title.setText(f"Run #{run.id} {run.name}: its baseline against its optimized model")
        else:
            self._mode = "none"
            if not runs:
                hint = "Select two or more runs to compare them, or one to see its baseline against its result."
            else:
                hint = (f"Run #{runs[0].id} has no separate baseline measurement (no optimization stage ran).\n"
                        "Select two or more runs to compare them.")
            self.compare_hint.setText(hint)
        self._entries = entries
        self.layers_tab.set_runs(runs if entries else [], self._baseline_id if self._mode == "runs" else None)
        self.compare_stack.setCurrentIndex(1 if entries else 0)
        self.save_png_action.setEnabled(bool(entries))
        self.save_chart_csv_action.setEnabled(bool(entries))
        if not entries:
            return

        self._fill_baseline_combo(runs)
        base_index = next(i for i, e in enumerate(entries) if e.is_baseline)
        labels = [e.label for e in entries]
        for chart in CHARTS:
            values = [scaled(e.metrics, chart) for e in entries]
            self.charts[chart.key].set_data(labels, values, base_index)
        self._fill_speedup_table()
        self._fill_proof_banner(runs)
        self._fill_stages_table(runs[0] if self._mode == "baseline_vs_final" else None)
        self.pareto.set_points(*pareto_points(runs, self._mode))

    def _fill_baseline_combo(self, runs: list[RunRecord]) -> None:
        show = self._mode == "runs"
        self.baseline_label.setVisible(show)
        self.baseline_combo.setVisible(show)
        self.baseline_combo.blockSignals(True)
        self.baseline_combo.clear()
        if show:
            for r in runs:
                text = short_label(r) + (f" ({', '.join(r.techniques)})" if r.techniques else " (fp32)")
                self.baseline_combo.addItem(text, r.id)
            self.baseline_combo.setCurrentIndex(self.baseline_combo.findData(self._baseline_id))
        self.baseline_combo.blockSignals(False)

    def _on_baseline_chosen(self, index: int) -> None:
        run_id = self.baseline_combo.itemData(index)
        if run_id is not None:
            self.set_baseline(int(run_id))

    def set_baseline(self, run_id: int) -> None:
        """Measure speedups against this run; it must be one of the compared runs."""
        if run_id not in [r.id for r in self._with_pinned(self.selected_runs())]:
            raise ValueError(f"run {run_id} is not selected, so it cannot be the baseline")
        self._baseline_id = run_id
        self._update_compare(self.selected_runs())

    def baseline_id(self) -> int | None:
        """The run speedups are measured against (in single-run mode, that run itself)."""
        return next((e.run_id for e in self._entries if e.is_baseline), None)

    def _fill_speedup_table(self) -> None:
        rows = self.speedup_rows()
        self.speedup_table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            label = row["label"] + ("  (baseline)" if row["is_baseline"] and self._mode == "runs" else "")
            texts = [ratio_text(row, "latency"), ratio_text(row, "throughput"),
                     fmt_delta(row["accuracy_delta_pts"]), fmt_ratio(row["size_ratio"])]
            cells = [table_cell(label, numeric=False), *(table_cell(t, centred=True) for t in texts)]
            for cell, key in ((cells[1], "latency_note"), (cells[2], "throughput_note")):
                if row.get(key):
                    cell.setToolTip(row[key])
            for j, cell in enumerate(cells):
                if row["is_baseline"]:
                    font = cell.font()
                    font.setItalic(True)
                    cell.setFont(font)
                self.speedup_table.setItem(i, j, cell)
        fit_rows(self.speedup_table)

    def _fill_proof_banner(self, runs: list[RunRecord]) -> None:
        banner = proof_banner(self._mode, runs)
        self._banner = banner
        self.proof_label.setText(banner["text"])
        self.proof_label.setVisible(bool(banner["text"]))
        style = ("background:#fff4d6;border:1px solid #e0a800;color:#5c4400;padding:4px" if banner["warn"]
                 else "background:#e8f4ea;border:1px solid #7fb88a;color:#1e4d28;padding:4px")
        self.proof_label.setStyleSheet(style)

    def proof_banner_values(self) -> dict[str, Any]:
        """What the banner above the speedup table says (kind, reliable, warn, text, steps)."""
        return dict(getattr(self, "_banner", proof_banner("none", [])))

    def _fill_stages_table(self, run: RunRecord | None) -> None:
        stages = [s for s in (run.summary.get("stages") or []) if isinstance(s, dict)] if run else []
        self.stages_box.setVisible(bool(stages))
        self.stages_table.setRowCount(len(stages))
        for i, stage in enumerate(stages):
            before, after = stage.get("before") or {}, stage.get("after") or {}
            self.stages_table.setItem(i, 0, table_cell(str(stage.get("name", "")), numeric=False))
            for j, (key, scale, spec) in enumerate(STAGE_METRICS, start=1):
                text = f"{fmt_metric(before, key, scale, spec)} → {fmt_metric(after, key, scale, spec)}"
                self.stages_table.setItem(i, j, table_cell(text))
            note = table_cell(str(stage.get("note") or ""), numeric=False)
            note.setToolTip(note.text())
            self.stages_table.setItem(i, len(STAGE_COLUMNS) - 1, note)
        fit_rows(self.stages_table)

    def compare_values(self) -> dict[str, Any]:
        """What the charts show: labels, run IDs, baseline index and, per chart key, values in chart units
        (accuracy in %, size in MB; None where a run did not measure it). ``mode`` is "runs",
        "baseline_vs_final" or "none"."""
        base = next((i for i, e in enumerate(self._entries) if e.is_baseline), None)
        out: dict[str, Any] = {"mode": self._mode, "labels": [e.label for e in self._entries],
                               "run_ids": [e.run_id for e in self._entries], "baseline_index": base,
                               "units": {c.key: c.unit for c in CHARTS}}
        for chart in CHARTS:
            out[chart.key] = [scaled(e.metrics, chart) for e in self._entries]
        return out

    def speedup_rows(self) -> list[dict[str, Any]]:
        """The speedup table's rows: each compared entry against the baseline (raw ratios, not text)."""
        base = next((e for e in self._entries if e.is_baseline), None)
        if base is None:
            return []
        paired = None
        if self._mode == "baseline_vs_final":
            run = self.model.runs()[self.model.row_of(base.run_id)] if self.model.row_of(base.run_id) is not None \
                else None
            paired = compare_run_to_baseline(run.summary) if run is not None else None
        rows = []
        for e in self._entries:
            cmp = paired if paired is not None and not e.is_baseline else None
            rows.append({"label": e.label, "run_id": e.run_id, "is_baseline": e.is_baseline,
                         **speedup_row(e.metrics, base.metrics, cmp)})
        return rows

    # -- actions -----------------------------------------------------------------------------------
    def _show_context_menu(self, pos: QPoint) -> None:
        self.context_menu.popup(self.table.viewport().mapToGlobal(pos))

    def open_recipe(self) -> None:
        runs = self.selected_runs()
        if len(runs) == 1 and runs[0].recipe:
            self.openRecipeRequested.emit(runs[0].recipe)

    def open_sweep(self) -> None:
        runs = self.selected_runs()
        if len(runs) == 1 and runs[0].kind == "sweep":
            self.openSweepRequested.emit(runs[0].id)

    def _on_double_clicked(self, index: QModelIndex) -> None:
        """Double-clicking a sweep (search) row opens it in the Sweep (Accelerate) tab; other rows keep the selection."""
        run = self.model.run_at(self.proxy.mapToSource(index).row())
        if run.kind == "sweep":
            self.openSweepRequested.emit(run.id)
        elif run.kind == "accelerate":
            self.openAccelerateRequested.emit(run.id)

    # -- Pareto --------------------------------------------------------------------------------------
    def pareto_values(self) -> dict[str, Any]:
        """What the Pareto chart shows (see ``ParetoChart.values``)."""
        return self.pareto.values()

    def focus_run(self, run_id: int) -> None:
        """Make a run the table's current row and scroll to it, keeping the selection (and the comparison)."""
        row = self.model.row_of(run_id)
        if row is None:
            return
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():  # hidden by the filter
            self.filter_edit.clear()
            index = self.proxy.mapFromSource(self.model.index(row, 0))
        self.table.selectionModel().setCurrentIndex(index, QItemSelectionModel.SelectionFlag.NoUpdate)
        self.table.scrollTo(index)

    def _on_pareto_clicked(self, run_id: int, double: bool) -> None:
        """Click: find the run in the table. Double-click: open it (its recipe, or the Sweep tab for a sweep)."""
        self.focus_run(run_id)
        if not double:
            return
        run = self.store.get_run(run_id)
        if run is None:
            return
        if run.kind == "sweep":
            self.openSweepRequested.emit(run.id)
        elif run.kind == "accelerate":
            self.openAccelerateRequested.emit(run.id)
        elif run.recipe:
            self.openRecipeRequested.emit(run.recipe)

    # -- report ------------------------------------------------------------------------------------
    def set_jobs(self, jobs: JobManager) -> None:
        """Run report jobs on the window's JobManager, so its shutdown path stops them too."""
        self._jobs = jobs

    def _job_manager(self) -> JobManager:
        if self._jobs is None:  # standalone view (tests, embedding): its own manager
            self._jobs = JobManager(self)
        return self._jobs

    def report_run_ids(self) -> list[int]:
        """The selected runs in report order: the comparison's baseline first (the report's baseline is
        its first run, the pinned one when the comparison has it), then the others oldest first."""
        ids = [r.id for r in self._with_pinned(self.selected_runs())]
        base = self.baseline_id()
        if base in ids:
            ids.remove(base)
            ids.insert(0, base)
        return ids

    def report_selected(self) -> Job | None:
        """Ask where to write the report (and before replacing files), then build it on a job."""
        ids = self.report_run_ids()
        if not ids or self._report_job_id is not None:
            return None
        default = "report-" + "-".join(str(i) for i in ids[:4]) + ".html"
        out = self.ask_report_path(default)
        if out is None:
            return None
        if out.suffix.lower() not in (".html", ".htm"):
            out = out.with_name(out.name + ".html")
        csv_path, json_path = out.with_suffix(".csv"), out.with_suffix(".json")
        existing = [p for p in (out, csv_path, json_path) if p.exists()]
        if existing and not self.confirm(
                "Replace files?", "These files exist already:\n" + "\n".join(str(p) for p in existing)
                + "\n\nReplace them with the new report?"):
            return None
        return self.start_report(ids, out, csv_path, json_path)

    def start_report(self, run_ids: Sequence[int], out: Path, csv_path: Path | None = None,
                     json_path: Path | None = None, *, predictions: bool = True) -> Job:
        """Write the report on a background job (no questions asked: callers have asked already)."""
        store, ids = self.store, list(run_ids)

        def work(reporter: Any, cancel: Any) -> Any:
            from workbench.analysis.report import write_report

            return write_report(store, ids, out, csv_path=csv_path, json_path=json_path, predictions=predictions,
                                reporter=reporter, cancel=cancel, overwrite=True)  # the user was asked

        job = self._job_manager().start("Report", work, key="report")
        self._report_job_id = job.id
        self._report_out = out
        self._report_extras = [p for p in (csv_path, json_path) if p is not None]
        job.progressed.connect(self._on_report_progress)
        job.errored.connect(self._on_report_error)
        job.finished.connect(self._on_report_finished)
        self.report_status.setText("Writing report…")
        self._on_selection_changed()
        return job

    def _on_report_progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.report_status.setText(f"Writing report… {message or ''} ({done}/{total})")

    def _on_report_error(self, message: str, _tb: str) -> None:
        self.show_error("Report", f"The report could not be written: {message}")

    def _on_report_finished(self, report: object) -> None:
        out = self._report_out
        self._report_job_id = None
        self._report_out = None
        self._on_selection_changed()
        if report is None or out is None:
            self.report_status.setText("Report not written.")
            return
        head = ((getattr(report, "data", {}) or {}).get("headline") or {}).get("text", "")
        extras = [p for p in self._report_extras if p.exists()]
        self._report_extras = []
        also = f" (and {', '.join(p.name for p in extras)} beside it)" if extras else ""
        self.report_status.setText(f"Wrote {out.name}{also}")
        self.report_status.setToolTip(f"{out}" + (f": {head}" if head else ""))
        self.reportWritten.emit(str(out))
        if self.ask_open_report(out, extras) and not self.open_url(QUrl.fromLocalFile(str(out))):
            self.report_status.setText(f"No browser could be opened; the report is at {out}")
            self.show_error("Report", f"No web browser could be opened for the report. It is saved at:\n{out}\n"
                            "Open that file in any browser.")

    def report_busy(self) -> bool:
        return self._report_job_id is not None

    def ask_report_path(self, default_name: str) -> Path | None:
        """Where to save the report; overwriting is asked about separately (with the CSV/JSON beside it)."""
        path, _ = QFileDialog.getSaveFileName(self, "Save report as", str(self._last_dir / default_name),
                                              "HTML reports (*.html *.htm)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if not path:
            return None
        self._last_dir = Path(path).parent
        return Path(path)

    def ask_open_report(self, path: Path, extras: Sequence[Path] = ()) -> bool:
        """Offer to open the written report, naming the data files written beside it (tests replace this)."""
        also = "".join(f"\n{p} ({p.suffix.lstrip('.').upper()}: the same numbers)" for p in extras)
        answer = QMessageBox.question(self, "Report written", f"Wrote {path}{also}.\n\nOpen the report now?",
                                      QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Close,
                                      QMessageBox.StandardButton.Open)
        return answer == QMessageBox.StandardButton.Open

    def open_url(self, url: QUrl) -> bool:
        """Open a file in the desktop's default application (tests replace this)."""
        return bool(QDesktopServices.openUrl(url))

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Stop a report job this view started on its own manager (the window's manager stops its own)."""
        return self._jobs.shutdown(timeout_s) if self._jobs is not None and self._jobs.parent() is self else True

    def confirm(self, title: str, text: str) -> bool:
        """Ask a yes/no question (tests replace this method to answer without a dialog)."""
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def show_error(self, title: str, text: str) -> None:
        """Tell the user an export failed (tests replace this to capture the message)."""
        QMessageBox.warning(self, title, text)

    def delete_selected(self) -> list[int]:
        """Delete the selected runs after confirmation; returns the IDs deleted (empty if declined)."""
        runs = [r for r in self.selected_runs() if r.status != "running"]
        if not runs:
            return []
        names = ", ".join(short_label(r) for r in runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
        what = "this run" if len(runs) == 1 else f"these {len(runs)} runs"
        if not self.confirm("Delete runs",
                            f"Delete {what}: {names}?\n\nTheir metric series, logs and saved files (weights, "
                            "ONNX exports) are removed too. This cannot be undone."):
            return []
        ids = [r.id for r in runs]
        for run_id in ids:
            self.store.delete_run(run_id)
        self.refresh()
        if self.model.pinned in ids:
            self.set_pinned_baseline(None)
        self.runsDeleted.emit(ids)
        return ids

    def table_rows(self) -> list[list[Any]]:
        """Header plus the rows shown (filtered, in display order), with unrounded numbers."""
        rows: list[list[Any]] = [[c.title for c in COLUMNS] + ["Error"]]
        for prow in range(self.proxy.rowCount()):
            src = self.proxy.mapToSource(self.proxy.index(prow, 0)).row()
            run = self.model.run_at(src)
            values = [self.model.raw(src, c) for c in range(len(COLUMNS))]
            values[COL_DATE] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.created_at))
            rows.append([*values, run.error])
        return rows

    def export_csv(self, path: str | Path) -> Path:
        """Write the table (rows shown, numbers unrounded) as CSV, atomically. Overwrites: callers ask first."""
        path = Path(path)
        atomic_write_text(path, csv_text(self.table_rows()))
        return path

    def export_chart_csv(self, path: str | Path) -> Path:
        """Write the numbers behind the charts and the speedup table as CSV, atomically."""
        path = Path(path)
        values, speedups = self.compare_values(), self.speedup_rows()
        header = ["Run ID", "Label", "Baseline"] + [f"{c.title} ({c.unit})" for c in CHARTS] + \
            ["Latency speedup (x)", "Throughput speedup (x)", "Accuracy delta (pts)", "Size ratio (x)"]
        rows: list[list[Any]] = [header]
        for i, label in enumerate(values["labels"]):
            s = speedups[i]
            rows.append([values["run_ids"][i], label, "yes" if i == values["baseline_index"] else "",
                         *[values[c.key][i] for c in CHARTS], s["latency_speedup"], s["throughput_speedup"],
                         s["accuracy_delta_pts"], s["size_ratio"]])
        atomic_write_text(path, csv_text(rows))
        return path

    def chart_png_paths(self, folder: str | Path) -> list[Path]:
        """Where save_charts_png(folder) writes: one file per chart."""
        return [Path(folder) / f"compare-{c.key.replace('_', '-')}.png" for c in CHARTS]

    def save_charts_png(self, folder: str | Path) -> list[Path]:
        """Save each compare chart as a PNG in ``folder`` (atomically); returns the paths written."""
        if not self._entries:
            raise RuntimeError("nothing to save: select runs to compare first")
        paths = self.chart_png_paths(folder)
        for chart, path in zip(CHARTS, paths, strict=True):
            atomic_write_bytes(path, self.charts[chart.key].png_bytes())
        return paths

    # -- dialogs (thin wrappers over the methods above) --------------------------------------------
    def ask_save_path(self, caption: str, default_name: str, name_filter: str, suffix: str) -> Path | None:
        """A save dialog that adds the suffix itself, so its overwrite prompt sees the final name."""
        dialog = QFileDialog(self, caption, str(self._last_dir / default_name), name_filter)
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix(suffix)
        if not dialog.exec() or not dialog.selectedFiles():
            return None
        path = Path(dialog.selectedFiles()[0])
        self._last_dir = path.parent
        return path

    def ask_folder(self, caption: str) -> Path | None:
        folder = QFileDialog.getExistingDirectory(self, caption, str(self._last_dir))
        if not folder:
            return None
        self._last_dir = Path(folder)
        return Path(folder)

    def _guarded(self, title: str, work: Callable[[], object]) -> None:
        try:
            work()
        except OSError as exc:
            self.show_error(title, f"{title} failed: {exc}")

    def _export_csv_dialog(self) -> None:
        path = self.ask_save_path("Export runs table", "runs.csv", "CSV files (*.csv)", "csv")
        if path is not None:
            self._guarded("Export table", lambda: self.export_csv(path))

    def _save_chart_csv_dialog(self) -> None:
        path = self.ask_save_path("Save chart data", "compare.csv", "CSV files (*.csv)", "csv")
        if path is not None:
            self._guarded("Save chart data", lambda: self.export_chart_csv(path))

    def _save_png_dialog(self) -> None:
        folder = self.ask_folder("Save comparison charts into folder")
        if folder is None:
            return
        existing = [p for p in self.chart_png_paths(folder) if p.exists()]
        if existing and not self.confirm(
                "Overwrite charts", "These files exist already:\n" + "\n".join(p.name for p in existing)
                + "\n\nOverwrite them?"):
            return
        self._guarded("Save charts", lambda: self.save_charts_png(folder))


