"""The ``[distill]`` stage: teacher (loaded or trained) → student alone (control) → distilled student.

Distillation *is* how the student is trained, so the stage owns training (``Stage.owns_training``):
the pipeline skips its plain ``[train]`` step. The honest comparison is then ``baseline`` = the
teacher (the big model the user would otherwise deploy), ``final`` = the distilled student and, with
``control = true``, the student alone (same init, seed, epochs, data, plain CE), with
``gap_closed = (distilled − alone) / (teacher − alone)``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from workbench.core.kd import TeacherLogits, make_kd_loss_fn
from workbench.core.pipeline import RunContext, Stage, split_loader
from workbench.core.precision import PrecisionPlan, prepare_module, unwrap
from workbench.errors import WorkbenchError
from workbench.techniques.distill.teacher import load_teacher


def gap_closed(teacher_acc: float, alone_acc: float, distilled_acc: float) -> float | None:
    """Share of the teacher–student accuracy gap that distillation closed; None when there is no gap."""
    gap = teacher_acc - alone_acc
    if gap <= 1e-9:
        return None
    return (distilled_acc - alone_acc) / gap


def _plain(plan: PrecisionPlan) -> PrecisionPlan:
    return dataclasses.replace(plan, compile=False)


def run_distill_stage(ctx: RunContext) -> dict[str, Any]:
    """The ``[distill]`` stage: teacher (loaded or trained) → student alone (control) → distilled student.

    Sets ``ctx.baseline`` to the teacher's measurement and ``ctx.module`` to the distilled student.
    """
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


STAGE = Stage("distill", lambda r: r.distill is not None, run_distill_stage, owns_training=True)
