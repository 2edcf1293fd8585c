"""The base model (harness/phases/base_model.py): its weights do not depend on the global RNG before it, and a
killed training resumes from its checkpoint to the same weights."""

import pytest
import torch

from harness.phases.base_model import train_base


def base_weights(cfg, workdir):
    from harness.data import load_dataset

    data = load_dataset(cfg)
    state, _ = train_base(cfg, data, workdir / "cache", torch.device("cpu"))
    return state


def test_base_model_does_not_depend_on_the_global_rng_before_it(tiny_cfg, tiny_prepared, tmp_path):
    """The warm workdir's base model was trained at whatever state the session's RNG had then."""
    a = tiny_prepared.base_state
    torch.manual_seed(456)
    b = base_weights(tiny_cfg, tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def dies_at_third_epoch(monkeypatch) -> list[int]:
    """Training raises KeyboardInterrupt (a kill) as its third epoch starts; returns the epochs started."""
    from harness.engine.train import Trainer

    original, calls = Trainer.train_epoch, []

    def dying(self, parts, epoch, *args, **kwargs):
        calls.append(epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, parts, epoch, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", dying)
    return calls


def test_killed_base_training_resumes_to_the_same_weights(tiny_cfg, tiny_prepared, tmp_path, monkeypatch):
    full = tiny_prepared.base_state  # trained without a break
    calls = dies_at_third_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        base_weights(tiny_cfg, tmp_path / "killed")
    assert list((tmp_path / "killed" / "cache" / "base").glob("*/checkpoint.pt"))
    calls.clear()
    resumed = base_weights(tiny_cfg, tmp_path / "killed")
    assert calls == [2]  # only the epoch the kill interrupted
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert not list((tmp_path / "killed" / "cache" / "base").glob("*/checkpoint.pt"))


AUTHORS_RECIPE = [  # the shape of ImageNet_LSC_Mixup.txt at the tiny experiment's three epochs
    "base.optimizer=sgd",
    "base.lr=0.05",
    "base.momentum=0.9",
    "base.schedule=step",
    "base.warmup_epochs=2",
    "base.milestones=[2]",
    "base.mixup_alpha=0.2",
]


def test_the_authors_recipe_trains_a_base_of_its_own_and_resumes_to_the_same_weights(
    tiny_prepared, tmp_path, monkeypatch
):
    """The step schedule's state and mixup's draws (the global RNG) are in the checkpoint: a base killed after its
    second epoch resumes to the weights of one trained through; the recipe keys a base model of its own."""
    from harness.config import load_config
    from harness.config.keys import base_key

    cfg = load_config("digits_lt_tiny", AUTHORS_RECIPE)
    assert base_key(cfg) != base_key(load_config("digits_lt_tiny"))
    full = base_weights(cfg, tmp_path / "full")
    assert any(not torch.equal(full[k], tiny_prepared.base_state[k]) for k in full)
    with monkeypatch.context() as m:
        dies_at_third_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            base_weights(cfg, tmp_path / "killed")
    resumed = base_weights(cfg, tmp_path / "killed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
