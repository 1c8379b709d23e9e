"""Data: sources (default shapes, synthetic, image folder, csv, npz, mnist), transforms, loaders."""

from workbench.engine.data.default_dataset import CLASS_NAMES as DEFAULT_CLASS_NAMES
from workbench.engine.data.default_dataset import ensure_default_dataset
from workbench.engine.data.loader import build_loader, measure_loader_throughput
from workbench.engine.data.sources import DatasetBundle, load_dataset, sample_previews
from workbench.engine.data.transforms import ImageTransform

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "DatasetBundle",
    "ImageTransform",
    "build_loader",
    "ensure_default_dataset",
    "load_dataset",
    "measure_loader_throughput",
    "sample_previews",
]
