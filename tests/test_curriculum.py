"""How an epoch is composed (harness/phases/curriculum.py ``epoch_parts``): the share of the tail, the real
re-balancing control, S_λ (every kept image of a level) and all_levels' volume, and the stage of each epoch."""

import dataclasses

import numpy as np
import pytest
from recording import recorded_parts

from harness.core.registry import get_method
from harness.phases.curriculum import epoch_parts, tail_share
from harness.phases.pipeline import fine_tune

# ImageNet-LT's settings (30% of the non-tail, a 13.6% tail) on the tiny digits, whose tail is a larger share:
# 60% of the non-tail and a 20% tail, so the tail still has room for synthetic images
LT = dict(undersample=0.6, synthetic_scale=None, tail_share=0.2)


def with_train(prep, **changes):
    """The prepared experiment with other ``train`` settings (the pool and base model stay)."""
    cfg = prep.cfg.model_copy(update={"train": prep.cfg.train.model_copy(update=changes)})
    return dataclasses.replace(prep, cfg=cfg)


# --------------------------------------------------------------------------- the tail share (ImageNet-LT)


@pytest.mark.parametrize("method", ["discl_diverse_to_specific", "plain_rebalanced"])
def test_tail_is_exactly_the_share_and_synthetic_is_drawn_with_replacement(tiny_prepared, method):
    """tail (real hard + synthetic or stand-ins) = ⌊share / (1 − share) × non-hard⌋; with few kept images (share
    0.5 here) the synthetic images repeat rather than the share falling."""
    sources = np.unique(tiny_prepared.hard)
    for share in (0.2, 0.5):
        prep = with_train(tiny_prepared, **{**LT, "tail_share": share})
        parts = epoch_parts(prep, get_method(method)(), (0.3,), True, sources, np.random.default_rng(0))
        n_non_hard, n_tail = len(parts[0].indices), sum(len(p.indices) for p in parts[1:])
        assert n_tail == int(share / (1 - share) * n_non_hard)
        assert np.array_equal(parts[1].indices, sources)  # the real tail once, the rest drawn
        assert tail_share(parts) == pytest.approx(share, abs=1 / len(parts[0].indices))
    drawn = parts[-1].indices
    assert len(drawn) > len(set(drawn))  # share 0.5 needs more than were kept: drawn with replacement


def test_after_the_curriculum_rebalanced_keeps_undersampling_and_upsamples_the_real_tail(tiny_prepared):
    sources = np.unique(tiny_prepared.hard)
    n_non_hard = len(tiny_prepared.data.train) - len(sources)
    rng = np.random.default_rng(0)
    prep = with_train(tiny_prepared, **LT, post_curriculum="rebalanced")
    parts = epoch_parts(prep, get_method("discl_diverse_to_specific")(), (), False, sources, rng)
    assert len(parts[0].indices) == int(0.6 * n_non_hard) and len(parts) == 2
    assert len(parts[1].indices) == int(0.2 / 0.8 * len(parts[0].indices)) > len(sources)
    assert set(parts[1].indices) <= set(sources)
    assert tail_share(parts) == pytest.approx(0.2, abs=1 / len(parts[0].indices))
    natural = with_train(tiny_prepared, **LT, post_curriculum="natural")
    for p, method in [(natural, "discl_diverse_to_specific"), (prep, "plain")]:  # plain never re-balances
        parts = epoch_parts(p, get_method(method)(), (), False, sources, rng)
        assert len(parts[0].indices) == n_non_hard and np.array_equal(parts[1].indices, sources)


def test_logged_tail_share_of_every_epoch(tiny_prepared):
    prep = with_train(tiny_prepared, **LT, post_curriculum="rebalanced")
    history = fine_tune(prep, "discl_diverse_to_specific", seed=0, progress=False).history
    assert len(history) > prep.cfg.train.curriculum_epochs  # the post-curriculum epoch is checked too
    for row in history:
        assert row["curriculum/tail_share"] == pytest.approx(0.2, abs=0.01)


def test_a_tail_share_too_small_for_the_real_tail_is_refused(tiny_prepared):
    sources = np.unique(tiny_prepared.hard)
    prep = with_train(tiny_prepared, **{**LT, "tail_share": 0.05})
    with pytest.raises(ValueError, match="train.tail_share: 0.05 of this epoch"):
        epoch_parts(prep, get_method("discl_diverse_to_specific")(), (0.3,), True, sources, np.random.default_rng(0))


# --------------------------------------------------------------------------- the real-only re-balancing control


@pytest.mark.parametrize("paper", ["imagenet_lt", "iwildcam"])
def test_control_has_disclss_epoch_composition(tiny_prepared, paper, monkeypatch):
    """plain_rebalanced sees DisCL's epochs: the same images per epoch and the same tail share, with real hard
    images standing in for the synthetic ones; on iWildCam's settings (S_λ, no real hard images in stages) too."""
    prep = (
        tiny_prepared
        if paper == "imagenet_lt"
        else with_train(tiny_prepared, synthetic_scale=None, include_hard_real=False)
    )
    cur = prep.cfg.train.curriculum_epochs
    discl = fine_tune(prep, "discl_diverse_to_specific", seed=0, progress=False).history
    parts = recorded_parts(monkeypatch)
    control = fine_tune(prep, "plain_rebalanced", seed=0, progress=False).history
    plain = fine_tune(prep, "plain", seed=0, progress=False).history
    for d, c in zip(discl, control):
        assert c["curriculum/images"] == d["curriculum/images"]
        assert c["curriculum/tail_share"] == pytest.approx(d["curriculum/tail_share"], abs=0.01)
        assert c["curriculum/synthetic"] == 0 and c["curriculum/lambda"] == 1.0
    assert all(d["curriculum/tail_share"] > p["curriculum/tail_share"] for d, p in zip(discl[:cur], plain[:cur]))
    hard = set(np.unique(prep.hard))
    for epoch in parts[:cur]:
        stand_ins = epoch[-1]
        assert stand_ins.images is prep.data.train and set(stand_ins.indices) <= hard
        assert len(stand_ins.indices) > len(set(stand_ins.indices))  # drawn with replacement


# --------------------------------------------------------------------------- S_λ and all_levels' volume


def test_null_scale_trains_on_every_kept_image_of_the_level(tiny_prepared):
    prep = with_train(tiny_prepared, synthetic_scale=None)
    method = get_method("fixed_guidance")(lam=0.5)
    sources = np.unique(prep.hard)
    parts = epoch_parts(prep, method, (0.5,), True, sources, np.random.default_rng(0))
    pool = prep.pool
    expected = np.flatnonzero((pool.keep & np.isclose(pool.lam, 0.5)).to_numpy())
    assert np.array_equal(parts[-1].indices, expected) and len(expected) > len(sources)  # more than scale 1.0


def test_all_levels_draws_one_levels_volume(tiny_prepared):
    prep = with_train(tiny_prepared, synthetic_scale=None)
    levels = tuple(prep.cfg.curriculum_levels)
    sources = np.unique(prep.hard)
    kept = {lam: int((prep.pool.keep & np.isclose(prep.pool.lam, lam)).sum()) for lam in levels}
    mixed = epoch_parts(prep, get_method("all_levels")(), levels, True, sources, np.random.default_rng(0))[-1]
    assert len(mixed.indices) == round(sum(kept.values()) / len(levels)) < sum(kept.values())
    assert len(set(mixed.indices)) == len(mixed.indices)
    single = epoch_parts(
        prep, get_method("fixed_guidance")(lam=levels[0]), levels[:1], True, sources, np.random.default_rng(0)
    )
    assert len(single[-1].indices) == kept[levels[0]]
