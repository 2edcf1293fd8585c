"""discl_adaptive (harness/phases/curriculum.py): the guidance-validation hold-out, the probe that measures each
level's gain between evaluations of the normally trained model, the stage it picks (rank 0's under torchrun, the real
images a candidate), and that it never trains on the held-out sources."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from recording import recorded_parts, recorded_trainers

import harness.phases.fine_tune as phase5
from harness.core.registry import get_method
from harness.models.base import build_model
from harness.phases.curriculum import (
    REAL,
    guidance_val_probe,
    probe_sets,
    split_guidance_val,
    summarize_gain,
    true_class_prob,
)
from harness.phases.pipeline import fine_tune


def with_train(prep, **changes):
    cfg = prep.cfg.model_copy(update={"train": prep.cfg.train.model_copy(update=changes)})
    return dataclasses.replace(prep, cfg=cfg)


def with_adaptive(prep, **changes):
    cur = prep.cfg.curriculum
    adaptive = cur.adaptive.model_copy(update=changes)
    cfg = prep.cfg.model_copy(update={"curriculum": cur.model_copy(update={"adaptive": adaptive})})
    return dataclasses.replace(prep, cfg=cfg)


# --------------------------------------------------------------------------- the hold-out


def test_holdout_is_a_count_or_a_fraction_of_the_hard_sources(tiny_prepared):
    """The held-out sources and the training sources split the hard set; only the adaptive method holds any out."""
    sources = np.unique(tiny_prepared.hard)
    n = len(sources)
    adaptive = get_method("discl_adaptive")()
    default = tiny_prepared.cfg.curriculum.adaptive.holdout
    for holdout, expected in [(default, round(default * n)), (3, 3), (0.25, round(0.25 * n)), (1, 1)]:
        train, held = split_guidance_val(with_adaptive(tiny_prepared, holdout=holdout), adaptive, seed=0)
        assert len(held) == expected
        assert not set(train) & set(held) and set(train) | set(held) == set(sources)
    with pytest.raises(ValueError, match="curriculum.adaptive.holdout: 500"):
        split_guidance_val(with_adaptive(tiny_prepared, holdout=500), adaptive, seed=0)
    train_all, held_none = split_guidance_val(tiny_prepared, get_method("discl_diverse_to_specific")(), seed=0)
    assert len(held_none) == 0 and len(train_all) == n


def test_adaptive_never_trains_on_held_out_sources(tiny_prepared, monkeypatch):
    parts = recorded_parts(monkeypatch)
    result = fine_tune(tiny_prepared, "discl_adaptive", seed=0, progress=False)
    _, held = split_guidance_val(tiny_prepared, get_method("discl_adaptive")(), seed=0)
    assert len(held) and len(parts) == tiny_prepared.cfg.train.epochs  # the probe trains no stretch of its own
    pool = tiny_prepared.pool
    for epoch in parts:
        for part in epoch:
            if part.images is tiny_prepared.pool_images:
                assert not set(pool.source_index.iloc[part.indices]) & set(held)
            else:
                assert not set(part.indices) & set(held)
    assert len(result.stages) == tiny_prepared.cfg.train.curriculum_epochs


def test_every_level_is_probed_on_the_same_kept_sources(tiny_prepared):
    levels = tuple(tiny_prepared.cfg.curriculum.adaptive_levels)
    _, held = split_guidance_val(tiny_prepared, get_method("discl_adaptive")(), seed=0)
    sets = probe_sets(tiny_prepared, held, levels)
    pool = tiny_prepared.pool.set_index("key")
    sources = None
    for lam, images in sets.items():
        rows = pool.loc[images.ids]
        assert rows.keep.all() and np.allclose(rows.lam, lam) and set(rows.source_index) <= set(held)
        assert rows.source_index.is_unique
        sources = sources or list(rows.source_index)
        assert list(rows.source_index) == sources


# --------------------------------------------------------------------------- the measurement and the pick


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


def test_adaptive_picks_the_level_with_the_largest_gain(tiny_prepared, monkeypatch):
    picks = iter(
        [
            {0.5: 0.1, 0.7: 0.3, 0.9: -0.2},
            {0.5: 0.4, 0.7: 0.0, 0.9: 0.1},
            {0.5: 0.0, 0.7: 0.0, 0.9: 0.2},
            {0.5: 0.0, 0.7: 0.1, 0.9: 0.0},
        ]
    )
    monkeypatch.setattr(phase5, "guidance_val_probe", lambda *a, **k: lambda levels: next(picks))
    result = fine_tune(tiny_prepared, "discl_adaptive", seed=0, progress=False)
    assert [s["levels"] for s in result.stages] == [[0.7], [0.5], [0.9], [0.7]]


def test_choosing_real_makes_a_real_only_stage(tiny_prepared, monkeypatch):
    picks = iter([None, {0.5: 0.0, 0.7: 0.1, 0.9: 0.0, REAL: 0.3}, {0.5: 0.0, 0.7: 0.2, 0.9: 0.1, REAL: 0.1}])
    monkeypatch.setattr(phase5, "guidance_val_probe", lambda *a, **k: lambda levels: next(picks, None))
    prep = with_train(tiny_prepared, curriculum_epochs=3)
    result = fine_tune(prep, "discl_adaptive", seed=0, progress=False)
    assert [s["levels"] for s in result.stages] == [[0.5], [], [0.7]]
    assert result.history[1]["curriculum/synthetic"] == 0 and result.history[2]["curriculum/synthetic"] > 0


def test_rank_zeros_choice_is_taken(tiny_prepared, monkeypatch):
    """Under torchrun every rank computes the stage's levels, and ``distributed.share`` hands out rank 0's."""
    from harness.core import distributed

    monkeypatch.setattr(distributed, "share", lambda obj: (0.9,))
    result = fine_tune(tiny_prepared, "discl_adaptive", seed=0, progress=False)
    assert {tuple(s["levels"]) for s in result.stages} == {(0.9,)}


def test_adaptive_run_takes_only_its_epochs_steps(tiny_prepared, monkeypatch):
    trainers = recorded_trainers(monkeypatch)
    result = fine_tune(tiny_prepared, "discl_adaptive", seed=0, progress=False)
    batch = tiny_prepared.cfg.train.batch_size
    assert trainers[0].step == sum(math.ceil(r["curriculum/images"] / batch) for r in result.history)
    assert result.stages[0]["levels"] == [min(tiny_prepared.cfg.curriculum.adaptive_levels)]  # no evaluation yet


def test_random_changes_level_as_often_as_adaptive():
    for epochs in (4, 15, 60):
        levels = (0.5, 0.7, 0.9)
        assert (
            get_method("discl_random")().n_stages(levels, epochs)
            == get_method("discl_adaptive")().n_stages(levels, epochs)
            == epochs
        )
