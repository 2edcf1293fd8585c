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


def test_killed_base_training_resumes_to_the_same_weights(tiny_cfg, tiny_prepared, tmp_path, monkeypatch):
    from harness.engine.train import Trainer

    full = tiny_prepared.base_state  # trained without a break
    original, calls = Trainer.train_epoch, []

    def dies_at_third_epoch(self, parts, epoch, max_steps=None):
        calls.append(epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, parts, epoch, max_steps)

    monkeypatch.setattr(Trainer, "train_epoch", dies_at_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        base_weights(tiny_cfg, tmp_path / "killed")
    assert list((tmp_path / "killed" / "cache" / "base").glob("*/checkpoint.pt"))
    calls.clear()
    resumed = base_weights(tiny_cfg, tmp_path / "killed")
    assert calls == [2]  # only the epoch the kill interrupted
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert not list((tmp_path / "killed" / "cache" / "base").glob("*/checkpoint.pt"))
