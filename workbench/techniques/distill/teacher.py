"""Knowledge distillation: a small student learns from a big teacher's softened outputs (Hinton et al.).

Loss: ``alpha · T² · KL(p_teacher ‖ p_student) + (1 − alpha) · CE(student, labels)`` with both
distributions softened by temperature ``T`` (``kd_loss``). ``T²`` keeps the soft-target gradients on
the same scale as the hard-label ones when ``T`` changes.

Where it sits in the pipeline: distillation *is* how the student is trained, so the ``distill``
stage owns training (``Stage.owns_training``): the pipeline skips its plain ``[train]`` step and
the stage trains the student with the teacher instead. The honest comparison is then:

* ``baseline`` = the **teacher** (the big model the user would otherwise deploy),
* ``final`` = the **distilled student**,
* with ``control = true``, the **student alone** (same init, seed, epochs, data, plain CE) as the
  control, and ``gap_closed = (distilled − alone) / (teacher − alone)``.

Teacher logits cache: datasets return ``(x, y)`` without sample indices, so the cache is keyed by
the *content* of each input (a 128-bit BLAKE2b digest of its bytes). That is exact when inputs are
deterministic, which is why it is used only with ``data.augment = false``; with augmentation every
epoch sees new inputs and logits are computed on the fly. Hits and misses are recorded.

Public API: ``kd_loss``, ``TeacherLogits``, ``make_kd_loss_fn``, ``load_teacher``, ``gap_closed``,
``run_distill_stage``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.core.kd import set_eval
from workbench.core.pipeline import weights_of_run
from workbench.errors import ModelLoadError, RecipeError, WorkbenchError

#: Suffix → model source for ``distill.teacher = PATH``.
_FILE_SOURCES = {".py": "python", ".pt2": "export", ".ts": "torchscript", ".jit": "torchscript",
                 ".torchscript": "torchscript", ".pt": "torchscript", ".pth": "torchscript", ".zip": "torchscript"}


# --------------------------------------------------------------------------------------------- teacher


@dataclass
class Teacher:
    """A loaded teacher. ``has_weights`` is False for a freshly built zoo/python model (train it first)."""

    module: nn.Module
    description: str
    has_weights: bool
    kind: str


def _num_classes_of(module: nn.Module, input_shape: Sequence[int]) -> int:
    from workbench.core.models.locate import run_located

    ref = next((t for t in module.parameters()), None)
    x = torch.zeros((2, *input_shape), device=ref.device if ref is not None else "cpu")
    was = module.training
    set_eval(module)
    try:
        with torch.no_grad():
            out = run_located(module, lambda: module(x), "the teacher's forward")
    finally:
        if was:
            module.train()
    if isinstance(out, tuple | list):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise WorkbenchError("distill.teacher must return logits of shape [batch, classes]")
    return int(out.shape[-1])


def load_teacher(spec: str, weights: str, *, num_classes: int, input_shape: Sequence[int],
                 store: Any = None, width: float = 1.0) -> Teacher:
    """Load the teacher named by ``distill.teacher`` and check it predicts the student's classes.

    ``zoo:NAME`` (+ ``weights``), ``run:ID`` (architecture from that run's stored recipe, trained
    weights from its ``weights`` artifact, pruned shapes included), or a model file
    (.py / .pt2 / TorchScript). Every problem is a one-line WorkbenchError.
    """
    from workbench.core.models import ZOO, build_zoo_model, load_model
    from workbench.core.models.resize import load_pruned_weights
    from workbench.recipe import ModelSection, loads_recipe

    spec = spec.strip()
    shape = tuple(int(d) for d in input_shape)
    if not spec:
        raise WorkbenchError("distill.teacher is empty: set it to zoo:NAME, run:ID or a model file path")
    if spec.startswith("zoo:"):
        name = spec.removeprefix("zoo:")
        if name not in ZOO:
            raise WorkbenchError(f"distill.teacher = {spec!r}: unknown zoo model; choose one of: {', '.join(ZOO)}")
        module = build_zoo_model(name, num_classes, shape, width)
        if weights:
            load_pruned_weights(module, weights, shape)
        teacher = Teacher(module, f"zoo:{name}" + (f", width {width:g}" if width != 1.0 else ""), bool(weights), "zoo")
    elif spec.startswith("run:"):
        if store is None:
            raise WorkbenchError(f"distill.teacher = {spec!r}: run references need the run store")
        raw = spec.removeprefix("run:")
        if not raw.isdigit() or store.get_run(int(raw)) is None:
            raise WorkbenchError(f"distill.teacher = {spec!r}: no run with that ID in the store (see `workbench runs`)")
        run = store.get_run(int(raw))
        try:
            run_recipe = loads_recipe(run.recipe, f"run {raw}'s recipe")
        except RecipeError as exc:
            raise WorkbenchError(f"distill.teacher = {spec!r}: its stored recipe cannot be read ({exc})") from None
        data = (run.summary or {}).get("data") or {}
        run_classes = int(data.get("num_classes") or num_classes)
        run_shape = tuple(data.get("input_shape") or shape)
        if run_classes != num_classes:
            raise WorkbenchError(f"distill.teacher = {spec!r} was trained on {run_classes} classes but the student's "
                                 f"data has {num_classes}; teacher and student must predict the same classes")
        if run_shape != shape:
            raise WorkbenchError(f"distill.teacher = {spec!r} was trained on inputs {list(run_shape)} but the student's "
                                 f"data gives {list(shape)}; use the same data.image_size")
        section = run_recipe.model.model_copy(update={"weights": ""})
        if section.source == "onnx":
            raise WorkbenchError(f"distill.teacher = {spec!r} is an ONNX model; a teacher must be a PyTorch model")
        module = load_model(section, num_classes, shape).module
        assert module is not None
        load_pruned_weights(module, weights_of_run(store, spec), shape)
        teacher = Teacher(module, f"run {raw} ({run.name}: {run.model})", True, "run")
    else:
        path = Path(spec).expanduser()
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            raise WorkbenchError(f"distill.teacher = {spec!r}: an ONNX teacher cannot run inside PyTorch training; "
                                 "give a .py, .pt2 or TorchScript model")
        if suffix in (".safetensors", ".bin"):
            raise WorkbenchError(f"distill.teacher = {spec!r} is a weights file: set distill.teacher = 'zoo:NAME' "
                                 "and distill.teacher_weights to this file")
        if suffix not in _FILE_SOURCES:
            raise WorkbenchError(f"distill.teacher = {spec!r}: expected zoo:NAME, run:ID or a .py, .pt2 or "
                                 "TorchScript (.ts/.pt) file")
        source = _FILE_SOURCES[suffix]
        try:
            loaded = load_model(ModelSection(source=source, path=str(path)), num_classes, shape)
        except ModelLoadError as exc:
            raise WorkbenchError(f"distill.teacher: {exc}") from None
        module = loaded.module
        assert module is not None
        if weights:
            load_pruned_weights(module, weights, shape)
        teacher = Teacher(module, loaded.description, source != "python" or bool(weights), source)
    got = _num_classes_of(teacher.module, shape)
    if got != num_classes:
        raise WorkbenchError(f"distill.teacher {teacher.description} outputs {got} classes but the student's data has "
                             f"{num_classes}; teacher and student must predict the same classes")
    return teacher


# ------------------------------------------------------------------------------------------ the stage


