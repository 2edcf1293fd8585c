"""Every registered method, smoke-run on the tiny prepared pool (timm-style: new methods are tested for free)."""

import pytest

from harness.core.registry import UnknownNameError, get_method, list_methods
from harness.phases.pipeline import fine_tune

METHODS = list_methods()


def test_every_installed_method_entry_point_is_registered():
    """The registered methods are the installed entry points' (the built-ins and any plugin's), computed, not a
    hard-coded list that breaks when a plugin is installed; the built-ins come from this package's own."""
    from importlib.metadata import distribution

    from harness.core.registry import component_entry_points

    installed = {ep.name for ep, _ in component_entry_points("discl_harness.methods")}
    assert set(METHODS) == installed
    own = {ep.name for ep in distribution("discl-harness").entry_points.select(group="discl_harness.methods")}
    assert own <= set(METHODS) and len(own) >= 9
    assert list_methods("discl*") == sorted(m for m in METHODS if m.startswith("discl"))


def test_unknown_method_names_the_closest():
    with pytest.raises(UnknownNameError, match="did you mean discl_random"):
        get_method("discl_randm")


@pytest.mark.parametrize("method", METHODS)
def test_method_smoke(method, tiny_prepared):
    cfg = tiny_prepared.cfg
    result = fine_tune(tiny_prepared, method, seed=0, progress=False)
    assert set(result.test_metrics) == {"test/acc", "test/acc_many", "test/acc_medium", "test/acc_few"}
    assert all(0 <= v <= 1 for v in result.test_metrics.values())
    if not getattr(get_method(method), "fine_tunes", True):  # ``base``: the base model evaluated, no epochs
        assert result.history == [] and result.best_epoch == -1
        return
    assert len(result.history) == cfg.train.epochs
    assert 0 <= result.best_epoch < cfg.train.epochs
    lams = [row["curriculum/lambda"] for row in result.history]
    synthetic = [row["curriculum/synthetic"] for row in result.history]
    cur = cfg.train.curriculum_epochs
    assert lams[cur:] == [1.0] * (cfg.train.epochs - cur) and synthetic[cur:] == [0] * (cfg.train.epochs - cur)
    if not get_method(method).synthetic:
        assert lams == [1.0] * cfg.train.epochs and sum(synthetic) == 0
        return
    # adaptive may choose the real images (the authors' guidance 100): a real-only stage, λ logged as 1.0
    real_stage = [get_method(method).adaptive and lam == 1.0 for lam in lams[:cur]]
    assert all(n > 0 for n, real in zip(synthetic[:cur], real_stage) if not real)
    assert all(n == 0 for n, real in zip(synthetic[:cur], real_stage) if real)
    allowed = set(cfg.curriculum.adaptive_levels if method == "discl_adaptive" else cfg.curriculum_levels)
    for stage in result.stages:
        assert set(stage["levels"]) <= allowed
    if method == "discl_diverse_to_specific":
        assert lams[:cur] == sorted(lams[:cur]) and lams[0] == 0.0
    if method == "discl_specific_to_diverse":
        assert lams[:cur] == sorted(lams[:cur], reverse=True) and lams[cur - 1] == 0.0
    if method == "text_only":
        assert lams[:cur] == [0.0] * cur
    if method == "fixed_guidance":
        assert lams[:cur] == [0.5] * cur


def test_same_seed_same_numbers_and_seeds_differ(tiny_prepared):
    a = fine_tune(tiny_prepared, "discl_random", seed=3, progress=False)
    b = fine_tune(tiny_prepared, "discl_random", seed=3, progress=False)
    assert a.test_metrics == b.test_metrics and a.stages == b.stages
    assert [r["train/loss"] for r in a.history] == [r["train/loss"] for r in b.history]
    c = fine_tune(tiny_prepared, "discl_random", seed=4, progress=False)
    assert [r["train/loss"] for r in a.history] != [r["train/loss"] for r in c.history]
