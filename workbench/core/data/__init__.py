"""Data: sources (default shapes, synthetic, image folder, csv, npz, mnist), transforms, loaders."""

from workbench.core.data.datasets import DatasetBundle, sample_previews
from workbench.core.data.default_dataset import CLASS_NAMES as _GENERATION_ORDER
from workbench.core.data.default_dataset import ensure_default_dataset
from workbench.core.data.loader import build_loader, measure_loader_throughput
from workbench.core.data.sources import load_dataset
from workbench.core.data.transforms import ImageTransform

# Class names of the default set in label order (the image-folder loader sorts class folders).
DEFAULT_CLASS_NAMES: list[str] = sorted(_GENERATION_ORDER)

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
