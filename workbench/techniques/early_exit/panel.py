"""Early-exit panel (the [early_exit] section), with the last run's accuracy-vs-cost curve.

Early exits spend less compute on easy inputs: small heads part-way through the network answer
when they are confident enough, and only the hard inputs run to the end. The trade-off is a
threshold: lower exits more samples early (faster) and risks accuracy. The run picks the cheapest
threshold within the accuracy budget on the validation split; the chart shows the whole curve.
"""

from __future__ import annotations

from typing import Any

import pyqtgraph as pg
from PySide6.QtWidgets import QLabel

from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel, format_module_names, parse_module_names


def _parse_weights(text: str) -> list[float]:
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{text!r}: write numbers separated by commas, e.g. 0.5, 0.5, 1") from None
    if any(v < 0 for v in values):
        raise ValueError("loss weights must be >= 0")
    return values


@register_panel(order=115)
class EarlyExitPanel(RecipePanel):
    section_name = "early_exit"
    title = "Early exits"
    description = ("Attach small classifier heads part-way through the network; an input leaves at the first head "
                   "that is confident enough, so easy inputs cost less compute (BranchyNet). Helps when many "
                   "inputs are easy and batches are small (batch-1 latency); adds a little work for the hard ones. "
                   "The threshold is chosen on the validation split within your accuracy budget.")
    optional = True

    def build(self) -> None:
        self.add_parsed_text("exits", "Exit after", "Module names (from the model's layer list) to put an exit head "
                             "after, in forward order; empty uses the zoo model's stage boundaries. An exit must sit "
                             "where one tensor is passed on (between stages, not inside a residual block).",
                             parse_module_names, format_module_names, placeholder="empty = stage boundaries")
        self.add_choice("mode", "Training", "Joint: fine-tune the backbone and all heads together with one weighted "
                        "loss per exit (better early exits, may shift the full model a little). Heads only: freeze "
                        "the trained backbone and train just the heads (the full model stays exactly as it was).",
                        labels={"joint": "Joint (BranchyNet)", "heads_only": "Heads only (frozen backbone)"})
        self.add_spin("epochs", "Epochs", "Epochs of that training. More helps the early heads become confident.")
        self.add_double("lr", "Learning rate", "Learning rate of the exit training.", decimals=5, step=0.0005)
        self.add_parsed_text("loss_weights", "Loss weights", "One weight per exit, the final head last; empty = 1 "
                             "each. Lower weights on early exits protect the full model's accuracy.", _parse_weights,
                             lambda v: ", ".join(f"{w:g}" for w in v), placeholder="empty = 1 each")
        self.add_choice("rule", "Exit rule", "When a head is confident enough: its top softmax probability, or "
                        "1 − its normalised entropy (looks at the whole distribution), reaches the threshold.",
                        labels={"max_prob": "Max probability", "entropy": "Entropy"})
        self.add_double("max_drop", "Max accuracy drop", "Accuracy budget against the full model, in points, "
                        "checked on the validation split when choosing the threshold.", decimals=2, step=0.25,
                        suffix=" pts")
        self.add_double("threshold", "Fixed threshold", "Use this threshold instead of choosing one (0 = choose "
                        "on validation within the budget).", decimals=3, step=0.01, special="choose")
        self.add_text("bundle_dir", "Bundle folder", "Also write the ONNX segments and a small onnxruntime runner "
                      "that applies the threshold here (checked for parity with the PyTorch model).",
                      placeholder="empty = only in the run's files")
        self.add_check("force", "Overwrite", "Replace an existing bundle folder.", text="Replace an existing bundle")

        self.curve_note = QLabel("Run a recipe with early exits to see its accuracy-vs-compute curve here.")
        self.curve_note.setObjectName("earlyExitCurveNote")
        self.curve_note.setWordWrap(True)
        self.body_layout.addWidget(self.curve_note)
        self.chart = pg.PlotWidget(background=None)
        self.chart.setObjectName("earlyExitCurve")
        self.chart.setMinimumHeight(180)
        self.chart.setToolTip("Each point is one threshold replayed on the validation split: accuracy against the "
                              "average share of the full model's compute per sample. Red: the chosen threshold.")
        plot = self.chart.getPlotItem()
        plot.setLabel("bottom", "compute per sample (% of the full model)")
        plot.setLabel("left", "validation accuracy (%)")
        self.curve = pg.PlotDataItem(pen=pg.mkPen("#3d8bd9", width=2), symbol="o", symbolSize=4)
        self.chosen = pg.ScatterPlotItem(size=11, brush=pg.mkBrush("#d62728"), pen=pg.mkPen("w"))
        plot.addItem(self.curve)
        plot.addItem(self.chosen)
        self.body_layout.addWidget(self.chart)
        self._shown: dict[str, Any] = {}

    def show_run_result(self, summary: dict[str, Any]) -> None:
        """Plot the early-exit curve of a finished run (called by the main window after each run)."""
        record = next((s for s in summary.get("stages") or [] if isinstance(s, dict) and s.get("name") == "early_exit"),
                      None)
        if record is None:
            return
        val = record.get("validation") or {}
        full_macs = (record.get("eval") or {}).get("full_macs") or 0
        curve = val.get("curve") or []
        if not curve or not full_macs:
            return
        xs = [100.0 * c["mean_macs"] / full_macs for c in curve]
        ys = [100.0 * c["accuracy"] for c in curve]
        self.curve.setData(xs, ys)
        self.chosen.setData([100.0 * val["mean_macs"] / full_macs], [100.0 * val["accuracy"]])
        ev = record.get("eval") or {}
        lat = (record.get("latency") or {}).get("paired") or {}
        self.curve_note.setText(
            f"Run {summary.get('run_id')}: threshold {record['threshold']:.3f} keeps validation accuracy "
            f"{100 * val['accuracy']:.2f} % (full {100 * val['full_accuracy']:.2f} %); on eval "
            f"{100 * ev.get('accuracy', 0):.2f} % with {100 * ev.get('macs_saved', 0):.0f} % of compute saved"
            + (f", mean batch-1 latency {lat['ratio']:.2f}x faster (paired)" if lat.get("ratio") else "") + ".")
        self._shown = {"run_id": summary.get("run_id"), "points": len(xs), "chosen": record["threshold"]}

    def shown_curve(self) -> dict[str, Any]:
        """What the chart shows (run, number of points, chosen threshold), for tests."""
        return dict(self._shown)
