"""The learning-rate schedule (torch.optim.lr_scheduler: linear warm-up, cosine over the run) and the trainer's
resumable state (schedule, CPU and CUDA RNG)."""

import math

import numpy as np
import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR

from harness.config import OptimConfig
from harness.data.base import DataError, TensorImages
from harness.engine.train import Part, Trainer
from harness.models.base import HarnessModel

LR, WARMUP, EPOCHS = 0.1, 4, 3
SIZES = [10, 6, 14]  # images per epoch: a curriculum changes the epoch's size, so steps per epoch differ


def documented_lr(step: int, epoch: int, i: int, steps: int, cfg: OptimConfig) -> float:
    """The schedule as the harness documents it: warm-up from lr / warmup_steps to lr, linearly over the first
    warmup_steps steps, times a cosine from lr to 0 over training progress (epochs done / epochs)."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    progress = (epoch + i / steps) / cfg.epochs
    return cfg.lr * warm * (0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1.0)


def part(n: int) -> Part:
    g = torch.Generator().manual_seed(n)
    images = TensorImages(torch.rand(n, 1, 2, 2, generator=g), np.arange(n) % 3, [str(i) for i in range(n)])
    return Part(images, np.arange(n))


class Net(HarnessModel, torch.nn.Sequential):
    """A plain classifier with the trainer's capability defaults."""


def trainer(cfg: OptimConfig) -> Trainer:
    torch.manual_seed(0)
    model = Net(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4, 3))
    return Trainer(model, cfg, cfg.epochs, None, seed=0, device=torch.device("cpu"))


def record_lrs(t: Trainer) -> list[float]:
    seen = []
    t.opt.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    return seen


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
@pytest.mark.parametrize("warmup", [0, 1, WARMUP])
def test_lr_per_step_is_the_documented_schedule(schedule, warmup):
    cfg = OptimConfig(epochs=EPOCHS, batch_size=2, lr=LR, warmup_steps=warmup, schedule=schedule, optimizer="sgd")
    t = trainer(cfg)
    seen = record_lrs(t)
    expected, step = [], 0
    for epoch, n in enumerate(SIZES):
        t.train_epoch([part(n)], epoch)
        steps = math.ceil(n / cfg.batch_size)
        for i in range(steps):
            expected.append(documented_lr(step, epoch, i, steps, cfg))
            step += 1
    assert len(seen) == len(expected) == sum(math.ceil(n / 2) for n in SIZES)
    # the cosine advances in ticks of 1/1000 epoch: within lr · π / 2000 of the formula
    np.testing.assert_allclose(seen, expected, rtol=0, atol=LR * math.pi / 2000 / EPOCHS)
    assert seen[0] == pytest.approx(LR / max(1, warmup))


def test_the_schedule_is_torch_schedulers():
    t = trainer(OptimConfig(epochs=EPOCHS, lr=LR, warmup_steps=WARMUP))
    assert isinstance(t.schedule.warmup, LinearLR) and isinstance(t.schedule.cosine, CosineAnnealingLR)


def test_resume_continues_the_schedule_and_the_dropout_draws(tmp_path):
    """A run stopped after epoch 1 and resumed from its saved state (loaded with weights_only=True) steps with the
    same learning rates and ends with the same weights as one that ran through."""
    cfg = OptimConfig(epochs=EPOCHS, batch_size=2, lr=LR, warmup_steps=WARMUP, optimizer="sgd")
    through = trainer(cfg)
    lrs_through = record_lrs(through)
    for epoch, n in enumerate(SIZES):
        through.train_epoch([part(n)], epoch)

    first = trainer(cfg)
    lrs = record_lrs(first)
    first.train_epoch([part(SIZES[0])], 0)
    torch.save(first.state(), tmp_path / "state.pt")
    torch.manual_seed(123)  # a new process: the global RNG is elsewhere
    resumed = trainer(cfg)
    lrs_resumed = record_lrs(resumed)
    resumed.load_state(torch.load(tmp_path / "state.pt", weights_only=True))
    for epoch, n in list(enumerate(SIZES))[1:]:
        resumed.train_epoch([part(n)], epoch)
    assert lrs + lrs_resumed == lrs_through
    for k, v in through.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


def test_a_checkpoint_without_schedule_state_is_refused_in_one_line():
    t = trainer(OptimConfig(epochs=EPOCHS))
    state = t.state()
    del state["schedule"]
    with pytest.raises(DataError, match="no learning-rate schedule state"):
        t.load_state(state)


def test_cuda_rng_states_are_saved_and_restored(monkeypatch):
    """On a GPU, dropout draws from the CUDA RNG: the state holds every device's and loading puts them back."""
    cuda_states = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in cuda_states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(list(states)))
    t = trainer(OptimConfig(epochs=EPOCHS))
    state = t.state()
    assert [torch.equal(a, b) for a, b in zip(state["cuda_rng"], cuda_states)] == [True, True]
    t.load_state(state)
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], cuda_states))


def test_without_cuda_no_cuda_rng_is_touched(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("set_rng_state_all called"))
    t = trainer(OptimConfig(epochs=EPOCHS))
    state = t.state()
    assert state["cuda_rng"] == []
    t.load_state(state)
