"""Phase 5's parts (harness/phases/fine_tune.py): the starting point, the stage schedule that ``fine_tune`` and
``harness plan`` share, the selection of the best epoch, and the checkpoint."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import write_fake_iwildcam

from harness.config import ConfigError, load_config
from harness.data.base import DataError
from harness.models.base import build_model
from harness.phases.curriculum import stage_of_epoch
from harness.phases.fine_tune import BestEpoch, Checkpointer, Stages, make_method, make_trainer
from harness.phases.pipeline import fine_tune, prepare
from harness.plan.epochs import plan_method, plan_prep

# the run state a checkpoint of today's main holds besides the trainer and the stream (its RunState's fields)
MAIN_CHECKPOINT_STATE = {
    *("epoch", "best", "best_epoch", "best_state", "history"),
    *("stages", "stage", "levels", "probe_last"),
}


# --------------------------------------------------------------------------- the starting point


def initial_weights(monkeypatch) -> list[dict]:
    """The weights each trainer starts from."""
    import harness.phases.fine_tune as phase5

    seen = []
    original = phase5.Trainer

    def recording(model, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return original(model, *args, **kwargs)

    monkeypatch.setattr(phase5, "Trainer", recording)
    return seen


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_iwildcam_fine_tunes_pretrained_clip_not_the_base_model(tmp_path, monkeypatch):
    root = write_fake_iwildcam(tmp_path / "wilds")
    cfg = load_config(
        "iwildcam_discl_tiny",
        [f"data.root={root}", "base.epochs=1", "train.epochs=1", "train.curriculum_epochs=0"],
        methods=["plain"],
    )
    assert cfg.train.init == "pretrained"  # iWildCam's default (the recipe's "init" row)
    prep = prepare(cfg, tmp_path / "wd", methods=["plain"], progress=False)
    seen = initial_weights(monkeypatch)
    fine_tune(prep, "plain", seed=0, progress=False)
    from_base_cfg = prep.cfg.model_copy(update={"train": prep.cfg.train.model_copy(update={"init": "base"})})
    fine_tune(dataclasses.replace(prep, cfg=from_base_cfg), "plain", seed=0, progress=False)
    fresh = build_model(cfg, prep.data.num_classes, 3, prep.data.class_names).state_dict()
    pretrained, from_base = seen
    assert all(torch.equal(pretrained[k], fresh[k]) for k in fresh)
    assert all(torch.equal(from_base[k], prep.base_state[k]) for k in fresh)
    assert any(not torch.equal(pretrained[k], prep.base_state[k]) for k in fresh)


def test_pretrained_init_without_pretrained_weights_is_refused():
    with pytest.raises(ConfigError, match="no pretrained weights"):
        load_config("digits_lt_tiny", ["train.init=pretrained"])


# --------------------------------------------------------------------------- the stages


@pytest.fixture(scope="module")
def three_levels():
    """digits_lt_tiny with a 3-level curriculum over 6 of 10 epochs; a plan's stand-in for Prepared (no model)."""
    sets = ["curriculum.levels=[0.1,0.3,0.5]", "train.epochs=10", "train.curriculum_epochs=6"]
    cfg = load_config("digits_lt_tiny", sets)
    return plan_prep(cfg, ["discl_diverse_to_specific"], keep="all")


def counted(method):
    """The method, with a count of its calls to ``stage_levels``."""
    calls = []
    original = method.stage_levels

    def stage_levels(stage, ctx):
        calls.append(stage)
        return original(stage, ctx)

    method.stage_levels = stage_levels
    return method, calls


def test_diverse_to_specific_stages_over_6_of_10_epochs(three_levels):
    method, calls = counted(make_method(three_levels.cfg, "discl_diverse_to_specific"))
    stages = Stages.start(three_levels, method, seed=0)
    epochs = [stages.epoch(e) for e in range(10)]
    assert [ep.stage for ep in epochs] == [0, 0, 1, 1, 2, 2, None, None, None, None]
    assert [ep.levels for ep in epochs] == [(0.1,), (0.1,), (0.3,), (0.3,), (0.5,), (0.5,), (), (), (), ()]
    assert [ep.in_curriculum for ep in epochs] == [True] * 6 + [False] * 4
    assert calls == [0, 1, 2]  # the method is asked once, on each stage's first epoch
    assert [stage_of_epoch(e, 3, 3) for e in range(4)] == [0, 1, 2, None]  # one epoch a stage: no off-by-one
    assert stages.record == [
        {"stage": 0, "first_epoch": 0, "levels": [0.1]},
        {"stage": 1, "first_epoch": 2, "levels": [0.3]},
        {"stage": 2, "first_epoch": 4, "levels": [0.5]},
    ]
    synthetic = [sum(len(p.indices) for p in ep.parts if p.images is three_levels.pool_images) for ep in epochs]
    assert all(n > 0 for n in synthetic[:6]) and synthetic[6:] == [0] * 4
    plan = plan_method(three_levels, "discl_diverse_to_specific", seed=0)
    assert list(plan.stage.astype(object).where(plan.stage.notna(), None)) == [ep.stage for ep in epochs]
    assert [tuple(lv) for lv in plan.levels] == [ep.levels for ep in epochs]
    assert list(plan.synthetic) == synthetic


