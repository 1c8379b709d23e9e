"""Accelerate: one search for the fastest model within an accuracy budget (Optuna), every trial a stored run.

``space`` says what may be tried and turns a trial into a recipe; ``study`` keeps the Optuna study
(storage, workers, killed trials); ``search`` runs trials, judges them against one reference model
and writes the result (Pareto front, the winner, its Before → After card and bundle).
"""

from workbench.analysis.accelerate.search import (
    QUICK_BUDGET_S,
    AccelerateOutcome,
    SearchSettings,
    best_trial,
    card_text,
    pareto_rows,
    parse_duration,
    run_search,
    run_worker,
    trial_rows,
)
from workbench.analysis.accelerate.space import describe

__all__ = ["QUICK_BUDGET_S", "AccelerateOutcome", "SearchSettings", "best_trial", "card_text", "describe",
           "pareto_rows", "parse_duration", "run_search", "run_worker", "trial_rows"]
