"""Distillation: the KD loss matches a hand computation; teacher loading and its errors; the stage
reports teacher (baseline), student alone (control) and distilled student (final)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_recipe
from workbench.core.kd import TeacherLogits, kd_loss
from workbench.core.models import build_zoo_model, save_weights
from workbench.core.store import RunStore
from workbench.errors import WorkbenchError
from workbench.recipe import DistillSection, PruneSection
from workbench.techniques import run_recipe
from workbench.techniques.distill.stage import gap_closed
from workbench.techniques.distill.teacher import load_teacher

SHAPE = (3, 32, 32)


def _softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_hand_computation() -> None:
    s = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
    t = [[3.0, 2.0, 1.0], [1.0, 0.0, -2.0]]
    y = [2, 0]
    temp, alpha = 2.0, 0.3
    kl = 0.0
    for srow, trow in zip(s, t, strict=True):
        ps, pt = _softmax(srow, temp), _softmax(trow, temp)
        kl += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))  # KL(teacher || student)
    kl /= len(s)
    ce = sum(-math.log(_softmax(srow, 1.0)[label]) for srow, label in zip(s, y, strict=True)) / len(s)
    expected = alpha * temp * temp * kl + (1 - alpha) * ce
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temp, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the edges: alpha = 0 is plain cross-entropy; identical logits leave only the hard term
    assert kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temp, 0.0).item() == pytest.approx(ce, rel=1e-6)
    assert kd_loss(torch.tensor(s), torch.tensor(s), torch.tensor(y), temp, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_gradient_flows_to_student_only() -> None:
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    kd_loss(s, t, torch.tensor([0, 1, 2, 3]), 4.0, 0.7).backward()
    assert s.grad is not None and t.grad is None


def test_teacher_logits_cache_is_keyed_by_content() -> None:
    torch.manual_seed(0)
    teacher = build_zoo_model("small_cnn", 10, SHAPE, width=0.5)
    cached = TeacherLogits(teacher, cache=True)
    plain = TeacherLogits(teacher, cache=False)
    x = torch.randn(6, *SHAPE)
    first = cached(x)
    again = cached(x[[5, 0, 3]])  # other order and subset: same rows, from the cache
    torch.testing.assert_close(again, first[[5, 0, 3]])
    torch.testing.assert_close(first, plain(x), rtol=1e-4, atol=1e-5)
    mixed = cached(torch.cat([x[:2], torch.randn(2, *SHAPE)]))  # two hits, two misses
    torch.testing.assert_close(mixed[:2], first[:2])
    assert cached.stats()["hits"] == 5 and cached.stats()["misses"] == 8
    assert not teacher.training


def test_gap_closed() -> None:
    assert gap_closed(0.9, 0.7, 0.8) == pytest.approx(0.5)
    assert gap_closed(0.7, 0.7, 0.8) is None


def test_teacher_errors_are_one_line(tmp_path: Path) -> None:
    with RunStore() as store, pytest.raises(WorkbenchError, match=r"'run:999': no run with that ID"):
        load_teacher("run:999", "", num_classes=10, input_shape=SHAPE, store=store)
    with pytest.raises(WorkbenchError, match="unknown zoo model"):
        load_teacher("zoo:vgg", "", num_classes=10, input_shape=SHAPE)
    five = tmp_path / "five.safetensors"
    save_weights(build_zoo_model("small_cnn", 5, SHAPE), five)
    with pytest.raises(WorkbenchError, match="outputs 5 classes but the student's data has 10"):
        load_teacher("zoo:small_cnn", str(five), num_classes=10, input_shape=SHAPE)
    with pytest.raises(WorkbenchError, match="is a weights file"):
        load_teacher(str(five), "", num_classes=10, input_shape=SHAPE)
    with pytest.raises(WorkbenchError, match="empty"):
        load_teacher("", "", num_classes=10, input_shape=SHAPE)


def test_distill_stage_teacher_is_baseline_student_alone_is_control() -> None:
    r = tiny_recipe("distill", epochs=2, samples_per_class=20)
    r.data.augment = False  # deterministic inputs: the teacher-logit cache applies
    r.model.zoo = "small_cnn"
    r.model.width = 0.25
    r.bench.enabled = False
    r.distill = DistillSection(teacher="zoo:small_cnn", teacher_epochs=1, control=True)
    with RunStore() as store:
        outcome = run_recipe(r, store=store)
    assert outcome.status == "completed", outcome.error
    s = outcome.summary
    stage = s["stages"][0]
    assert stage["name"] == "distill"
    assert s["baseline"]["label"] == "teacher" and s["baseline"] == stage["teacher"] == stage["before"]
    assert s["final"]["label"] == "distilled" and s["final"] == stage["after"]
    assert stage["student_alone"]["label"] == "student_alone"
    assert stage["teacher"]["params"] > stage["after"]["params"] == stage["student_alone"]["params"]
    assert "gap_closed" in stage and "student alone" in stage["note"]
    assert stage["teacher_cache"]["enabled"] and stage["teacher_cache"]["hits"] > 0  # epoch 2 reuses epoch 1
    assert s["train"]["epochs"] == 2  # the pipeline's own training was skipped; the stage trained the student


def test_distill_without_teacher_weights_or_epochs_fails_clearly() -> None:
    r = tiny_recipe("distill-bad", epochs=1, samples_per_class=20)
    r.bench.enabled = False
    r.distill = DistillSection(teacher="zoo:resnet", teacher_epochs=0)
    with RunStore() as store:
        outcome = run_recipe(r, store=store)
    assert outcome.status == "failed"
    assert "has no trained weights" in outcome.error and "teacher_epochs" in outcome.error


def test_teacher_from_a_pruned_run_is_rebuilt_from_its_weights() -> None:
    r = tiny_recipe("pruned-teacher", epochs=0, samples_per_class=20)
    r.bench.enabled = False
    r.prune = PruneSection(method="structured", ratio=0.5, finetune_epochs=0)
    with RunStore() as store:
        outcome = run_recipe(r, store=store)
        assert outcome.status == "completed", outcome.error
        teacher = load_teacher(f"run:{outcome.run_id}", "", num_classes=10, input_shape=SHAPE, store=store)
    assert sum(p.numel() for p in teacher.module.parameters()) == outcome.summary["final"]["params"]
    assert teacher.has_weights and teacher.kind == "run"
