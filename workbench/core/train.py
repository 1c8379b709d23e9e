"""Training and evaluation loops that measure themselves honestly.

Throughput counts only steady-state steps (the first ``WARMUP_STEPS`` of the run are excluded,
they include allocator warm-up, worker start-up and compilation). Each step's time is split into
waiting for data and computing, which is what the loader-bound verdict is built on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from workbench.core.events import CancelToken, Reporter
from workbench.core.precision import PrecisionPlan, eval_mode, make_scaler
from workbench.recipe import BatchingSection, TrainSection

WARMUP_STEPS = 5

#: loss_fn(logits, targets, inputs) -> scalar loss. Distillation plugs in here.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainResult:
    epochs: int = 0
    steps: int = 0
    samples: int = 0
    train_samples_per_s: float | None = None
    data_wait_s: float = 0.0
    compute_s: float = 0.0
    wall_s: float = 0.0
    final_loss: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def data_wait_fraction(self) -> float | None:
        total = self.data_wait_s + self.compute_s
        return self.data_wait_s / total if total > 0 else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_wait_fraction"] = self.data_wait_fraction
        return d


def make_optimizer(module: nn.Module, cfg: TrainSection, lr: float | None = None) -> torch.optim.Optimizer:
    lr = cfg.lr if lr is None else lr
    params = [p for p in module.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainSection, total_steps: int, lr: float
) -> torch.optim.lr_scheduler.LRScheduler | None:
    total_steps = max(1, total_steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, total_steps // 3), gamma=0.1)
    if cfg.schedule == "onecycle":
        # torch divides by (pct_start * total_steps - 1): with 4 steps (a small split, one epoch) that is
        # 0.25 * 4 - 1 = 0. Warm up a little longer there instead of crashing.
        pct_start = 0.25 if abs(0.25 * total_steps - 1.0) > 1e-9 else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=pct_start)
    return None


def train(
    module: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    cfg: TrainSection,
    batching: BatchingSection,
    plan: PrecisionPlan,
    reporter: Reporter,
    cancel: CancelToken,
    *,
    stage: str = "train",
    epochs: int | None = None,
    lr: float | None = None,
    loss_fn: LossFn | None = None,
) -> TrainResult:
    """Train ``module`` in place. Reports per-step metrics and per-epoch validation accuracy.

    ``val_loader`` is the validation split (never the eval split: the per-epoch curve is what
    epochs and learning rates are tuned against, and the eval split must stay unseen for reporting).
    """
    epochs = cfg.epochs if epochs is None else epochs
    lr = cfg.lr if lr is None else lr
    torch.manual_seed(cfg.seed)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    loss_fn = loss_fn or (lambda logits, y, _x: criterion(logits, y))
    accum = batching.grad_accum_steps
    batches_per_epoch = len(train_loader)
    opt_steps_per_epoch = max(1, math.ceil(batches_per_epoch / accum))
    total_opt_steps = opt_steps_per_epoch * epochs
    if cfg.max_steps:
        total_opt_steps = min(total_opt_steps, cfg.max_steps)
    opt = make_optimizer(module, cfg, lr)
    sched = make_scheduler(opt, cfg, total_opt_steps, lr)
    scaler = make_scaler(plan)
    result = TrainResult()
    total_batches = min(batches_per_epoch * epochs, total_opt_steps * accum)
    reporter.stage_started(stage, total_batches)

    step = 0  # optimizer steps
    batch_index = 0
    steady_samples = 0
    steady_time = 0.0
    window_samples, window_time, window_loss, window_n = 0, 0.0, 0.0, 0
    t_start = time.perf_counter()
    done = False
    for epoch in range(epochs):
        module.train()
        set_epoch = getattr(getattr(train_loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):  # a DistributedSampler reshuffles its shard per epoch
            set_epoch(epoch)
        epoch_loss, epoch_n = 0.0, 0
        opt.zero_grad(set_to_none=True)
        t_wait = time.perf_counter()
        for i, (x, y) in enumerate(train_loader):
            cancel.raise_if_cancelled()
            t_compute = time.perf_counter()
            wait = t_compute - t_wait
            x, y = plan.to_input(x), y.to(plan.device, non_blocking=True)
            with plan.autocast():
                logits = module(x)
                loss = loss_fn(logits, y, x)
            scaler.scale(loss / accum).backward()
            last_of_epoch = i + 1 == batches_per_epoch
            if (i + 1) % accum == 0 or last_of_epoch:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                if sched is not None and step < total_opt_steps:
                    sched.step()
                step += 1
            loss_value = float(loss.detach())  # syncs the device, so the timing below is honest
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch + 1}, step {step}: loss is {loss_value}; "
                    "lower train.lr or use bf16 instead of fp16"
                )
            t_end = time.perf_counter()
            compute = t_end - t_compute
            n = int(y.shape[0])
            batch_index += 1
            result.samples += n
            epoch_loss += loss_value * n
            epoch_n += n
            if batch_index > WARMUP_STEPS:
                steady_samples += n
                steady_time += wait + compute
                result.data_wait_s += wait
                result.compute_s += compute
            window_samples += n
            window_time += wait + compute
            window_loss += loss_value
            window_n += 1
            if batch_index % cfg.log_every == 0 or last_of_epoch:
                reporter.metrics(stage, batch_index, {
                    "loss": window_loss / window_n,
                    "samples_per_s": window_samples / window_time if window_time > 0 else 0.0,
                    "lr": opt.param_groups[0]["lr"],
                    "epoch": epoch + (i + 1) / batches_per_epoch,
                    "data_wait_fraction": result.data_wait_s / max(1e-9, result.data_wait_s + result.compute_s),
                })
                window_samples, window_time, window_loss, window_n = 0, 0.0, 0.0, 0
                reporter.progress(batch_index, total_batches, f"{stage}: epoch {epoch + 1}/{epochs}")
            if cfg.max_steps and step >= cfg.max_steps:
                done = True
                break
            t_wait = time.perf_counter()
        record: dict[str, float] = {"epoch": epoch + 1, "train_loss": epoch_loss / max(1, epoch_n)}
        if val_loader is not None:
            ev = evaluate(module, val_loader, plan, cancel)
            record.update(val_loss=ev["loss"], val_accuracy=ev["accuracy"])
            reporter.metrics(stage, batch_index, {"val_accuracy": ev["accuracy"], "val_loss": ev["loss"]})
            reporter.log(f"{stage}: epoch {epoch + 1}/{epochs}: train loss {record['train_loss']:.4f}, "
                         f"val accuracy {ev['accuracy']:.4f}")
        result.history.append(record)
        result.epochs = epoch + 1
        if done:
            break
    result.steps = step
    result.wall_s = time.perf_counter() - t_start
    result.final_loss = result.history[-1]["train_loss"] if result.history else None
    if steady_time > 0:
        result.train_samples_per_s = steady_samples / steady_time
    elif result.wall_s > 0:  # fewer steps than the warm-up: report what we have, it is all we measured
        result.train_samples_per_s = result.samples / result.wall_s
    reporter.stage_finished(stage, result.to_dict())
    return result


@torch.no_grad()
def evaluate(
    module: nn.Module, loader: DataLoader, plan: PrecisionPlan, cancel: CancelToken | None = None
) -> dict[str, float]:
    """Accuracy and mean cross-entropy over the whole loader, in eval mode."""
    criterion = nn.CrossEntropyLoss(reduction="sum")
    correct, total, loss_sum = 0, 0, 0.0
    with eval_mode(module):
        for x, y in loader:
            if cancel is not None:
                cancel.raise_if_cancelled()
            x, y = plan.to_input(x), y.to(plan.device)
            with plan.autocast():
                logits = module(x)
            loss_sum += float(criterion(logits.float(), y))
            correct += int((logits.argmax(dim=1) == y).sum())
            total += int(y.shape[0])
    return {"accuracy": correct / max(1, total), "loss": loss_sum / max(1, total), "samples": float(total)}
