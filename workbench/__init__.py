"""Acceleration Workbench: make PyTorch models train and run faster, and prove it."""

from pathlib import Path

__version__ = "0.1.0"

#: Project resources (recipes, icons). Lives beside the package in a source checkout.
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
