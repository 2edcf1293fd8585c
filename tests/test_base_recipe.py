"""The authors' ImageNet-LT base recipe as settings (config/ImageNet/ImageNet_LSC_Mixup.txt): SGD with its momentum
and Nesterov, a per-epoch warm-up then ×0.1 steps, and mixup; the defaults keep ours."""

import pytest
import torch

from harness.config import BaseConfig, ConfigError, load_config
from harness.engine.base_recipe import StepSchedule, make_mixup
from harness.engine.train import Trainer
from harness.models.base import SmallCNN


def authors_factor(epoch: int, milestones=(60, 80), warmup=5, gamma=0.1) -> float:
    """model/model_init.py:80-95, the authors' warmup_step lr_lambda, transcribed."""
    lr = gamma * gamma if epoch >= milestones[1] else gamma if epoch >= milestones[0] else 1
    return lr * float(1 + epoch) / warmup if epoch < warmup else lr


def epoch_rates(schedule: StepSchedule, opt, epochs: int, steps: int = 3) -> list[float]:
    rates = []
    for epoch in range(epochs):
        if schedule.scheduler.last_epoch > epoch:  # a resumed schedule: epochs it has done
            rates.append(None)
            continue
        rates.append(opt.param_groups[0]["lr"])
        for i in range(steps):
            schedule.after_step(epoch + (i + 1) / steps)
            assert opt.param_groups[0]["lr"] == pytest.approx(rates[-1]) or i == steps - 1  # changes at epoch ends
    return rates


def sgd(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def test_step_schedule_is_the_authors_warmup_step():
    opt = sgd()
    rates = epoch_rates(StepSchedule(opt, [60, 80], 0.1, 5), opt, 100)
    assert rates == pytest.approx([0.1 * authors_factor(e) for e in range(100)])
    assert rates[:6] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1]) and rates[99] == pytest.approx(0.001)


def test_a_trainer_with_the_step_schedule_resumes_to_the_same_rates():
    recipe = dict(schedule="step", milestones=[6, 8], warmup_epochs=3)
    first = trainer(**recipe)
    epoch_rates(first.schedule, first.opt, 4)
    resumed = trainer(**recipe)
    resumed.load_state(first.state())
    later = epoch_rates(resumed.schedule, resumed.opt, 10)[4:]  # epochs 4..9, the schedule already past 0..3
    assert later == pytest.approx([0.1 * authors_factor(e, (6, 8), 3) for e in range(4, 10)])


def trainer(**base) -> Trainer:
    cfg = BaseConfig(optimizer="sgd", lr=0.1, **base)
    return Trainer(SmallCNN(4, 1), cfg, 10, torch.zeros(4), 0, torch.device("cpu"))


def test_sgd_momentum_and_nesterov_are_settings_defaulting_to_ours():
    ours = trainer().opt.param_groups[0]
    assert (ours["momentum"], ours["nesterov"]) == (0.9, True)
    theirs = trainer(momentum=0.5, nesterov=False).opt.param_groups[0]
    assert (theirs["momentum"], theirs["nesterov"]) == (0.5, False)
    assert type(trainer().schedule).__name__ == "LRSchedule" and trainer().mixup is None
    assert isinstance(trainer(schedule="step", milestones=[6]).schedule, StepSchedule)


def test_mixup_mixes_images_and_their_one_hot_labels():
    torch.manual_seed(0)
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    mixed, targets = make_mixup(0.2, 4)(x, y)
    assert targets.shape == (6, 4) and torch.allclose(targets.sum(1), torch.ones(6))
    lam = float(targets[0, 0])  # sample 0 (class 0) mixed with its neighbour (class 1)
    assert torch.allclose(mixed[0], lam * x[0] + (1 - lam) * x[5], atol=1e-6) or torch.allclose(
        mixed[0], lam * x[0] + (1 - lam) * x[-1], atol=1e-6
    )
    assert make_mixup(0.0, 4) is None


def test_a_mixup_trainer_trains_on_soft_targets():
    t = trainer(mixup_alpha=0.2)
    from harness.data.base import TensorImages
    from harness.engine.train import Part

    images = TensorImages(torch.rand(16, 1, 16, 16), (torch.arange(16) % 4).numpy(), [str(i) for i in range(16)])
    seen = []
    forward = t.net.forward
    t.net.forward = lambda x: seen.append(x.clone()) or forward(x)
    loss = t.train_epoch([Part(images, torch.arange(16).numpy())], 0)
    assert loss == loss and seen  # finite
    assert not any(torch.equal(s, images.images[: len(s)]) for s in seen)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["base.milestones=[3]"], "base.milestones"),  # cosine reads no milestones
        (["base.warmup_epochs=2"], "base.warmup_epochs"),
        (["base.optimizer=adam", "base.momentum=0.5"], "base.momentum"),
    ],
)
def test_recipe_settings_nothing_reads_are_refused(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config("digits_lt_tiny", overrides)
    assert f": {key}: " in str(e.value)


def test_a_step_schedule_warms_up_in_epochs_and_milestones_ascend():
    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_config("digits_lt_tiny", ["base.schedule=step", "base.warmup_steps=10"])
    with pytest.raises(ConfigError, match="milestones must ascend"):
        load_config("digits_lt_tiny", ["base.schedule=step", "base.milestones=[8, 6]"])
    load_config("digits_lt_tiny", ["base.optimizer=sgd", "base.schedule=step", "base.milestones=[2]"])
