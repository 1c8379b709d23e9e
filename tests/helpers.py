"""Small recipe builders shared by tests: short, real runs that finish in seconds."""

from __future__ import annotations

from workbench.recipe import Recipe


def tiny_recipe(name: str = "tiny", epochs: int = 1, samples_per_class: int = 30, **bench: object) -> Recipe:
    r = Recipe(name=name)
    r.data.samples_per_class = samples_per_class
    r.train.epochs = epochs
    r.train.log_every = 2
    r.batching.batch_size = 32
    r.batching.eval_batch_size = 64
    r.bench.batch_sizes = [1, 8]
    r.bench.iters = 5
    r.bench.warmup = 1
    r.bench.max_time_s = 0.5  # per batch size; paired rounds stop here on a noisy machine
    for key, value in bench.items():
        setattr(r.bench, key, value)
    return r


#: A search-sized recipe: an MLP on tiny synthetic data, so an Accelerate trial takes seconds.
ACCELERATE_MINI = """
version = 1
name = "mini"
[model]
source = "zoo"
zoo = "mlp"
[data]
source = "synthetic"
synthetic_shape = [1, 8, 8]
synthetic_classes = 4
synthetic_samples = 320
[train]
epochs = 1
[batching]
batch_size = 32
[bench]
batch_sizes = [1, 16]
max_time_s = 1.0
"""
