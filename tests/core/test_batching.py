"""The max-batch finder leaves the caller's model exactly as it found it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.core.batching import _find_max_batch, find_max_batch
from workbench.core.events import CancelToken, Reporter
from workbench.core.precision import resolve_precision
from workbench.errors import Cancelled
from workbench.recipe import PrecisionSection

SHAPE = (3, 16, 16)
BUDGET = 64 * 2**20


def _pretrained_like() -> nn.Module:
    """A small CNN with BatchNorm whose statistics are not the defaults (as after training)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.linspace(-1.0, 1.0, 8))
        bn.running_var.copy_(torch.linspace(0.5, 2.0, 8))
        bn.num_batches_tracked.fill_(123)
    return model


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool], dict[str, torch.Tensor | None]]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    return state, modes, grads


def _assert_same(model: nn.Module, before: tuple) -> None:  # type: ignore[type-arg]
    state, modes, grads = before
    now = model.state_dict()
    assert now.keys() == state.keys()
    changed = [k for k in state if not torch.equal(now[k], state[k])]
    assert not changed, f"state changed by the search: {changed}"
    assert [m.training for m in model.modules()] == modes
    for name, p in model.named_parameters():
        if grads[name] is None:
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.equal(p.grad, grads[name]), name


def _plan():  # type: ignore[no-untyped-def]
    return resolve_precision(PrecisionSection(device="cpu"))


def test_the_unguarded_search_really_moves_batchnorm_statistics() -> None:
    """Proves the next test can fail: the search itself trains BatchNorm on its probe input."""
    model = _pretrained_like().eval()
    before = _snapshot(model)
    _find_max_batch(model, SHAPE, _plan(), budget_bytes=BUDGET, limit=64)
    assert model.training  # left in train mode
    assert not torch.equal(model[1].running_mean, before[0]["1.running_mean"])


@pytest.mark.parametrize("mode", ["eval", "mixed"])
def test_find_max_batch_leaves_state_dict_training_flags_and_grads_unchanged(mode: str) -> None:
    model = _pretrained_like()
    if mode == "eval":
        model.eval()
    else:  # training, with a frozen BatchNorm and an existing gradient
        model.train()
        model[1].eval()
        model[6].weight.grad = torch.full_like(model[6].weight, 0.5)
    before = _snapshot(model)
    result = find_max_batch(model, SHAPE, _plan(), budget_bytes=BUDGET, limit=64, start=2)
    assert result.max_batch >= 2 and len(result.tried) >= 2  # the search did run the model
    _assert_same(model, before)


def test_state_is_restored_when_the_search_is_cancelled() -> None:
    model = _pretrained_like().eval()
    before = _snapshot(model)
    cancel = CancelToken()

    class CancelAfterFirstTry(Reporter):
        def log(self, message: str, level: str = "info") -> None:
            if "max-batch: batch" in message:
                cancel.cancel()

    with pytest.raises(Cancelled):
        find_max_batch(model, SHAPE, _plan(), budget_bytes=BUDGET, limit=64, reporter=CancelAfterFirstTry(),
                       cancel=cancel)
    _assert_same(model, before)


def test_a_copy_of_the_model_is_not_needed_for_the_search() -> None:
    """The finder works on the model it was given (no deep copy taking memory from the search)."""
    model = _pretrained_like().eval()
    seen: list[int] = []
    hook = model[0].register_forward_hook(lambda m, i, o: seen.append(id(m)))
    try:
        find_max_batch(model, SHAPE, _plan(), budget_bytes=BUDGET, limit=8)
    finally:
        hook.remove()
    assert seen and set(seen) == {id(model[0])}
