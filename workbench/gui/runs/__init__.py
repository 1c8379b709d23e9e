"""Runs view: every stored run in a sortable table, side-by-side comparison, Pareto chart, exports.

``table.py`` (the table model and filter), ``compare.py`` (like-with-like ratios and how they were
measured), ``charts.py`` (bar and Pareto charts), ``export.py`` (PNG/CSV and small-table helpers),
``view.py`` (the ``RunsView`` widget that puts them together).
"""

from workbench.gui.runs.charts import CHARTS, pareto_points
from workbench.gui.runs.compare import default_baseline, proof_banner, speedup_row
from workbench.gui.runs.table import (
           COL_STATUS,
           COL_THROUGHPUT,
           COLUMNS,
           EMPTY_MESSAGE,
           RUN_ID_ROLE,
           STATUS_COLOURS,
)
from workbench.gui.runs.view import RunsView

__all__ = ["CHARTS", "COLUMNS", "COL_STATUS", "COL_THROUGHPUT", "EMPTY_MESSAGE", "RUN_ID_ROLE", "STATUS_COLOURS",
           "RunsView", "default_baseline", "pareto_points", "proof_banner", "speedup_row"]
