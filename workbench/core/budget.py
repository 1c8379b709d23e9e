"""Budget checks that read the way people mean them: a drop of exactly the budget is within it.

Accuracy drops are computed in floating point as ``(before - after) * 100``: an exact one-point loss
(0.9 -> 0.89) comes out as 1.0000000000000009, and a bare ``drop <= 1.0`` would call it over a
1-point budget. Every budget comparison in the Workbench (the accuracy-aware INT8 fallback, the
pruning sensitivity suggestions in the CLI and the GUI, sweep latency budgets) goes through
``within_budget``, so they all agree on the edge case.
"""

from __future__ import annotations

#: Absolute slack for rounding, in the budget's own unit (accuracy points, milliseconds). Far below
#: any difference that can be measured: one sample out of a million is 1e-4 points.
BUDGET_TOLERANCE = 1e-9


def within_budget(value: float, budget: float, tolerance: float = BUDGET_TOLERANCE) -> bool:
    """True when ``value`` (a drop, a latency) is at most ``budget``, allowing for float rounding."""
    return value <= budget + tolerance


def over_budget(value: float, budget: float, tolerance: float = BUDGET_TOLERANCE) -> bool:
    """True when ``value`` exceeds ``budget`` by more than float rounding."""
    return not within_budget(value, budget, tolerance)