def test_a_restored_schedule_continues_mid_stage_without_asking_again(three_levels):
    full = Stages.start(three_levels, make_method(three_levels.cfg, "discl_diverse_to_specific"), seed=5)
    draws = [full.epoch(e) for e in range(10)]
    first = Stages.start(three_levels, make_method(three_levels.cfg, "discl_diverse_to_specific"), seed=5)
    for e in range(3):  # stopped in the middle of stage 1
        first.epoch(e)
    saved, stream = first.state(), first.rng.bit_generator.state
    method, calls = counted(make_method(three_levels.cfg, "discl_diverse_to_specific"))
    resumed = Stages.start(three_levels, method, seed=5)
    resumed.load_state(saved)
    resumed.rng.bit_generator.state = stream
    rest = [resumed.epoch(e) for e in range(3, 10)]
    assert calls == [2] and resumed.record == full.record
    assert resumed.ctx.history == full.ctx.history
    for a, b in zip(rest, draws[3:]):
        assert a.levels == b.levels and all(np.array_equal(p.indices, q.indices) for p, q in zip(a.parts, b.parts))


@pytest.mark.parametrize(
    "method", ["plain", "discl_diverse_to_specific", "discl_random", "plain_rebalanced", "all_levels"]
)
@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_plan_and_fine_tune_agree_epoch_by_epoch(tiny_prepared, method):
    """digits_lt_tiny's methods (and the random and real-only controls): the plan's stages, levels and epoch
    compositions are the run's."""
    cfg = tiny_prepared.cfg
    assert {"plain", "discl_diverse_to_specific"} == set(cfg.methods)
    result = fine_tune(tiny_prepared, method, seed=2, progress=False)
    plan = plan_method(tiny_prepared, method, seed=2)
    synthetic = make_method(cfg, method).synthetic
    assert len(plan) == len(result.history) == cfg.train.epochs
    in_stage = [
        next(s for s in reversed(result.stages) if s["first_epoch"] <= e) if e < cfg.train.curriculum_epochs else None
        for e in range(cfg.train.epochs)
    ]
    assert [None if pd.isna(s) else int(s) for s in plan.stage] == [s and s["stage"] for s in in_stage]
    assert [list(lv) for lv in plan.levels] == [s["levels"] if s and synthetic else [] for s in in_stage]
    for row, logged in zip(plan.itertuples(), result.history):
        lam = float(np.mean(row.levels)) if row.levels else 1.0
        assert logged["curriculum/lambda"] == pytest.approx(lam), (method, row.epoch)
        assert logged["curriculum/images"] == row.images, (method, row.epoch)
        assert logged["curriculum/synthetic"] == row.synthetic, (method, row.epoch)
        assert logged["curriculum/tail_share"] == row.tail_share, (method, row.epoch)


def test_best_epoch_keeps_the_best_weights_and_skips_nan():
    model = torch.nn.Linear(2, 1)
    best = BestEpoch("val/acc")
    for epoch, acc in enumerate([0.2, 0.5, float("nan"), 0.4]):
        with torch.no_grad():
            model.weight.fill_(epoch)
        best.offer(epoch, {"val/acc": acc}, model)
    assert best.epoch == 1 and best.score == 0.5
    best.restore(model)
    assert torch.all(model.weight == 1)
    assert BestEpoch("val/f1").offer(0, {"val/acc": 1.0}, model) != BestEpoch("val/f1").score  # missing: NaN


def test_checkpoint_keeps_mains_format_and_refuses_another(tiny_prepared, tmp_path):
    """A checkpoint holds what today's main writes (so main's checkpoints resume); one whose run state lacks or
    adds a key is refused in one line, never resumed wrongly."""
    cfg = tiny_prepared.cfg.model_copy(update={"train": tiny_prepared.cfg.train.model_copy(update={"epochs": 2})})
    prep = dataclasses.replace(tiny_prepared, cfg=cfg)
    fine_tune(prep, "discl_diverse_to_specific", seed=0, ckpt_dir=tmp_path, progress=False)
    saved = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert set(saved) == {"trainer", "rng", "state"} and set(saved["state"]) == MAIN_CHECKPOINT_STATE
    assert saved["state"]["epoch"] == 2 and len(saved["state"]["history"]) == 2
    assert isinstance(saved["state"]["levels"], tuple) and saved["state"]["stages"][0]["first_epoch"] == 0

    for broken in ({k: v for k, v in saved["state"].items() if k != "probe_last"}, {**saved["state"], "extra": 1}):
        torch.save({**saved, "state": broken}, tmp_path / "checkpoint.pt")
        stages = Stages.start(prep, make_method(cfg, "discl_diverse_to_specific"), seed=0)
        with pytest.raises(DataError, match="delete the checkpoint.pt") as err:
            Checkpointer(tmp_path).resume(make_trainer(prep, 0), stages, BestEpoch(cfg.train.select_on))
        assert "\n" not in str(err.value)


def test_nothing_outside_the_trainer_sets_its_epoch():
    """The epoch is an argument (``trainer.train_epoch(parts, epoch)``), not state set from outside."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [*root.glob("harness/**/*.py"), *root.glob("baselines/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr == "current_epoch" and path.name != "train.py":
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found
