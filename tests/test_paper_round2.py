"""Paper-faithful at scale, round 2 (issue 19, items 1–5 and 7): FLYP's (image, template) epochs, ImageNet-LT's
re-balanced epochs and tail share, the adaptive hold-out as a count, the adaptive rule measured between
evaluations of the normally trained model, and all_levels' per-epoch volume."""

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

import harness.phases.fine_tune as phase5
from harness.config import OptimConfig, load_config
from harness.core.registry import get_method
from harness.data.base import TensorImages
from harness.engine.train import Part, Trainer
from harness.models.base import build_model
from harness.phases.curriculum import (
    REAL,
    epoch_parts,
    guidance_val_probe,
    probe_sets,
    split_guidance_val,
    summarize_gain,
    tail_share,
    true_class_prob,
)
from harness.phases.pipeline import fine_tune

NAMES = ["zebra", "wild boar", "tiger", "deer", "fox", "bear"]


def with_train(prep, **changes):
    cfg = prep.cfg.model_copy(update={"train": prep.cfg.train.model_copy(update=changes)})
    return dataclasses.replace(prep, cfg=cfg)


def with_adaptive(prep, **changes):
    cur = prep.cfg.curriculum
    adaptive = cur.adaptive.model_copy(update=changes)
    cfg = prep.cfg.model_copy(update={"curriculum": cur.model_copy(update={"adaptive": adaptive})})
    return dataclasses.replace(prep, cfg=cfg)


# --------------------------------------------------------------------------- item 1: FLYP epochs


def tiny_flyp(templates=("a photo of {name}.", "{name} in the wild.")):
    torch.manual_seed(0)
    cfg = load_config(
        "digits_lt_tiny", ["model.name=clip_flyp", f"model.params={{tiny: true, templates: {list(templates)}}}"]
    )
    return build_model(cfg, len(NAMES), 3, NAMES)


@pytest.mark.parametrize("transform", [None, v2.Resize(32)])  # in-memory batches | the DataLoader's
def test_flyp_epoch_is_one_pass_over_image_template_pairs(transform):
    """Every image once per template, each sample's template reaching the loss: 2 × 6 pairs at batch 4 is 3 steps
    (the old random template per image: 2)."""
    flyp = tiny_flyp()
    images = TensorImages((torch.rand(6, 3, 32, 32) * 255).to(torch.uint8), np.arange(6), [str(i) for i in range(6)])
    seen, original = [], flyp.loss
    flyp.loss = lambda x, y, t: seen.append(list(zip(y.tolist(), t.tolist()))) or original(x, y, t)
    opt = OptimConfig(lr=1e-4, batch_size=4, optimizer="adamw", schedule="constant")
    trainer = Trainer(flyp, opt, 1, torch.zeros(6), seed=0, device=torch.device("cpu"), transform=transform)
    trainer.train_epoch([Part(images, np.arange(6))], 0)
    del flyp.loss
    assert flyp.templates_per_image == 2
    assert trainer.step == len(seen) == math.ceil(2 * 6 / 4) == 3
    assert Counter(p for batch in seen for p in batch) == Counter((i, t) for i in range(6) for t in (0, 1))


def test_flyp_loss_uses_each_samples_template():
    two = tiny_flyp()
    wild = ClipFlypWith(two, ["{name} in the wild."])
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(two.loss(x, y, torch.ones(4, dtype=torch.long)), wild.loss(x, y))
        with pytest.raises(ValueError, match="template index"):
            two.loss(x, y)


def ClipFlypWith(model, templates):
    from harness.models.paper import ClipFlyp
    from harness.weights.tiny import tiny_clip_tokenizer

    return ClipFlyp(model.clip, tiny_clip_tokenizer(), NAMES, templates)


# --------------------------------------------------------------------------- items 2, 3: ImageNet-LT composition

# ImageNet-LT's settings (30% of the non-tail, a 13.6% tail) on the tiny digits, whose tail is a larger share:
# 60% of the non-tail and a 20% tail, so the tail still has room for synthetic images
LT = dict(undersample=0.6, synthetic_scale=None, tail_share=0.2)


def test_imagenet_lt_yaml_states_the_authors_composition():
    lt, wild, digits = load_config("imagenet_lt_discl"), load_config("iwildcam_discl"), load_config("digits_lt_discl")
    assert (lt.train.post_curriculum, lt.train.tail_share, lt.train.synthetic_scale) == ("rebalanced", 0.136, None)
    assert (wild.train.post_curriculum, wild.train.tail_share) == ("natural", None)
    assert (digits.train.post_curriculum, digits.train.tail_share) == ("natural", None)


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
    assert len(parts[0].indices) == round(0.6 * n_non_hard) and len(parts) == 2
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


