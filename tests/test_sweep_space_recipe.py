"""The sweep space leaves out what the experiment's recipe fixes: with ``train.tail_share`` (ImageNet-LT) a trial must
not set ``train.synthetic_scale``, which the config refuses beside a tail share."""

import optuna

from harness.config import load_config, validate
from harness.sweep.space import paper_params, suggest, trial_config


def test_a_tail_share_experiment_searches_no_synthetic_scale():
    cfg = load_config("imagenet_lt_discl_tiny")
    assert cfg.train.tail_share is not None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        params = suggest(trial, cfg)
        assert "synthetic_scale" not in trial.params
        tcfg, method = trial_config(cfg, params)
        assert tcfg.train.synthetic_scale is None
        validate(tcfg, "trial", [method])  # the config check accepts the trial's config
    assert "synthetic_scale" not in paper_params(cfg)
