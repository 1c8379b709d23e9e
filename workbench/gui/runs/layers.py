"""The "Layers" tab: a per-layer diff of a run against its baseline (or of two runs), with verdicts.

Profiling runs on a ``JobManager`` job (its own key, so it never blocks runs); the worker returns
plain dicts and only the slot on the GUI thread touches widgets. A run profiled before (here or
with ``workbench profile RUN``) shows its stored diff at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from workbench.core.store import RunRecord, RunStore
from workbench.gui.jobs import Job, JobManager
from workbench.gui.runs.export import small_table

__all__ = ["LAYER_COLUMNS", "LayersTab"]

LAYER_COLUMNS = [
    ("Layer", "The PyTorch module (ONNX nodes are traced back to the module they came from)."),
    ("Status", "same / faster / slower (more than 10 % change), fused into another layer, removed, added, "
               "or not executed."),
    ("Before ms", "Time per call of this layer before (mean over the profiled calls)."),
    ("After ms", "Time per call of this layer after."),
    ("Speedup", "Before time / after time."),
    ("Precision", "What the layer computes in, before -> after (float, int8, fp16, bf16, mixed)."),
    ("MACs before", "Multiply-accumulates at the profiled batch size, before."),
    ("MACs after", "Multiply-accumulates at the profiled batch size, after."),
    ("Ops", "Module type or executed kernels, before -> after."),
]
_NUMERIC = {2, 3, 4, 6, 7}


def _item(value: Any, numeric: bool) -> QTableWidgetItem:
    """A cell that sorts by number (not text) in numeric columns; empty cells sort first."""
    item = QTableWidgetItem()
    if numeric:
        item.setData(Qt.ItemDataRole.DisplayRole, float(value) if value is not None else None)
        if value is None:
            item.setText("")
    else:
        item.setText("" if value is None else str(value))
    return item


class LayersTab(QWidget):
    """Per-layer diff table + verdict lines for the runs selected in the runs view."""

    def __init__(self, store: RunStore, jobs: Callable[[], JobManager], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self._jobs = jobs
        self._pair: tuple[tuple[int, str], tuple[int, str]] | None = None
        self._job_id: int | None = None
        self._job_pair: tuple[tuple[int, str], tuple[int, str]] | None = None
        self.result: dict[str, Any] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        top = QHBoxLayout()
        self.title = QLabel(self)
        self.title.setObjectName("layersTitle")
        self.title.setWordWrap(True)
        top.addWidget(self.title, 1)
        top.addWidget(QLabel("Batch:", self))
        self.batch_spin = QSpinBox(self)
        self.batch_spin.setObjectName("layersBatch")
        self.batch_spin.setRange(1, 4096)
        self.batch_spin.setToolTip("Batch size to profile at; batch 1 shows memory-bound layers.")
        self.batch_spin.lineEdit().setToolTip(self.batch_spin.toolTip())
        top.addWidget(self.batch_spin)
        self.profile_button = QPushButton("Profile layers", self)
        self.profile_button.setObjectName("layersProfile")
        self.profile_button.setToolTip("Profile both models layer by layer on a background job (seconds for "
                                       "small models) and store the result with the run.")
        self.profile_button.clicked.connect(self.start_profile)
        top.addWidget(self.profile_button)
        layout.addLayout(top)
        self.table = small_table(LAYER_COLUMNS, "layersTable", "Each layer before and after; click a header to sort.")
        self.table.setSortingEnabled(True)
        layout.addWidget(self.table, 1)
        self.verdicts = QLabel(self)
        self.verdicts.setObjectName("layerVerdicts")
        self.verdicts.setWordWrap(True)
        self.verdicts.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.verdicts)
        self.set_runs([], None)

    # -- selection ---------------------------------------------------------------------------------
    def set_runs(self, runs: list[RunRecord], baseline_id: int | None) -> None:
        """One run: its baseline against its final model; two or more: the baseline run against another."""
        if len(runs) == 1:
            rid = runs[0].id
            self._pair = ((rid, "baseline"), (rid, "final"))
            self.title.setText(f"Run #{rid}: its baseline model against its final (deployed) model")
        elif len(runs) >= 2:
            base = baseline_id if baseline_id in [r.id for r in runs] else runs[0].id
            other = next(r.id for r in runs if r.id != base)
            self._pair = ((base, "final"), (other, "final"))
            self.title.setText(f"Run #{base} against run #{other} (final models)")
        else:
            self._pair = None
            self.title.setText("Select a run (its baseline against its result) or two runs.")
        self.profile_button.setEnabled(self._pair is not None and self._job_id is None)
        stored = self._stored_result(runs[0].id) if len(runs) == 1 else None
        if stored is not None:
            self.show_result(stored)
        else:
            self.result = None
            self.table.setRowCount(0)
            self.verdicts.setText("Press \u201cProfile layers\u201d to time each layer of both models."
                                  if self._pair else "")

    def _stored_result(self, run_id: int) -> dict[str, Any] | None:
        from workbench.analysis.profile import latest_profile

        stored = latest_profile(self.store, run_id)
        if stored is None or not stored.get("diff"):
            return None
        return {"diff": stored["diff"], "verdicts": stored.get("verdicts") or [], "stored": True,
                "batch": stored["profile"].get("batch")}

    # -- profiling ---------------------------------------------------------------------------------
    def start_profile(self) -> Job | None:
        """Profile the pair on a job; the table fills when it finishes."""
        if self._pair is None or self._job_id is not None:
            return None
        store, pair, batch = self.store, self._pair, self.batch_spin.value()

        def work(reporter: Any, cancel: Any) -> dict[str, Any]:
            from workbench.analysis.profile import (
                collect_verdicts,
                diff_profiles,
                profile_target,
                run_target,
                save_profile,
            )
            from workbench.core.measure.paired import choose_threads

            choice = choose_threads(0)
            (a_id, a_side), (b_id, b_side) = pair
            reporter.progress(0, 2, "profiling the first model")
            before = profile_target(run_target(store, a_id, a_side), batch, threads=choice.threads)
            cancel.raise_if_cancelled()
            reporter.progress(1, 2, "profiling the second model")
            after = profile_target(run_target(store, b_id, b_side), batch, threads=choice.threads)
            diff = diff_profiles(before, after).to_dict()
            verdicts = [v.to_dict() for v in collect_verdicts(after, cores=choice.cores,
                                                              others_cores=choice.others_cores)]
            if a_id == b_id:  # a run against its own baseline: keep it for reports and the next visit
                from workbench.analysis.profile import Verdict

                save_profile(store, b_id, after, [Verdict.from_dict(v) for v in verdicts], diff)
            reporter.progress(2, 2, "done")
            return {"diff": diff, "verdicts": verdicts, "stored": False, "batch": batch}

        job = self._jobs().start("Layer profile", work, key="layers")
        self._job_id = job.id
        self._job_pair = pair
        self.profile_button.setEnabled(False)
        self.verdicts.setText("Profiling\u2026")
        job.errored.connect(self._on_error)
        job.finished.connect(self._on_finished)
        return job

    def _on_error(self, message: str, _tb: str) -> None:
        if self._job_pair == self._pair:
            self.verdicts.setText(f"Profiling failed: {message}")

    def _on_finished(self, result: object) -> None:
        self._job_id = None
        self.profile_button.setEnabled(self._pair is not None)
        if isinstance(result, dict) and self._job_pair == self._pair:  # the selection may have moved on
            self.show_result(result)

    def busy(self) -> bool:
        return self._job_id is not None

    # -- display -----------------------------------------------------------------------------------
    def show_result(self, result: dict[str, Any]) -> None:
        """Fill the table and the verdict lines from a diff dict (``ProfileDiff.to_dict``) and verdicts."""
        self.result = result
        diff = result["diff"]
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(diff["rows"]))
        for i, r in enumerate(diff["rows"]):
            status = f"fused into {r['fused_into']}" if r["status"] == "fused" and r.get("fused_into") else r["status"]
            speed = r.get("speedup")
            values = [r["layer"], status, r.get("before_ms"), r.get("after_ms"),
                      round(speed, 3) if speed else None,
                      f"{r.get('before_precision') or '-'} \u2192 {r.get('after_precision') or '-'}",
                      r.get("before_macs"), r.get("after_macs"),
                      f"{r.get('before_op') or '-'} \u2192 {r.get('after_op') or '-'}"]
            for col, value in enumerate(values):
                if col in (2, 3) and value is not None:
                    value = round(float(value), 4)
                self.table.setItem(i, col, _item(value, col in _NUMERIC))
        self.table.setSortingEnabled(True)
        total = (f"{diff['before_total_ms']:.3f} ms \u2192 {diff['after_total_ms']:.3f} ms per call at batch "
                 f"{result.get('batch') or diff.get('batch')}")
        lines = [total + (" (stored profile)" if result.get("stored") else "")]
        verdicts = result.get("verdicts") or []
        lines += [f"\u2022 {v['message']}. Try: {v['advice']}" for v in verdicts]
        if not verdicts:
            lines.append("No verdicts: nothing the profile can see holds this model back.")
        self.verdicts.setText("\n".join(lines))

    def rows(self) -> list[list[str]]:
        """The table as shown (display order), for tests and exports."""
        return [[self.table.item(r, c).text() if self.table.item(r, c) else "" for c in range(self.table.columnCount())]
                for r in range(self.table.rowCount())]
