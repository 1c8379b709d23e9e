"""The main window: recipe panels on the left, live dashboard and runs on the right, log below.

The window is a recipe editor plus a view of engine events. It builds a validated ``Recipe`` from
the panels (showing each problem next to its control, and keeping Run disabled until fixed),
hands that recipe to a background job, and turns the job's signals into plots, a progress bar
with ETA, log lines and dialogs. It never trains or reads data itself.

Dialog entry points that block (``ask_*``) are plain methods so tests can replace them; error
dialogs are non-blocking (``show_error_dialog``) and also recorded in ``error_messages``.
"""

from __future__ import annotations

import contextlib
import gc
import html
import re
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QColor, QKeySequence, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QStyle,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from workbench.core.paths import workbench_home
from workbench.core.store import RunStore
from workbench.errors import RecipeError
from workbench.gui.jobs import EtaEstimator, Job, JobManager, format_eta
from workbench.gui.panels import FieldErrors, RecipePanel, panel_classes
from workbench.gui.plots import Dashboard
from workbench.gui.runs import RunsView
from workbench.gui.sweep import SweepView
from workbench.gui.widgets import cuda_available
from workbench.recipe import (
    Recipe,
    check_device_support,
    default_recipe,
    load_recipe,
    loads_recipe,
    recipe_to_dict,
    save_recipe,
)

APP_ORG = "AccelerationWorkbench"
APP_NAME = "Workbench"
LOG_MAX_LINES = 5000
REVALIDATE_MS = 150
#: Seconds the window waits (blocking) for jobs to stop at a checkpoint before it shows what it waits for.
SHUTDOWN_GRACE_S = 3.0
FAILED_COLOUR = "#b3261e"

_SECTIONS = tuple(Recipe.model_fields)
_PATH_IN_TEXT = re.compile(r"\b(" + "|".join(_SECTIONS) + r")\.([a-z_]+)\b")


def app_settings() -> QSettings:
    """Settings live in an INI file under WORKBENCH_HOME (tests get their own home, so their own file)."""
    s = QSettings(str(workbench_home() / "settings.ini"), QSettings.Format.IniFormat)
    s.setFallbacksEnabled(False)
    return s


def quickstart_path() -> Path:
    from workbench.core.paths import quickstart_recipe_path

    return quickstart_recipe_path()


def error_fields(exc: BaseException) -> list[tuple[str, str]]:
    """Turn a recipe validation failure into ``[(field path like 'batching.batch_size', message)]``.

    The path is '' when no field can be named (the message is then shown in the banner).
    """
    out: list[tuple[str, str]] = []
    if isinstance(exc, ValidationError):
        for e in exc.errors():
            loc = [str(p) for p in e["loc"]]
            msg = str(e["msg"]).removeprefix("Value error, ")
            if loc:
                out.append((".".join(loc[:2]), msg))
            else:
                m = _PATH_IN_TEXT.search(msg)
                out.append((m.group(0) if m else "", msg))
        return out
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    m = _PATH_IN_TEXT.search(text)
    return [(m.group(0) if m else "", text)]


