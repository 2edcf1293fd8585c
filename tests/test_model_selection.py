"""Model selection names a metric the dataset logs on validation, checked at config load."""

import pytest

from harness.config import ConfigError, load_config


@pytest.mark.parametrize(
    "experiment, override, closest",
    [
        ("iwildcam_discl_tiny", "train.select_on=val/acc_few", None),  # a long-tail metric iWildCam does not log
        ("iwildcam_discl_tiny", "train.select_on=val/f1macro", "val/f1_macro"),
        ("digits_lt_tiny", "sweep.objective=val/acc_fwe", "val/acc_few"),
        ("digits_lt_tiny", "sweep.multi_objective=[val/acc_few, val/acc_mny]", "val/acc_many"),
        ("iwildcam_discl_tiny", "sweep.objective=val/acc_few", None),
    ],
)
def test_unknown_selection_and_sweep_metrics_are_refused(experiment, override, closest):
    with pytest.raises(ConfigError) as error:
        load_config(experiment, [override])
    message = str(error.value)
    assert "\n" not in message and "is not a validation metric of dataset" in message
    key = override.split("=")[0]
    assert key in message
    if closest:
        assert f"did you mean {closest}" in message


@pytest.mark.parametrize(
    "experiment, overrides",
    [
        ("imagenet_lt_discl_tiny", ["train.select_on=val/acc_few"]),
        ("iwildcam_discl_tiny", ["train.select_on=val/acc", "sweep.objective=val/f1_macro"]),
        ("digits_lt_tiny", ["sweep.multi_objective=[val/acc_few, val/acc_many]"]),
    ],
)
def test_declared_metrics_are_accepted(experiment, overrides):
    """Each metric named for selection or as an objective is one the dataset declares it logs on validation."""
    from harness.core.registry import validation_metrics

    cfg = load_config(experiment, overrides)
    named = [cfg.train.select_on, *filter(None, [cfg.sweep.objective]), *(cfg.sweep.multi_objective or [])]
    given = [o.split("=", 1)[1].strip("[]").split(", ") for o in overrides]
    assert {m for g in given for m in g} <= set(named)  # the overrides took effect
    assert set(named) <= set(validation_metrics(cfg.data.name))
