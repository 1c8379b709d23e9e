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

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.core.kd import TeacherLogits, make_kd_loss_fn, set_eval
from workbench.core.pipeline import RunContext, Stage, register_stage, weights_of_run
from workbench.core.precision import PrecisionPlan, prepare_module, unwrap
from workbench.errors import ModelLoadError, RecipeError, WorkbenchError

#: Suffix → model source for ``distill.teacher = PATH``.
_FILE_SOURCES = {".py": "python", ".pt2": "export", ".ts": "torchscript", ".jit": "torchscript",
                 ".torchscript": "torchscript", ".pt": "torchscript", ".pth": "torchscript", ".zip": "torchscript"}


def gap_closed(teacher_acc: float, alone_acc: float, distilled_acc: float) -> float | None:
    """Share of the teacher–student accuracy gap that distillation closed; None when there is no gap."""
    gap = teacher_acc - alone_acc
    if gap <= 1e-9:
        return None
    return (distilled_acc - alone_acc) / gap


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


def _plain(plan: PrecisionPlan) -> PrecisionPlan:
    return dataclasses.replace(plan, compile=False)


def run_distill_stage(ctx: RunContext) -> dict[str, Any]:
    """The ``[distill]`` stage: teacher (loaded or trained) → student alone (control) → distilled student.

    Sets ``ctx.baseline`` to the teacher's measurement and ``ctx.module`` to the distilled student.
    """
    from workbench.core.pipeline import split_loader
    from workbench.core.train import train

    cfg = ctx.recipe.distill
    assert cfg is not None
    recipe, rep = ctx.recipe, ctx.reporter
    if ctx.module is None or not ctx.loaded.trainable:
        raise WorkbenchError(f"[distill] trains the student: model.source = {recipe.model.source!r} cannot be trained")
    if recipe.train.epochs == 0:
        raise WorkbenchError("[distill] trains the student with the teacher: set train.epochs > 0")
    teacher = load_teacher(cfg.teacher, cfg.teacher_weights, num_classes=ctx.data.num_classes,
                           input_shape=ctx.input_shape, store=ctx.store, width=cfg.teacher_width)
    rep.log(f"distill: teacher {teacher.description}")
    tmodule = prepare_module(teacher.module, _plain(ctx.plan))
    teacher_train = None
    if not teacher.has_weights:
        if cfg.teacher_epochs == 0:
            raise WorkbenchError(f"distill.teacher {teacher.description} has no trained weights: set "
                                 "distill.teacher_weights, use run:ID, or set distill.teacher_epochs > 0 to train it first")
        rep.log(f"distill: training the teacher for {cfg.teacher_epochs} epoch(s) on the same data")
        teacher_train = train(tmodule, split_loader(ctx, train=True), ctx.val_loader, recipe.train, recipe.batching,
                              _plain(ctx.plan), rep, ctx.cancel, stage="distill:teacher", epochs=cfg.teacher_epochs)
    teacher_m = ctx.measure("teacher", module=tmodule,
                            train_samples_per_s=teacher_train.train_samples_per_s if teacher_train else None)
    ctx.baseline = teacher_m  # the big model is what the student is compared against
    ctx.add_checkpoint("baseline", f"teacher, torch eager {_plain(ctx.plan).label}", module=tmodule)

    student = unwrap(ctx.module)
    alone_m = None
    alone_train = None
    if cfg.control:
        alone = prepare_module(copy.deepcopy(student), ctx.plan)  # same initial weights as the distilled one
        alone_train = train(alone, split_loader(ctx, train=True), ctx.val_loader, recipe.train, recipe.batching, ctx.plan,
                            rep, ctx.cancel, stage="distill:student_alone")
        alone_m = ctx.measure("student_alone", module=alone, train_samples_per_s=alone_train.train_samples_per_s)
        del alone
    use_cache = cfg.cache_teacher_logits and not recipe.data.augment
    if cfg.cache_teacher_logits and recipe.data.augment:
        rep.log("distill: teacher logits computed on the fly (data.augment = true changes every input each epoch, "
                "so cached logits would be wrong)")
    logits = TeacherLogits(tmodule, cache=use_cache)
    loss_fn = make_kd_loss_fn(logits, cfg.temperature, cfg.alpha, recipe.train.label_smoothing)
    ctx.train_result = train(ctx.module, split_loader(ctx, train=True), ctx.val_loader, recipe.train, recipe.batching,
                             ctx.plan, rep, ctx.cancel, stage="distill:student", loss_fn=loss_fn)
    ctx.summary["train"] = ctx.train_result.to_dict()
    after = ctx.measure("distilled", module=ctx.module, train_samples_per_s=ctx.train_result.train_samples_per_s)
    ctx.add_checkpoint("distill", f"student, torch eager {ctx.plan.label}", module=ctx.module)

    record: dict[str, Any] = {
        "name": "distill", "teacher_spec": cfg.teacher, "teacher_description": teacher.description,
        "teacher_trained_here": teacher_train is not None, "temperature": cfg.temperature, "alpha": cfg.alpha,
        "before": teacher_m, "teacher": teacher_m, "student_alone": alone_m, "after": after,
        "teacher_cache": logits.stats(),
    }
    if teacher_train is not None:
        record["teacher_train"] = teacher_train.to_dict()
    if alone_train is not None:
        record["student_alone_train"] = alone_train.to_dict()
    note = (f"baseline is the teacher ({teacher_m['accuracy']:.2%}, {teacher_m['params']:,} params); final is the "
            f"distilled student ({after['accuracy']:.2%}, {after['params']:,} params)")
    if alone_m is not None:
        gc = gap_closed(teacher_m["accuracy"], alone_m["accuracy"], after["accuracy"])
        record["gap_closed"] = gc
        note += f"; student alone {alone_m['accuracy']:.2%}; " + (
            f"gap closed {gc:.0%}" if gc is not None else "no gap to close (the student alone matches the teacher)")
    record["note"] = note
    rep.log(f"distill: {note}")
    return record


register_stage(Stage("distill", lambda r: r.distill is not None, run_distill_stage, owns_training=True,
                     order=20))