class RecipeInvalid(Exception):  # noqa: N818 - a state, reported in the UI
    """The panels do not form a valid recipe: ``errors`` is ``[(field path, message)]``."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in errors))
        self.errors = errors


class MainWindow(QMainWindow):
    """The Workbench window. ``MainWindow()`` opens the run store under WORKBENCH_HOME and loads the
    last recipe (or the built-in quickstart)."""

    recipeValidated = Signal(bool)  # True when the panels form a valid recipe

    def __init__(self, store: RunStore | None = None, recipe: str | Path | Recipe | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("mainWindow")
        self._owns_store = store is None
        self.store = store or RunStore()
        self.settings = app_settings()
        self.jobs = JobManager(self)
        self.jobs.jobStarted.connect(self._attach_job)
        self.jobs.busyChanged.connect(self._on_busy_changed)
        self.error_messages: list[str] = []
        self.recipe_path: Path | None = None
        self._base = default_recipe()
        self._valid: Recipe | None = None
        self._dirty = False
        self._loading = False
        self._shut_down = False
        self._closing = False
        self._wait_dialog: QDialog | None = None
        self._store_closed = False
        self._eta = EtaEstimator()
        self._stage = ""
        self._job_name = ""
        self._job_failed = False
        self._run_id: int | None = None

        self._build_actions()
        self._build_ui()
        self._build_menus_and_toolbar()
        self._build_sweep()
        self._build_accelerate()
        self.revalidate_timer = QTimer(self)
        self.revalidate_timer.setSingleShot(True)
        self.revalidate_timer.setInterval(REVALIDATE_MS)
        self.revalidate_timer.timeout.connect(self.revalidate)
        for panel in self.panels:
            panel.changed.connect(self._on_panel_changed)
        self.name_edit.textEdited.connect(self._on_panel_changed)
        self._restore_settings()
        self._load_initial(recipe)

    # ------------------------------------------------------------------------------------------ UI
    def _build_actions(self) -> None:
        st = self.style()

        def act(text: str, slot: Any, shortcut: Any = None, icon: QStyle.StandardPixmap | None = None,
                tip: str = "") -> QAction:
            a = QAction(text, self)
            if shortcut is not None:
                a.setShortcut(shortcut)
            if icon is not None:
                a.setIcon(st.standardIcon(icon))
            a.setToolTip(tip or text)
            a.setStatusTip(tip or text)
            a.triggered.connect(slot)
            return a

        sp = QStyle.StandardPixmap
        self.new_action = act("&New", self.action_new, QKeySequence.StandardKey.New, sp.SP_FileIcon,
                              "New recipe with default settings")
        self.open_action = act("&Open…", self.action_open, QKeySequence.StandardKey.Open, sp.SP_DialogOpenButton,
                               "Open a recipe (.toml)")
        self.save_action = act("&Save", self.action_save, QKeySequence.StandardKey.Save, sp.SP_DialogSaveButton,
                               "Save the recipe")
        self.save_as_action = act("Save &As…", self.action_save_as, QKeySequence.StandardKey.SaveAs, None,
                                  "Save the recipe to a new file")
        self.quit_action = act("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.run_action = act("Run", lambda: self.start_run(False), QKeySequence("Ctrl+R"), sp.SP_MediaPlay,
                              "Train, evaluate and benchmark as the recipe says (Ctrl+R)")
        self.bench_action = act("Benchmark only", lambda: self.start_run(True), QKeySequence("Ctrl+B"),
                                sp.SP_MediaSeekForward, "Skip training: evaluate and benchmark the model (Ctrl+B)")
        self.stop_action = act("Stop", self.stop_job, QKeySequence("Ctrl+."), sp.SP_MediaStop,
                               "Stop the running job at its next checkpoint (Ctrl+.)")
        self.stop_action.setEnabled(False)

    def _build_ui(self) -> None:
        self.setWindowTitle("Acceleration Workbench")
        # -- left: recipe editor -----------------------------------------------------------------
        left = QWidget()
        left_lay = QVBoxLayout(left)
        left_lay.setContentsMargins(6, 6, 0, 6)
        left_lay.setSpacing(6)
        name_row = QHBoxLayout()
        name_label = QLabel("Recipe name")
        self.name_edit = QLineEdit()
        self.name_edit.setObjectName("recipeName")
        tip = "Name stored with every run of this recipe (shown in the runs table)."
        self.name_edit.setToolTip(tip)
        name_label.setToolTip(tip)
        name_row.addWidget(name_label)
        name_row.addWidget(self.name_edit, 1)
        left_lay.addLayout(name_row)
        self.error_banner = QLabel()
        self.error_banner.setObjectName("recipeErrors")
        self.error_banner.setWordWrap(True)
        self.error_banner.setStyleSheet("background: #fdecea; color: #8c1d18; border: 1px solid #f1b5b0;"
                                        " border-radius: 3px; padding: 4px;")
        self.error_banner.setVisible(False)
        left_lay.addWidget(self.error_banner)
        editor = QHBoxLayout()
        editor.setSpacing(6)
        self.nav = QListWidget()
        self.nav.setObjectName("panelNav")
        self.nav.setFixedWidth(128)
        self.nav.setFrameShape(QFrame.Shape.StyledPanel)
        self.stack = QStackedWidget()
        self.panels: list[RecipePanel] = []
        for cls in panel_classes():
            panel = cls(host=self)
            self.panels.append(panel)
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setWidget(panel)
            self.stack.addWidget(scroll)
            item = QListWidgetItem(cls.title)
            item.setToolTip(cls.description)
            self.nav.addItem(item)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.nav.setCurrentRow(0)
        editor.addWidget(self.nav)
        editor.addWidget(self.stack, 1)
        left_lay.addLayout(editor, 1)
        # -- right: dashboard and runs ---------------------------------------------------------------
        self.tabs = QTabWidget()
        self.tabs.setObjectName("mainTabs")
        self.dashboard = Dashboard()
        self.tabs.addTab(self.dashboard, "Dashboard")
        self.runs_view = RunsView(self.store, self)
        self.runs_view.openRecipeRequested.connect(self.load_recipe_text)
        self.runs_view.pinnedBaselineChanged.connect(
            lambda run_id: self.settings.setValue("runs/pinnedBaseline", "" if run_id is None else run_id))
        pinned = str(self.settings.value("runs/pinnedBaseline", "") or "")
        if pinned:
            with contextlib.suppress(ValueError):
                self.runs_view.set_pinned_baseline(int(pinned))
            if self.runs_view.pinned_baseline() is None:  # deleted since (e.g. from the CLI)
                self.settings.setValue("runs/pinnedBaseline", "")
        self.tabs.addTab(self.runs_view, "Runs")
        # Opening the Runs tab shows what the store holds now, a run still running included.
        self.tabs.currentChanged.connect(lambda _i: self._refresh_runs() if self.tabs.currentWidget() is
                                         self.runs_view else None)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([620, 860])
        self.setCentralWidget(self.splitter)
        # -- log dock --------------------------------------------------------------------------------
        self.log_view = QPlainTextEdit()
        self.log_view.setObjectName("logView")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_MAX_LINES)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("logDock")
        self.log_dock.setWidget(self.log_view)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.resizeDocks([self.log_dock], [150], Qt.Orientation.Vertical)
        # -- status bar --------------------------------------------------------------------------------
        from workbench.core.telemetry import device_description

        self.device_label = QLabel(f"Device: {device_description()}")
        self.device_label.setObjectName("deviceLabel")
        self.stage_label = QLabel("Idle")
        self.stage_label.setObjectName("stageLabel")
        self.progress = QProgressBar()
        self.progress.setObjectName("jobProgress")
        self.progress.setFixedWidth(340)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("Idle")
        self._progress_palette = QPalette(self.progress.palette())
        self.statusBar().addWidget(self.device_label, 1)
        self.statusBar().addPermanentWidget(self.stage_label)
        self.statusBar().addPermanentWidget(self.progress)

    def _build_menus_and_toolbar(self) -> None:
        bar = self.menuBar()
        m = bar.addMenu("&File")
        for a in (self.new_action, self.open_action, self.save_action, self.save_as_action):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.quit_action)
        m = bar.addMenu("&Run")
        for a in (self.run_action, self.bench_action, self.stop_action):
            m.addAction(a)
        m = bar.addMenu("&View")
        m.addAction(self.log_dock.toggleViewAction())
        tb = QToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for a in (self.new_action, self.open_action, self.save_action):
            tb.addAction(a)
        tb.addSeparator()
        for a in (self.run_action, self.bench_action, self.stop_action):
            tb.addAction(a)
        self.addToolBar(tb)
        self.toolbar = tb
        self.run_button = tb.widgetForAction(self.run_action)
        self.run_button.setObjectName("runButton")
        self.bench_button = tb.widgetForAction(self.bench_action)
        self.bench_button.setObjectName("benchmarkButton")
        self.stop_button = tb.widgetForAction(self.stop_action)
        self.stop_button.setObjectName("stopButton")

    def _build_sweep(self) -> None:
        """The Sweep tab and its wiring: a sweep is an exclusive job handled like a run (progress, Stop,
        log, runs table); a stored sweep opens from the Runs tab; reports run on this window's jobs."""
        self.sweep_view = SweepView(self.store, self.jobs, self.current_recipe, self)
        self.tabs.addTab(self.sweep_view, "Sweep")
        self.recipeValidated.connect(self.sweep_view.set_recipe_valid)
        self.sweep_view.jobStarted.connect(self._attach_sweep_job)
        self.sweep_action = QAction("Sweep…", self)
        self.sweep_action.setToolTip("Measure speed against batch size, precision and loader settings (Sweep tab)")
        self.sweep_action.setStatusTip(self.sweep_action.toolTip())
        self.sweep_action.triggered.connect(lambda: self.tabs.setCurrentWidget(self.sweep_view))
        run_menu = next((a.menu() for a in self.menuBar().actions() if a.text() == "&Run"), None)
        if run_menu is not None:
            run_menu.addSeparator()
            run_menu.addAction(self.sweep_action)
        self.runs_view.set_jobs(self.jobs)
        self.runs_view.openSweepRequested.connect(self.open_sweep_run)

    def _build_accelerate(self) -> None:
        """The Accelerate tab and its toolbar button: a search is an exclusive job handled like a run."""
        from workbench.gui.accelerate import AccelerateView

        self.accelerate_view = AccelerateView(self.store, self.jobs, self.current_recipe, self)
        self.tabs.addTab(self.accelerate_view, "Accelerate")
        self.recipeValidated.connect(self.accelerate_view.set_recipe_valid)
        self.jobs.busyChanged.connect(self.accelerate_view.set_busy)
        self.accelerate_view.jobStarted.connect(self._attach_accelerate_job)
        self.accelerate_action = QAction(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaSeekForward),
                                         "Accelerate", self)
        self.accelerate_action.setShortcut(QKeySequence("Ctrl+E"))
        self.accelerate_action.setToolTip("Find the fastest model within an accuracy budget: tries precisions, "
                                          "runtimes, INT8 and pruning, each trial a stored run (Ctrl+E)")
        self.accelerate_action.setStatusTip(self.accelerate_action.toolTip())
        self.accelerate_action.triggered.connect(self.show_accelerate)
        self.toolbar.insertAction(self.stop_action, self.accelerate_action)
        self.accelerate_button = self.toolbar.widgetForAction(self.accelerate_action)
        self.accelerate_button.setObjectName("accelerateButton")
        run_menu = next((a.menu() for a in self.menuBar().actions() if a.text() == "&Run"), None)
        if run_menu is not None:
            run_menu.addAction(self.accelerate_action)
        self.runs_view.openAccelerateRequested.connect(self.open_accelerate_run)

    def show_accelerate(self) -> None:
        """The toolbar button: the Accelerate tab, ready to Start."""
        self.tabs.setCurrentWidget(self.accelerate_view)

    def open_accelerate_run(self, run_id: int) -> bool:
        ok = self.accelerate_view.open_run(run_id)
        if ok:
            self.tabs.setCurrentWidget(self.accelerate_view)
        return ok

    def _attach_accelerate_job(self, job: Job) -> None:
        self.dashboard.start()  # each trial's telemetry and training curves go to the dashboard, live
        job.runStarted.connect(self._on_run_started)
        job.finished.connect(lambda _outcome: self._refresh_runs())
        self.log("Accelerate started", "stage")

    def open_sweep_run(self, run_id: int) -> bool:
        """Show a stored sweep run in the Sweep tab."""
        ok = bool(self.sweep_view.open_run(run_id))
        if ok:
            self.tabs.setCurrentWidget(self.sweep_view)
        return ok

    def _attach_sweep_job(self, job: Job) -> None:
        self.dashboard.start()  # telemetry of the sweep goes to the CPU/GPU plots, like a run's
        job.runStarted.connect(self._on_run_started)
        job.finished.connect(self._on_run_finished)
        self.log("sweep started", "stage")

    # ----------------------------------------------------------------------------------- PanelHost
    def current_recipe(self) -> Recipe | None:
        """The last recipe that validated (None while the panels hold an error)."""
        return self._valid.model_copy(deep=True) if self._valid is not None else None

    def last_folder(self, kind: str) -> str:
        return str(self.settings.value(f"folders/{kind}", self.settings.value("folders/any", "")))

    def remember_folder(self, kind: str, path: str) -> None:
        self.settings.setValue(f"folders/{kind}", path)
        self.settings.setValue("folders/any", path)

    def log(self, message: str, level: str = "info") -> None:
        """Append a line to the log dock (GUI thread only; jobs reach it through signals)."""
        colour = {"warning": "#9a6700", "error": "#b3261e", "stage": "#1f5fa8"}.get(level)
        stamp = time.strftime("%H:%M:%S")
        text = html.escape(message)
        prefix = f"{level.upper()}: " if level in ("warning", "error") else ""
        body = f"{stamp}  {prefix}{text}"
        self.log_view.appendHtml(f"<span style='color:{colour}'>{body}</span>" if colour else body)

    # ----------------------------------------------------------------------------------- recipes
    def panel(self, section: str) -> RecipePanel:
        for p in self.panels:
            if p.section_name == section:
                return p
        raise KeyError(section)

    def _load_initial(self, recipe: str | Path | Recipe | None) -> None:
        if isinstance(recipe, Recipe):
            self.set_recipe(recipe, None)
            return
        candidates: list[Path] = []
        if recipe:
            candidates.append(Path(recipe))
        last = str(self.settings.value("recipe/last", "") or "")
        if not recipe and last:
            candidates.append(Path(last))
        candidates.append(quickstart_path())
        for path in candidates:
            try:
                self.set_recipe(load_recipe(path), path)
                self.log(f"opened {path}")
                return
            except RecipeError as exc:
                self.log(str(exc).splitlines()[0], "error")
                if recipe and path == Path(recipe):
                    self.show_error_dialog("Cannot open recipe", str(exc).splitlines()[0])
        self.set_recipe(default_recipe(), None)

    def set_recipe(self, recipe: Recipe, path: Path | None, dirty: bool = False) -> None:
        """Show ``recipe`` in every panel (sections without a panel are kept as they are)."""
        self._loading = True
        try:
            self._base = recipe.model_copy(deep=True)
            self.name_edit.setText(recipe.name)
            for p in self.panels:
                p.load(recipe)
        finally:
            self._loading = False
        self.recipe_path = path
        self._dirty = dirty
        self.revalidate()
        self._update_title()

    def build_recipe(self) -> Recipe:
        """A validated recipe from the panels; raises ``RecipeInvalid`` listing every problem.

        A control whose text cannot be parsed keeps the loaded recipe's value for the rest of the
        check, so its own message and any cross-field problems are all shown at once.
        """
        data = recipe_to_dict(self._base)
        data["name"] = self.name_edit.text().strip() or "experiment"
        errors: list[tuple[str, str]] = []
        for p in self.panels:
            try:
                values = p.values()
            except FieldErrors as exc:
                errors += [(f"{p.section_name}.{f}", m) for f, m in exc.errors.items()]
                base = data.get(p.section_name) or {}
                values = {n: b.getter() if n not in exc.errors else base.get(n, p.section_model()().__getattribute__(n))
                          for n, b in p.fields.items()}
            if values is None:
                data.pop(p.section_name, None)
            else:
                data[p.section_name] = values
        try:
            recipe = Recipe.model_validate(data)
            check_device_support(recipe, cuda_available())
        except (ValidationError, RecipeError) as exc:
            seen = {path for path, _m in errors}
            errors += [(path, m) for path, m in error_fields(exc) if path not in seen]
            raise RecipeInvalid(errors) from None
        if errors:
            raise RecipeInvalid(errors)
        return recipe

    def _on_panel_changed(self, *_args: object) -> None:
        if self._loading:
            return
        if not self._dirty:
            self._dirty = True
            self._update_title()
        self.revalidate_timer.start()

    def revalidate(self) -> bool:
        """Rebuild the recipe from the panels; show problems next to their controls. True when valid."""
        self.revalidate_timer.stop()
        for p in self.panels:
            p.clear_errors()
        banner: list[str] = []
        try:
            recipe = self.build_recipe()
        except RecipeInvalid as exc:
            self._valid = None
            for path, message in exc.errors:
                section, _, field = path.partition(".")
                shown = False
                if section and field:
                    try:
                        shown = self.panel(section).show_error(field, message)
                    except KeyError:
                        shown = False
                if not shown:
                    banner.append(f"{path}: {message}" if path else message)
            self._mark_nav({p.split(".")[0] for p, _m in exc.errors})
            for p in self.panels:
                p.on_recipe_invalid()
            count = len(exc.errors)
            summary = f"{count} problem{'s' if count > 1 else ''} in the recipe: Run is disabled until fixed."
            self.error_banner.setText(summary + "".join(f"<br>• {html.escape(b)}" for b in banner))
            self.error_banner.setVisible(True)
            self._update_actions()
            self.recipeValidated.emit(False)
            return False
        self._valid = recipe
        self._mark_nav(set())
        self.error_banner.setVisible(False)
        self._update_actions()
        for p in self.panels:
            p.on_recipe_validated(recipe)
        self.recipeValidated.emit(True)
        return True

    def _mark_nav(self, bad_sections: set[str]) -> None:
        for i, p in enumerate(self.panels):
            item = self.nav.item(i)
            bad = p.section_name in bad_sections
            item.setText(f"⚠ {p.title}" if bad else p.title)
            item.setForeground(Qt.GlobalColor.darkRed if bad else self.palette().text().color())

    def _update_title(self) -> None:
        where = str(self.recipe_path) if self.recipe_path else "untitled"
        self.setWindowTitle(f"{self.name_edit.text() or 'experiment'} — {where}{' *' if self._dirty else ''}"
                            " — Acceleration Workbench")

    def _update_actions(self) -> None:
        busy = self.jobs.busy
        valid = self._valid is not None
        self.run_action.setEnabled(valid and not busy)
        self.bench_action.setEnabled(valid and not busy)
        self.stop_action.setEnabled(busy and not self._stopping())
        for a in (self.new_action, self.open_action):
            a.setEnabled(not busy)

    def _stopping(self) -> bool:
        job = self.jobs.current()
        return job is not None and job.cancelled

    # -- file actions (dialogs) --------------------------------------------------------------------
    def action_new(self) -> None:
        if self._dirty and not self.ask_discard_changes():
            return
        self.set_recipe(default_recipe(), None)
        self.log("new recipe (defaults)")

    def action_open(self) -> None:
        if self._dirty and not self.ask_discard_changes():
            return
        start = self.last_folder("recipes") or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Open recipe", start, "Recipes (*.toml);;All files (*)")
        if path:
            self.open_recipe_file(path)

    def action_save(self) -> bool:
        if self.recipe_path is None or self._is_builtin(self.recipe_path):
            return self.action_save_as()
        return self.save_recipe_file(self.recipe_path)

    def action_save_as(self) -> bool:
        name = (self.name_edit.text().strip() or "experiment").replace(" ", "_")
        start = str(Path(self.last_folder("recipes") or Path.home()) / f"{name}.toml")
        path, _ = QFileDialog.getSaveFileName(self, "Save recipe as", start, "Recipes (*.toml)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if not path:
            return False
        target = Path(path)
        if not target.suffix:
            target = target.with_suffix(".toml")
        return self.save_recipe_file(target)

    # -- file operations (no file dialogs; tests call these) -------------------------------------------
    def open_recipe_file(self, path: str | Path) -> bool:
        """Load a recipe file; on error show the one-line reason and keep the current recipe."""
        p = Path(path)
        try:
            recipe = load_recipe(p)
        except RecipeError as exc:
            line = str(exc).splitlines()[0]
            self.log(line, "error")
            self.show_error_dialog("Cannot open recipe", line)
            return False
        self.set_recipe(recipe, p)
        self.settings.setValue("recipe/last", str(p.resolve()))
        self.remember_folder("recipes", str(p.resolve().parent))
        self.log(f"opened {p}")
        return True

    def load_recipe_text(self, text: str, source: str = "stored run") -> bool:
        """Load recipe TOML text (e.g. from a stored run) as a new, unsaved recipe."""
        try:
            recipe = loads_recipe(text, source)
        except RecipeError as exc:
            line = str(exc).splitlines()[0]
            self.log(line, "error")
            self.show_error_dialog("Cannot load recipe", line)
            return False
        self.set_recipe(recipe, None, dirty=True)
        self.log(f"loaded the recipe of {source} ({recipe.name}); save it to keep it")
        return True

    def save_recipe_file(self, path: str | Path) -> bool:
        """Write the recipe; a different existing file is only replaced after ``ask_overwrite``."""
        target = Path(path)
        if not self.revalidate():
            self.show_error_dialog("Cannot save recipe", "The recipe has errors; fix the fields marked in red "
                                   "first.")
            return False
        if self._is_builtin(target):
            self.show_error_dialog("Cannot save recipe", "The built-in quickstart recipe is read-only; use "
                                   "Save As.")
            return False
        same = self.recipe_path is not None and target.resolve() == self.recipe_path.resolve()
        if target.exists() and not same and not self.ask_overwrite(target):
            return False
        assert self._valid is not None
        try:
            save_recipe(self._valid, target)
        except OSError as exc:
            self.log(f"cannot save {target}: {exc}", "error")
            self.show_error_dialog("Cannot save recipe", f"{target}: {exc.strerror or exc}")
            return False
        self._base = self._valid.model_copy(deep=True)
        self.recipe_path = target
        self._dirty = False
        self._update_title()
        self.settings.setValue("recipe/last", str(target.resolve()))
        self.remember_folder("recipes", str(target.resolve().parent))
        self.log(f"saved {target}")
        return True

    @staticmethod
    def _is_builtin(path: Path) -> bool:
        try:
            return path.resolve() == quickstart_path().resolve()
        except OSError:
            return False

    # -- dialogs (tests replace the ask_* methods) -----------------------------------------------------
    def ask_overwrite(self, path: Path) -> bool:
        answer = QMessageBox.question(self, "Replace file?", f"{path} already exists. Replace it?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def ask_discard_changes(self) -> bool:
        answer = QMessageBox.question(self, "Discard changes?", "The recipe has unsaved changes. Discard them?",
                                      QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
                                      QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Discard

    def ask_save_before_close(self) -> str:
        """Closing with unsaved recipe edits: "save", "discard" or "cancel"."""
        answer = QMessageBox.question(self, "Save the recipe?", "The recipe has unsaved changes. Save them before "
                                      "closing?", QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                                      | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save)
        return {QMessageBox.StandardButton.Save: "save",
                QMessageBox.StandardButton.Discard: "discard"}.get(answer, "cancel")

    def ask_stop_running_job(self) -> bool:
        job = self.jobs.current()
        name = job.name if job else "A job"
        answer = QMessageBox.question(self, "Stop the running job?",
                                      f"{name} is still running. Stop it and close the window?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def show_error_dialog(self, title: str, message: str, details: str = "") -> QMessageBox:
        """Non-blocking error box (the app keeps running behind it); also kept in ``error_messages``."""
        self.error_messages.append(message)
        box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, self)
        box.setObjectName("errorDialog")
        if details:
            box.setDetailedText(details)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        return box

    # ------------------------------------------------------------------------------------------ jobs
    def start_run(self, benchmark_only: bool = False) -> Job | None:
        """Run the current recipe (train + evaluate + benchmark, or benchmark only) as a job."""
        if self.jobs.busy:
            return None
        if not self.revalidate():
            self.log("the recipe has errors; fix the fields marked in red", "error")
            return None
        recipe = self.current_recipe()
        assert recipe is not None
        for p in self.panels:  # a panel may ask first (e.g. before overwriting a bundle) and adjust this run
            confirm = getattr(p, "confirm_run", None)
            if confirm is not None and (recipe := confirm(recipe, benchmark_only)) is None:
                return None
        store = self.store

        def run(reporter: Any, cancel: Any) -> Any:
            from workbench.techniques import run_recipe

            return run_recipe(recipe, store=store, reporter=reporter, cancel=cancel, benchmark_only=benchmark_only)

        name = "Benchmark" if benchmark_only else "Run"
        self._run_id = None
        self.dashboard.start()
        job = self.jobs.start(name, run)
        job.runStarted.connect(self._on_run_started)
        job.finished.connect(self._on_run_finished)
        self.log(f"{name.lower()} of recipe '{recipe.name}' started", "stage")
        return job

    def stop_job(self) -> None:
        """Ask the exclusive job to stop; the engine notices at its next batch."""
        job = self.jobs.current()
        if job is None:
            return
        job.cancel()
        self.stage_label.setText("Stopping…")
        self.log(f"stopping {job.name}…", "warning")
        self._update_actions()

    def _attach_job(self, job: Job) -> None:
        """Route a job's signals into the window: progress, log, metrics, errors.

        Lambdas capture plain values (id, name, token), never the job (see ``Job``).
        """
        name, job_id, token = job.name, job.id, job.cancel_token
        if job.key != JobManager.EXCLUSIVE:
            job.errored.connect(lambda msg, _tb: self.log(f"{name}: {msg}", "warning")
                                if self.jobs.is_current(job_id) else None)
            return
        self._eta.reset()
        self._stage = name
        self._job_name = name
        self._job_failed = False
        self._set_progress_state("running")
        self.stage_label.setText(name)
        self.progress.setRange(0, 0)
        self.progress.setFormat(f"{name}…")
        job.progressed.connect(self._on_progress)
        job.stageStarted.connect(self._on_stage_started)
        job.metrics.connect(self.dashboard.add_metrics)
        job.logged.connect(self.log)
        job.warned.connect(lambda m: self.log(m, "warning"))
        job.errored.connect(lambda msg, tb: self._on_job_error(name, msg, tb))
        job.cancelledJob.connect(lambda: self.log(f"{name} stopped", "warning"))
        job.finished.connect(lambda result: self._on_job_finished(token.cancelled, result))
        job.ended.connect(lambda _j: self._update_actions())

    def _on_busy_changed(self, busy: bool) -> None:
        self._update_actions()
        for p in self.panels:
            p.set_busy(busy)

    def _on_run_started(self, run_id: int, name: str) -> None:
        self._run_id = run_id
        self.log(f"run {run_id} ({name}) recorded in the store", "stage")
        if self.tabs.currentWidget() is self.runs_view:  # otherwise the end-of-run refresh shows it:
            self._refresh_runs()  # a refresh costs ~0.1 s of GUI thread, not worth it while hidden

    def _on_stage_started(self, stage: str, total: int) -> None:
        self._stage = stage
        self._eta.reset()
        self.stage_label.setText(f"Stage: {stage}")
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(0)
        else:
            self.progress.setRange(0, 0)
        self.progress.setFormat(stage)

    def _on_progress(self, done: int, total: int, message: str) -> None:
        label = message or self._stage
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
            eta = format_eta(self._eta.update(done, total, label))
            self.progress.setFormat(f"{label} — %p%" + (f" — ETA {eta}" if eta else ""))
        else:
            self.progress.setRange(0, 0)
            self.progress.setFormat(label)
        self.stage_label.setText(f"Stage: {self._stage}")

    def _on_job_error(self, name: str, message: str, tb: str) -> None:
        self._job_failed = True
        self.log(f"{name} failed: {message}", "error")
        self.show_error_dialog(f"{name} failed", message, tb)

    def _on_job_finished(self, cancelled: bool, result: object = None) -> None:
        """Show how the exclusive job ended: done, stopped, or failed (an exception, or a run recorded as failed)."""
        gc.collect()  # here on the GUI thread, so a job thread never frees this thread's Qt objects
        self.dashboard.stop()
        failed = not cancelled and (self._job_failed or getattr(result, "status", None) == "failed")
        state, word = ("stopped", "stopped") if cancelled else ("failed", "failed") if failed else ("done", "finished")
        self.progress.setRange(0, 1)
        self.progress.setValue(0 if cancelled else 1)  # a full red bar for a failure, an empty one when stopped
        self.progress.setFormat({"stopped": "Stopped", "failed": "Failed", "done": "Done"}[state])
        self._set_progress_state(state)
        self.stage_label.setText(f"Last job: {self._job_name} {word} at {time.strftime('%H:%M:%S')}")
        self._update_actions()

    def _set_progress_state(self, state: str) -> None:
        """Colour the progress bar for the job's state (red when it failed); ``state`` is also a property."""
        self.progress.setProperty("state", state)
        palette = QPalette(self._progress_palette)
        if state == "failed":
            palette.setColor(QPalette.ColorRole.Highlight, QColor(FAILED_COLOUR))
        self.progress.setPalette(palette)
        self.stage_label.setStyleSheet(f"color: {FAILED_COLOUR};" if state == "failed" else "")

    def _on_run_finished(self, outcome: object) -> None:
        status = getattr(outcome, "status", None)
        if status == "completed":
            s = getattr(outcome, "summary", {}) or {}
            for panel in self.panels:  # panels that chart a run's result (e.g. the early-exit curve)
                show = getattr(panel, "show_run_result", None)
                if callable(show):
                    show(s)
            final = s.get("final") or {}
            acc, tput = final.get("accuracy"), final.get("throughput")
            parts = [f"run {outcome.run_id} completed"]  # type: ignore[attr-defined]
            if acc is not None:
                parts.append(f"accuracy {acc * 100:.2f} %")
            if tput:
                parts.append(f"throughput {tput:,.0f} samples/s")
            self.log(", ".join(parts), "stage")
        elif status == "failed":
            error = getattr(outcome, "error", "") or "unknown error"
            self.show_error_dialog("Run failed", f"Run {outcome.run_id} failed: {error}")  # type: ignore[attr-defined]
        elif status == "cancelled":
            self.log(f"run {outcome.run_id} cancelled; what it measured so far is kept", "warning")  # type: ignore[attr-defined]
        self._refresh_runs()

    def _refresh_runs(self) -> None:
        if self._store_closed:
            return
        self.runs_view.refresh()

    # -------------------------------------------------------------------------------------- settings
    def _restore_settings(self) -> None:
        geo = self.settings.value("window/geometry")
        if isinstance(geo, QByteArray | bytes) and geo:
            self.restoreGeometry(QByteArray(geo))
        else:
            self.resize(1480, 920)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray | bytes) and state:
            self.restoreState(QByteArray(state))
        split = self.settings.value("window/splitter")
        if isinstance(split, QByteArray | bytes) and split:
            self.splitter.restoreState(QByteArray(split))
        self.dashboard.set_default_dir(self.last_folder("exports"))

    def _save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/splitter", self.splitter.saveState())
        self.settings.sync()

    # -------------------------------------------------------------------------------------- shutdown
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        """Close now if every job stops within the grace period; otherwise stay open, say what we wait
        for, and close by ourselves when the last job ends (never under a running job thread)."""
        if self._shut_down:
            event.accept()
            return
        if not self._closing and self._dirty:
            choice = self.ask_save_before_close()
            if choice == "cancel" or (choice == "save" and not self.action_save()):
                event.ignore()
                return
        if not self._closing and self.jobs.busy and not self.ask_stop_running_job():
            event.ignore()
            return
        # Already closing (waiting for a job that cannot be interrupted): just look again.
        if self.shutdown(0.0 if self._closing else SHUTDOWN_GRACE_S):
            event.accept()
        else:
            event.ignore()

    def shutdown(self, wait_s: float = SHUTDOWN_GRACE_S) -> bool:
        """The one shutdown path: stop timers, cancel every job, and finish once every job thread has ended.

        Cancellation is cooperative: a job stops at its next checkpoint, usually within a batch, so
        this waits up to ``wait_s`` (blocking). A job inside a step that cannot be interrupted (user
        model code, ONNX export, torch.compile, reading a dataset) may take longer: then this returns
        False, the window stays up with a "Waiting for …" dialog, and shutdown completes (and the
        window closes) when the last job ends. Idempotent; True once shut down.
        """
        if self._shut_down:
            return True
        if not self._closing:
            self._closing = True
            self.revalidate_timer.stop()
            self.dashboard.timer.stop()
            for p in self.panels:
                p.shutdown()
            self.jobs.close()  # no new jobs; running ones are asked to stop
            self.jobs.allEnded.connect(self._on_all_jobs_ended)
        if not self.jobs.shutdown(wait_s):
            self._show_shutdown_wait()
            return False
        self._finish_shutdown()
        return True

    def _finish_shutdown(self) -> None:
        """Every job thread has ended: deliver their last signals, save settings, close the store."""
        self._shut_down = True
        app = QApplication.instance()
        if app is not None:
            app.processEvents()  # deliver the jobs' last queued signals while the window still exists
        if self._wait_dialog is not None:
            self._wait_dialog.hide()
            self._wait_dialog.deleteLater()
            self._wait_dialog = None
        self.dashboard.timer.stop()
        self.statusBar().clearMessage()  # stops the status bar's message timer
        self._save_settings()
        if self._owns_store and not self._store_closed:
            self._store_closed = True
            self.store.close()

    @property
    def store_is_closed(self) -> bool:
        return self._store_closed

    def _on_all_jobs_ended(self) -> None:
        if self._closing and not self._shut_down:
            self.log("every job has ended; closing", "stage")
            QTimer.singleShot(0, self.close)  # outside the job's signal dispatch

    def waiting_for(self) -> list[str]:
        """What shutdown is waiting for, e.g. ``["Run (stage: load)"]`` (empty when nothing runs)."""
        out = []
        for job in self.jobs.jobs():
            if job.key == JobManager.EXCLUSIVE and self._stage and self._stage != job.name:
                out.append(f"{job.name} (stage: {self._stage})")
            else:
                out.append(job.name)
        return out

    def _show_shutdown_wait(self) -> None:
        """Tell the user why the window does not close yet, and that it will by itself."""
        names = ", ".join(self.waiting_for()) or "a background job"
        text = (f"Waiting for {names} to finish its current step. It was asked to stop, but this step "
                "cannot be interrupted; the window closes by itself as soon as it ends.")
        self.stage_label.setText(f"Closing: waiting for {names}…")
        self.progress.setRange(0, 0)
        self.progress.setFormat("Closing…")
        if self._wait_dialog is None:
            self.log(f"closing: waiting for {names} to finish its current step", "warning")
            dialog = QDialog(self)
            dialog.setObjectName("shutdownWaitDialog")
            dialog.setWindowTitle("Closing Acceleration Workbench")
            dialog.setWindowModality(Qt.WindowModality.WindowModal)
            lay = QVBoxLayout(dialog)
            label = QLabel(text)
            label.setObjectName("shutdownWaitText")
            label.setWordWrap(True)
            lay.addWidget(label)
            busy = QProgressBar()
            busy.setRange(0, 0)
            busy.setTextVisible(False)
            lay.addWidget(busy)
            self._wait_dialog = dialog
        else:
            label = self._wait_dialog.findChild(QLabel, "shutdownWaitText")
            if label is not None:
                label.setText(text)
        self._wait_dialog.show()
        self._wait_dialog.raise_()