# --------------------------------------------------------------------------- item 4: the hold-out


def test_holdout_is_a_count_or_a_fraction(tiny_prepared):
    n = len(np.unique(tiny_prepared.hard))
    adaptive = get_method("discl_adaptive")()
    with pytest.raises(ValueError, match="train.tail_share: 0.05 of this epoch"):
        epoch_parts(
            with_train(tiny_prepared, **{**LT, "tail_share": 0.05}),
            get_method("discl_diverse_to_specific")(),
            (0.3,),
            True,
            np.unique(tiny_prepared.hard),
            np.random.default_rng(0),
        )
    for holdout, expected in [(3, 3), (0.25, round(0.25 * n)), (1, 1)]:
        _, held = split_guidance_val(with_adaptive(tiny_prepared, holdout=holdout), adaptive, seed=0)
        assert len(held) == expected
    with pytest.raises(ValueError, match="curriculum.adaptive.holdout: 500"):
        split_guidance_val(with_adaptive(tiny_prepared, holdout=500), adaptive, seed=0)
    assert load_config("imagenet_lt_discl").curriculum.adaptive.holdout == 100
    assert load_config("iwildcam_discl").curriculum.adaptive.holdout == 2000


# --------------------------------------------------------------------------- item 5: the adaptive measurement


def test_adaptive_run_takes_only_its_epochs_steps(tiny_prepared, monkeypatch):
    trainers = []

    class Recording(Trainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            trainers.append(self)

    monkeypatch.setattr(phase5, "Trainer", Recording)
    result = fine_tune(tiny_prepared, "discl_adaptive", seed=0, progress=False)
    batch = tiny_prepared.cfg.train.batch_size
    assert trainers[0].step == sum(math.ceil(r["curriculum/images"] / batch) for r in result.history)
    assert result.stages[0]["levels"] == [min(tiny_prepared.cfg.curriculum.adaptive_levels)]  # no evaluation yet


def test_probe_measures_progress_between_evaluations(tiny_prepared):
    """A real probe on a toy model: the first call has no previous evaluation; the second returns, per level and
    for the real images, the IQR-filtered mean of each image's true-class probability now minus then."""
    levels = tuple(tiny_prepared.cfg.curriculum.adaptive_levels)
    _, held = split_guidance_val(tiny_prepared, get_method("discl_adaptive")(), seed=0)
    data = tiny_prepared.data
    model = build_model(tiny_prepared.cfg, data.num_classes, data.channels, data.class_names)
    model.load_state_dict(tiny_prepared.base_state)
    memory = {}
    probe = guidance_val_probe(tiny_prepared, model, held, memory)
    sets = probe_sets(tiny_prepared, held, levels, include_real=True)
    before = {lam: true_class_prob(model, s, tiny_prepared) for lam, s in sets.items()}
    assert probe(levels) is None and set(memory) == {str(lam) for lam in (*levels, REAL)}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    after = {lam: true_class_prob(model, s, tiny_prepared) for lam, s in sets.items()}
    gains = probe(levels)
    assert set(gains) == {*levels, REAL}
    for lam in gains:
        assert gains[lam] == pytest.approx(summarize_gain(after[lam] - before[lam], "mean", True))
    assert probe(levels) == pytest.approx({lam: 0.0 for lam in gains})  # nothing changed since


def test_choosing_real_makes_a_real_only_stage(tiny_prepared, monkeypatch):
    picks = iter([None, {0.5: 0.0, 0.7: 0.1, 0.9: 0.0, REAL: 0.3}, {0.5: 0.0, 0.7: 0.2, 0.9: 0.1, REAL: 0.1}])
    monkeypatch.setattr(phase5, "guidance_val_probe", lambda *a, **k: lambda levels: next(picks, None))
    prep = with_train(tiny_prepared, curriculum_epochs=3)
    result = fine_tune(prep, "discl_adaptive", seed=0, progress=False)
    assert [s["levels"] for s in result.stages] == [[0.5], [], [0.7]]
    assert result.history[1]["curriculum/synthetic"] == 0 and result.history[2]["curriculum/synthetic"] > 0


# --------------------------------------------------------------------------- item 7: all_levels volume


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
