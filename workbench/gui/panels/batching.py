"""Batching panel: batch sizes, gradient accumulation and the max-batch search (the [batching] section).

"Find max batch" runs the engine's search as a job on the current recipe; the result is shown with
an "Apply" button and is never applied silently.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from workbench.core.batching import MaxBatchResult
from workbench.core.events import CancelToken, Reporter
from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel
from workbench.gui.widgets import human_bytes
from workbench.recipe import Recipe


def max_batch_job(recipe: Recipe) -> Any:
    """A job function: build the recipe's model for its data shape and search the largest batch."""

    def run(reporter: Reporter, cancel: CancelToken) -> MaxBatchResult:
        from workbench.core.batching import find_max_batch
        from workbench.core.precision import prepare_module, resolve_precision
        from workbench.gui.panels.model import build_model_for

        loaded, shape, _classes = build_model_for(recipe, cancel)
        if loaded.module is None:
            raise ValueError("an ONNX model cannot be trained, so it has no training batch size to search")
        plan = resolve_precision(recipe.precision)
        module = prepare_module(loaded.module, plan)
        b = recipe.batching
        return find_max_batch(module, shape, plan, budget_bytes=int(b.memory_budget_gb * 2**30),
                              safety_margin=b.safety_margin, reporter=reporter, cancel=cancel)

    return run


@register_panel(order=50)
class BatchingPanel(RecipePanel):
    section_name = "batching"
    title = "Batching"
    description = ("Bigger batches use the hardware better (higher samples/s) until memory runs out; very "
                   "large batches may need a higher learning rate or more epochs to reach the same accuracy.")

    def build(self) -> None:
        self.batch = self.add_spin("batch_size", "Batch size", "Samples per training step. Larger batches raise "
                                   "throughput and memory use; past a point they can cost accuracy.")
        self.add_spin("eval_batch_size", "Eval batch size", "Samples per evaluation step. No gradients are "
                      "kept, so it can be several times the training batch.")
        self.add_spin("grad_accum_steps", "Grad accumulation", "Sum gradients over N batches before each "
                      "optimizer step: the effective batch is N× larger without N× the memory, at the same "
                      "speed per sample.", suffix=" batches")
        self.add_check("length_aware", "Length-aware (token data)", "Token data only: group sentences of similar "
                       "length into batches and pad each batch only to its longest member instead of the full "
                       "length; most text is short, so most padding (and its compute) goes away.")
        self.begin_group("Find max batch", "Search the largest training batch that fits in memory.")
        self.add_check("find_max_batch", "Search during runs", "Also run the max-batch search at the start of "
                       "each run and record the result (reported only, never applied).")
        self.add_double("memory_budget_gb", "Memory budget", "On CPU a batch fits when its measured footprint "
                        "stays under this budget (0 = half the free RAM). On CUDA the GPU's memory is the limit.",
                        decimals=2, step=0.5, suffix=" GB", special="auto (50% of free RAM)")
        self.add_double("safety_margin", "Safety margin", "Headroom kept below the largest fitting batch, for "
                        "memory fragmentation and other processes.", decimals=2, step=0.05)
        row = QWidget()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        self.find_button = QPushButton("Find max batch")
        self.find_button.setObjectName("findMaxBatchButton")
        self.find_button.setToolTip("Run the search now on the current model, data shape and precision. "
                                    "The result is shown here; nothing is changed until you apply it.")
        self.find_button.clicked.connect(self.find_max_batch)
        self.apply_button = QPushButton("Apply suggested size")
        self.apply_button.setObjectName("applyMaxBatchButton")
        self.apply_button.setToolTip("Set the batch size to the suggested value (largest fitting batch minus "
                                     "the safety margin).")
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply_suggestion)
        lay.addWidget(self.find_button)
        lay.addWidget(self.apply_button)
        lay.addStretch(1)
        self.add_widget(row)
        self.result_label = QLabel("")
        self.result_label.setObjectName("maxBatchResult")
        self.result_label.setWordWrap(True)
        self.add_widget(self.result_label)
        self.suggested: int | None = None

    def find_max_batch(self) -> None:
        if self.host is None:
            return
        recipe = self.host.current_recipe()
        if recipe is None:
            self.result_label.setText("Fix the recipe errors first: the search uses the current model and data.")
            return
        if self.host.jobs.busy:
            self.result_label.setText("Another job is running; try again when it has finished.")
            return
        self.find_button.setEnabled(False)
        self.apply_button.setEnabled(False)
        self.suggested = None
        self.result_label.setText("Searching… (doubling, then binary search)")
        job = self.host.jobs.start("Find max batch", max_batch_job(recipe))
        job.finished.connect(self._on_result)
        job.errored.connect(lambda msg, _tb: self.result_label.setText(f"Search failed: {msg}"))
        job.cancelledJob.connect(lambda: self.result_label.setText("Search stopped."))

    def _on_result(self, result: object) -> None:
        self.find_button.setEnabled(True)
        if not isinstance(result, MaxBatchResult):
            return
        if result.max_batch == 0:
            self.result_label.setText(f"Even batch 1 does not fit in {human_bytes(result.budget_bytes)} "
                                      f"on {result.device}.")
            return
        self.suggested = result.suggested_batch
        self.result_label.setText(
            f"Largest batch that fits on {result.device}: <b>{result.max_batch}</b> (budget "
            f"{human_bytes(result.budget_bytes)}). Suggested with safety margin: <b>{result.suggested_batch}</b>. "
            "Not applied.")
        self.apply_button.setEnabled(True)

    def set_busy(self, busy: bool) -> None:
        self.find_button.setEnabled(not busy)

    def apply_suggestion(self) -> None:
        if self.suggested:
            self.batch.setValue(min(self.suggested, self.batch.maximum()))
            self.result_label.setText(self.result_label.text().replace("Not applied.", "Applied."))
            self.apply_button.setEnabled(False)
