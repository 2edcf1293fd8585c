"""Settings that do nothing for the chosen components are refused at load (one line naming the setting, before
any data is read); every shipped experiment is walked against the table of (setting, applies-when) rules; the
sweep space leaves out what the model ignores."""

import optuna
import pytest

from harness.config import Config, ConfigError, list_experiments, load_config
from harness.config.applicability import RULES, inapplicable, value
from harness.core import registry


@pytest.mark.parametrize("experiment", list_experiments())
def test_no_shipped_experiment_sets_what_nothing_reads(experiment):
    assert inapplicable(load_config(experiment)) == []


def test_every_rule_names_a_setting():
    for rule in RULES:
        value(Config(), rule.key)  # AttributeError on a key that does not exist


@pytest.mark.parametrize(
    "experiment, overrides, key",
    [
        ("iwildcam_discl_tiny", ["train.loss=balanced_softmax"], "train.loss"),  # FLYP trains with its own loss
        ("iwildcam_discl_tiny", ["base.loss=balanced_softmax"], "base.loss"),
        ("digits_lt_tiny", ["hard.threshold=0.3"], "hard.threshold"),  # few_shot reads no threshold
        ("digits_lt_tiny", ["hard.k=5"], "hard.k"),
        ("digits_lt_tiny", ["spectrum.scheduler=euler"], "spectrum.scheduler"),  # tiny_ddpm always runs DDIM
        ("digits_lt_tiny", ["tracking.log_model=never", "tracking.max_model_mb=5"], "tracking.max_model_mb"),
        (
            "digits_lt_tiny",
            ["tracking.system_metrics=false", "tracking.system_metrics_interval_s=3"],
            "tracking.system_metrics_interval_s",
        ),
        ("digits_lt_tiny", ["sweep.pruner=hyperband", "sweep.pruner_startup_trials=2"], "sweep.pruner_startup_trials"),
    ],
)
def test_a_setting_nothing_reads_is_refused(experiment, overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(experiment, overrides)
    assert f": {key}: " in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "experiment, overrides",
    [
        ("digits_lt_tiny", ["train.loss=balanced_softmax", "base.loss=balanced_softmax"]),
        ("digits_lt_tiny", ["hard.rule=low_prob", "hard.threshold=0.3"]),
        ("digits_lt_tiny", ["hard.rule=k_hardest", "hard.k=5"]),
        ("imagenet_lt_discl_tiny", ["spectrum.scheduler=euler"]),  # sd_img2img takes a scheduler
        ("digits_lt_tiny", ["tracking.max_model_mb=5"]),
    ],
)
def test_the_same_setting_is_accepted_where_it_applies(experiment, overrides):
    load_config(experiment, overrides)


def test_capabilities_are_declared_on_the_classes():
    """A generator declares whether it takes a scheduler (a model's flags: tests/test_capabilities.py); the rules
    read these flags, so FLYP's own loss and the small CNN's cross-entropy must be told apart."""
    for name in registry.list_generators():
        assert isinstance(registry.get_generator(name).takes_scheduler, bool), name
    assert registry.get_model("clip_flyp").own_loss and not registry.get_model("small_cnn").own_loss


@pytest.mark.parametrize("experiment, searched", [("iwildcam_discl_tiny", False), ("digits_lt_tiny", True)])
def test_the_sweep_space_leaves_out_the_loss_the_model_ignores(experiment, searched):
    from harness.sweep.space import paper_params, suggest

    cfg = load_config(experiment)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = suggest(trial, cfg)
    assert ("loss" in trial.params) == searched and ("loss" in paper_params(cfg)) == searched
    assert params["loss"] == (trial.params["loss"] if searched else cfg.train.loss)


def test_turning_the_pruner_off_is_one_override():
    """`--set sweep.pruner=none` on an experiment that tunes its median pruner (digits_lt_tiny inherits
    digits_lt_discl's warm-up 2) loads, the pruner settings kept."""
    cfg = load_config("digits_lt_tiny", ["sweep.pruner=none"])
    assert cfg.sweep.pruner == "none" and cfg.sweep.pruner_warmup_epochs == 2
