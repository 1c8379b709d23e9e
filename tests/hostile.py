"""Hostile and broken files for tests: each evil file would create ``marker`` if anything unpickled it.

Shared by the model-file safety test and the bad-input corpus. Everything here is tiny (a Linear(4, 2)
model, 4 features, 2 classes) so the tests that use it stay fast.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Evil:
    """Unpickling this calls ``open(marker, "w")``: the marker file existing proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def good_pt2(path: Path) -> Path:
    """A real torch.export archive of Linear(4, 2) with a dynamic batch axis."""
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(nn.Linear(4, 2).eval(), (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def evil_pt2(path: Path, marker: Path) -> Path:
    """A valid-looking .pt2 whose pickled sample inputs run ``open(marker, 'w')`` when torch.export.load reads them."""
    good = good_pt2(path.with_name(path.stem + ".template.pt2"))
    payload = io.BytesIO()
    torch.save({"x": Evil(marker)}, payload)
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, payload.getvalue() if item.filename.endswith("sample_inputs/model.pt") else data)
    good.unlink()
    return path


def evil_pt(path: Path, marker: Path) -> Path:
    """A torch.save file with real-looking weights and a payload that runs when unpickled."""
    torch.save({"0.weight": torch.zeros(2, 4), "payload": Evil(marker)}, path)
    return path


def evil_npy(path: Path, marker: Path) -> Path:
    """An object .npy array whose element runs code when unpickled (np.load(allow_pickle=True))."""
    arr = np.empty((1,), dtype=object)
    arr[0] = Evil(marker)
    np.save(path, arr, allow_pickle=True)
    return path


def tiny_onnx(path: Path, features: int = 4, classes: int = 2) -> Path:
    """A real ONNX classifier ``x @ W + b`` with a dynamic batch axis, built without torch.onnx (fast)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((features, classes)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(classes, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def tabular_recipe_text(model_lines: str, extra: str = "", name: str = "hostile", epochs: int = 0) -> str:
    """A recipe on tiny synthetic 4-feature, 2-class data, no training, short benchmarks."""
    return (f'name = "{name}"\n[model]\n{model_lines}\n'
            "[data]\nsource = \"synthetic\"\nsynthetic_shape = [4]\nsynthetic_classes = 2\nsynthetic_samples = 64\n"
            f"[train]\nepochs = {epochs}\n[batching]\nbatch_size = 8\neval_batch_size = 16\n"
            "[bench]\nbatch_sizes = [1]\niters = 3\nwarmup = 0\nmax_time_s = 0.5\n" + extra)
