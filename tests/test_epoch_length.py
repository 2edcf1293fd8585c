"""How training is cut into epochs (train.epoch_length, train.schedule_epochs), the batch stream that runs on across
epochs, the curriculum's stage schedule (curriculum.stage_epochs, real_stage), and the plan's arithmetic at the
real sizes of iWildCam and ImageNet-LT (metadata-only copies: no image is read)."""

import dataclasses

import numpy as np
import pytest
import torch
from fakes_metadata import IWILDCAM_SIZES, write_imagenet_lt_metadata, write_iwildcam_metadata
from recording import recorded_trainers

from harness.config import OptimConfig, load_config
from harness.data.base import TensorImages
from harness.engine.schedule import EpochLength, steps_per_epoch
from harness.engine.train import Part, Trainer
from harness.models.base import HarnessModel
from harness.phases.curriculum import stage_of_epoch
from harness.plan.epochs import plan_method, plan_prep

IWILDCAM_TRAIN = IWILDCAM_SIZES["train"]  # 129,809
HOLDOUT = 2000  # iwildcam.py:155: 2000 hard sources held out for the guidance choice
# one setting per method: FLYP's loop for plain, DisCL's training.py for the curriculum methods
AUTHORS_LOOPS = [
    "train.epoch_length={plain: real_images, default: real_rows}",
    "train.schedule_epochs={plain: null, default: 21}",
    "curriculum.holdout_scope=synthetic",
]


# --------------------------------------------------------------------------- the arithmetic


def test_flyp_epoch_is_its_image_loader_whatever_the_rows():
    """FLYP (flyp_loss.py:46): len(dataset.train_loader) = ceil(129,809 / 256) = 508 steps, though its CSV holds
    two rows per image."""
    flyp = EpochLength("real_images", 256, natural_images=IWILDCAM_TRAIN, rows_per_image=2)
    assert flyp.steps(2 * IWILDCAM_TRAIN, in_curriculum=True) == flyp.steps(1, in_curriculum=False) == 508
    assert flyp.continues and not flyp.restarts(stage=None, previous=0, first=False)


def test_discl_epoch_is_the_natural_rows_less_the_holdout_in_the_curriculum_and_a_pass_after():
    """training.py:250-251, 319: int(rows with guidance 100 / 256) = int(255,618 / 256) = 998 steps per curriculum
    epoch whatever the stage holds; after it (349-351) the loader's own length, a pass (ceil)."""
    rows = 2 * (IWILDCAM_TRAIN - HOLDOUT)
    discl = EpochLength("real_rows", 256, natural_images=IWILDCAM_TRAIN, natural_rows=rows, rows_per_image=2)
    assert discl.steps(10, in_curriculum=True) == discl.steps(10**6, in_curriculum=True) == 998
    assert discl.steps(rows, in_curriculum=False) == 999
    assert discl.restarts(stage=1, previous=0, first=False) and not discl.restarts(stage=1, previous=1, first=False)
    matched = dataclasses.replace(discl, every_epoch=True)  # plain_matched: DisCL's steps whatever its own rows
    assert matched.steps(2 * IWILDCAM_TRAIN, in_curriculum=True) == 998
    assert matched.steps(2 * IWILDCAM_TRAIN, in_curriculum=False) == 999
    assert not matched.restarts(stage=None, previous=0, first=False)


def test_pass_is_todays_epoch():
    one = EpochLength("pass", 128)
    assert [one.steps(n, True) for n in (1, 128, 129, 0)] == [steps_per_epoch(n, 128) for n in (1, 128, 129, 0)]
    assert not one.continues and one.restarts(stage=0, previous=0, first=False)


def test_stage_epochs_with_a_real_stage_is_the_imagenet_lt_codes_list_loop():
    """fine_tune_tr.py:292-302 and 188-209 with curriculum_epoch 60 (``epoch > 60`` leaves it, 107): λ 0.1 for
    epochs 0-13, 0.3 for 14-28, 0.5 for 29-43, then guidance 100 (real, re-balanced) for 44-60, 61 onwards out."""
    stages = [stage_of_epoch(e, 61, 3, [14, 15, 15, 17], real_stage=True) for e in range(65)]
    assert stages == [0] * 14 + [1] * 15 + [2] * 15 + [3] * 17 + [None] * 4
    # a method with another number of stages splits its own epochs equally, before the real stage
    single = [stage_of_epoch(e, 61, 1, [14, 15, 15, 17], real_stage=True) for e in range(62)]
    assert single == [0] * 44 + [1] * 17 + [None]
    # without the list: today's equal split
    assert [stage_of_epoch(e, 8, 4) for e in range(9)] == [0, 0, 1, 1, 2, 2, 3, 3, None]


# --------------------------------------------------------------------------- the stream of batches


class Net(HarnessModel, torch.nn.Sequential):
    """A plain classifier with the trainer's capability defaults."""


def counting_trainer(seen: list[int]) -> Trainer:
    torch.manual_seed(0)
    model = Net(torch.nn.Flatten(), torch.nn.Linear(4, 10))
    model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    cfg = OptimConfig(epochs=3, batch_size=4, lr=0.1, optimizer="sgd", schedule="constant")
    return Trainer(model, cfg, 3, None, seed=0, device=torch.device("cpu"))


def ten_images() -> list[Part]:
    images = TensorImages(torch.rand(10, 1, 2, 2), np.arange(10), [str(i) for i in range(10)])
    return [Part(images, np.arange(10))]


def test_the_stream_runs_on_across_epochs_and_restarts_when_told():
    """Ten images at batch 4 are passes of 4, 4, 2: two steps per epoch walk on through them, a new pass when one
    runs out, instead of restarting each epoch."""
    seen: list[int] = []
    t, parts = counting_trainer(seen), ten_images()
    for epoch in range(3):
        t.train_epoch(parts, epoch, steps=2, fresh=epoch == 0)
    assert seen == [4, 4, 2, 4, 4, 2] and t.step == 6
    seen.clear()
    t.train_epoch(parts, 3, steps=2, fresh=True)
    assert seen == [4, 4]
    seen.clear()
    t.train_epoch(parts, 4)  # no steps: one pass of its own, as before
    assert seen == [4, 4, 2]


def test_a_stage_that_runs_out_is_refilled_from_the_schedule():
    seen: list[int] = []
    t, parts = counting_trainer(seen), ten_images()
    refills = []
    t.train_epoch(parts, 0, steps=5, fresh=True, refill=lambda: refills.append(1) or parts[:1])
    assert seen == [4, 4, 2, 4, 4] and refills == [1]


# --------------------------------------------------------------------------- the plan at the real sizes


@pytest.fixture(scope="module")
def iwildcam_root(tmp_path_factory):
    return write_iwildcam_metadata(tmp_path_factory.mktemp("iwildcam_metadata"))


@pytest.fixture(scope="module")
def iwildcam(iwildcam_root):
    cfg = load_config("iwildcam_discl", [f"data.root={iwildcam_root}", *AUTHORS_LOOPS])
    return plan_prep(cfg, ["plain", "discl_diverse_to_specific"])


def planned(prep, root, method, extra=()):
    cfg = load_config("iwildcam_discl", [f"data.root={root}", *AUTHORS_LOOPS, *extra])
    return plan_method(dataclasses.replace(prep, cfg=cfg), method, 0)


def test_iwildcam_plain_is_flyps_508_steps_per_epoch(iwildcam, iwildcam_root):
    plain = planned(iwildcam, iwildcam_root, "plain", ["train.epochs=6", "train.curriculum_epochs=4"])
    assert (plain.steps == 508).all()  # the paper's FLYP row: 20 × 508 = 10,160 steps
    assert (plain.images == IWILDCAM_TRAIN).all()  # FLYP's own data: no hold-out


def test_iwildcam_plain_matched_trains_discls_budget(iwildcam, iwildcam_root):
    import baselines.plain_matched  # noqa: F401 (registers the method)

    matched = planned(iwildcam, iwildcam_root, "plain_matched")
    assert list(matched.steps) == [998] * 15 + [999] * 5  # DisCL's 15 × 998 + 5 × 999 = 19,965 steps
    assert matched.steps.sum() == 19_965
    assert (matched.images == IWILDCAM_TRAIN).all() and (matched.synthetic == 0).all()


def test_iwildcam_discl_998_per_curriculum_epoch_and_the_real_images_after(iwildcam, iwildcam_root):
    short = ["train.epochs=6", "train.curriculum_epochs=4"]
    for method in ("discl_diverse_to_specific", "discl_adaptive"):
        frame = planned(iwildcam, iwildcam_root, method, short)
        cur, post = frame[frame.epoch < 4], frame[frame.epoch >= 4]
        assert (cur.steps == 998).all(), method
        assert (post.real_nonhard + post.real_hard == IWILDCAM_TRAIN - HOLDOUT).all(), method  # 127,809
        assert (post.steps == 999).all(), method  # ceil(255,618 / 256): the paper's "all real data"
    code = planned(iwildcam, iwildcam_root, "discl_diverse_to_specific", [*short, "train.post_curriculum=hard_real"])
    post = code[code.epoch >= 4]
    assert (post.real_nonhard == 0).all() and (post.real_hard == 8260 - HOLDOUT).all()  # laion.py:53: img_id ≥ 0


def test_iwildcam_stages_are_s_lambda_alone_as_released(iwildcam, iwildcam_root):
    """laion.py:50-57: real non-hard data join a stage only when datalimit != -1 (never, as released)."""
    extra = ["train.epochs=6", "train.curriculum_epochs=4", "train.include_nonhard_real=false"]
    frame = planned(iwildcam, iwildcam_root, "discl_diverse_to_specific", extra)
    cur = frame[frame.epoch < 4]
    assert (cur.real_nonhard == 0).all() and (cur.real_hard == 0).all() and (cur.synthetic > 0).all()
    assert (cur.steps == 998).all()


def test_iwildcam_adaptive_deciding_when_the_stage_runs_out(iwildcam, iwildcam_root):
    """training.py:371-425: the choice is made when the stage's loader is exhausted, not once per epoch."""
    extra = ["train.epochs=6", "train.curriculum_epochs=4", "curriculum.adaptive.decide=stage_exhausted"]
    cfg = load_config("iwildcam_discl", [f"data.root={iwildcam_root}", *AUTHORS_LOOPS, *extra])
    frame = plan_method(dataclasses.replace(iwildcam, cfg=cfg), "discl_adaptive", 0)
    assert (frame[frame.epoch < 4].steps == 998).all()
    # S_λ of one level with the real non-hard images is several epochs of 998 steps: fewer choices than epochs
    assert frame[frame.epoch < 4].stage.nunique() < 4


@pytest.mark.slow
def test_imagenet_lt_code_schedule_has_44_synthetic_epochs(tmp_path):
    root = write_imagenet_lt_metadata(tmp_path)
    settings = [
        f"data.root={root}",
        "curriculum.levels=[0.1, 0.3, 0.5]",
        "train.curriculum_epochs=61",
        "curriculum.stage_epochs=[14, 15, 15, 17]",
        "curriculum.real_stage=true",
    ]
    cfg = load_config("imagenet_lt_discl", settings)
    frame = plan_method(plan_prep(cfg, ["discl_diverse_to_specific"]), "discl_diverse_to_specific", 0)
    assert (frame.synthetic > 0).sum() == 44 and list(frame.levels[:44].map(tuple).unique()) == [(0.1,), (0.3,), (0.5,)]
    assert (frame.synthetic[44:] == 0).all() and frame.stage[44:61].eq(3).all() and frame.stage[61:].isna().all()


# --------------------------------------------------------------------------- the tiny experiment's data and runs


def with_settings(prep, train=None, curriculum=None, adaptive=None):
    """The prepared experiment with other settings (the pool and base model stay)."""
    cur = prep.cfg.curriculum
    cur = cur.model_copy(update={**(curriculum or {}), "adaptive": cur.adaptive.model_copy(update=adaptive or {})})
    cfg = prep.cfg.model_copy(update={"train": prep.cfg.train.model_copy(update=train or {}), "curriculum": cur})
    return dataclasses.replace(prep, cfg=cfg)


def test_holdout_scope_synthetic_leaves_the_holdout_out_of_every_synthetic_method(tiny_prepared):
    from harness.core.registry import get_method
    from harness.phases.curriculum import split_guidance_val

    prep = with_settings(tiny_prepared, curriculum={"holdout_scope": "synthetic"})
    for name in ("discl_diverse_to_specific", "text_only", "plain_rebalanced", "discl_adaptive"):
        assert len(split_guidance_val(prep, get_method(name)(), 0)[1]), name
        held_today = len(split_guidance_val(tiny_prepared, get_method(name)(), 0)[1]) > 0
        assert held_today == (name == "discl_adaptive"), name  # the default scope: the adaptive method only
    assert not len(split_guidance_val(prep, get_method("plain")(), 0)[1])  # FLYP's own data: all of it


def test_post_curriculum_hard_real_is_the_real_hard_images_alone(tiny_prepared):
    from harness.core.registry import get_method
    from harness.phases.curriculum import epoch_parts

    prep = with_settings(tiny_prepared, train={"post_curriculum": "hard_real"})
    sources = np.unique(prep.hard)
    rng = np.random.default_rng(0)
    parts = epoch_parts(prep, get_method("discl_diverse_to_specific")(), (), False, sources, rng)
    assert [len(p.indices) for p in parts] == [0, len(sources)]
    plain = epoch_parts(prep, get_method("plain")(), (), False, sources, rng)  # plain keeps the natural data
    assert sum(len(p.indices) for p in plain) == len(prep.data.train)


def test_adaptive_as_the_imagenet_lt_code_probes_over_a_natural_pass_and_trains_every_level(tiny_prepared, monkeypatch):
    """fine_tune_tr.py:331-418: evaluate, train a pass over natural data, evaluate again, choose; then train on every
    level mixed (guid_values=None) whatever was chosen."""
    import harness.phases.fine_tune as phase5
    from harness.core.registry import get_method
    from harness.phases.curriculum import split_guidance_val

    passes = []
    original = Trainer.train_pass
    monkeypatch.setattr(Trainer, "train_pass", lambda self, parts: passes.append(original(self, parts)) or passes[-1])
    prep = with_settings(
        tiny_prepared,
        train={"epochs": 3, "curriculum_epochs": 2},
        adaptive={"measure": "natural_pass", "train_on": "all_levels", "drop_outliers": False},
    )
    result = phase5.fine_tune(prep, "discl_adaptive", seed=0, progress=False)
    levels = list(prep.cfg.curriculum.adaptive_levels)
    assert [s["levels"] for s in result.stages] == [levels, levels] and all("chosen" in s for s in result.stages)
    _, held = split_guidance_val(prep, get_method("discl_adaptive")(), 0)
    n_natural = len(prep.data.train) - len(held)  # the real images less the hold-out, the hard ones drawn again
    assert passes == [steps_per_epoch(n_natural, prep.cfg.train.batch_size)] * 2


def test_a_run_under_discls_loop_takes_its_steps_and_the_cosine_its_span(tiny_prepared, monkeypatch):
    """real_rows: floor(natural rows / batch) steps per curriculum epoch and a pass after, the stream running on
    within a stage; the cosine over schedule_epochs leaves the last step's learning rate above 0."""
    import harness.phases.fine_tune as phase5

    trainers = recorded_trainers(monkeypatch)
    train = {"epochs": 3, "curriculum_epochs": 2, "epoch_length": "real_rows", "schedule_epochs": 4}
    prep = with_settings(tiny_prepared, train=train)
    result = phase5.fine_tune(prep, "discl_diverse_to_specific", seed=0, progress=False)
    batch, n = prep.cfg.train.batch_size, len(prep.data.train)
    post = steps_per_epoch(result.history[2]["curriculum/images"], batch)
    assert trainers[0].step == 2 * (n // batch) + post
    assert result.history[-1]["lr"] > 0 and trainers[0].schedule.cosine.T_max == 4 * 1000


def test_deciding_when_the_stage_runs_out_compares_first_against_zeros(tiny_prepared):
    """training.py:190-195: the first progress_eval compares with zeros; nothing is evaluated before it."""
    from harness.core.registry import get_method
    from harness.phases.curriculum import guidance_val_probe, split_guidance_val
    from harness.phases.fine_tune import make_trainer

    prep = with_settings(tiny_prepared, adaptive={"decide": "stage_exhausted", "drop_outliers": False})
    _, held = split_guidance_val(prep, get_method("discl_adaptive")(), 0)
    memory = {}
    probe = guidance_val_probe(prep, make_trainer(prep, 0).model, held, memory)
    levels = tuple(prep.cfg.curriculum.adaptive_levels)
    assert probe(levels) is None and not memory
    gains = probe(levels)
    assert gains is not None and all(gains[lam] == pytest.approx(np.mean(memory[str(lam)])) for lam in gains)


def test_plan_replays_a_run_whose_stages_end_when_their_data_does(tiny_prepared, monkeypatch):
    """decide: stage_exhausted under real_rows: the plan's replay of the stream begins the stages at the epochs the
    run does, and counts the run's steps (both choose alike: the plan's stand-in choice)."""
    import harness.phases.fine_tune as phase5

    trainers = recorded_trainers(monkeypatch)
    monkeypatch.setattr(
        phase5, "guidance_val_probe", lambda *a, **k: lambda lv: {lam: float(lam == lv[0]) for lam in lv}
    )
    train = {"epochs": 4, "curriculum_epochs": 3, "epoch_length": "real_rows", "include_nonhard_real": False}
    prep = with_settings(tiny_prepared, train=train, adaptive={"decide": "stage_exhausted"})
    result = phase5.fine_tune(prep, "discl_adaptive", seed=0, progress=False)
    plan = plan_method(prep, "discl_adaptive", 0)
    assert trainers[0].step == plan.steps.sum()
    from harness.phases.fine_tune import Stages, make_method
    from harness.plan.epochs import StreamReplay

    stages = Stages.start(prep, make_method(prep.cfg, "discl_adaptive"), 0)
    stages.ctx.probe = lambda lv: {lam: float(lam == lv[0]) for lam in lv}
    replay = StreamReplay(stages, 1, 1)
    for epoch in range(4):
        replay.epoch(stages.epoch(epoch))
    assert len(result.stages) > 3  # more stages than curriculum epochs: S_λ alone is shorter than an epoch
    assert [(s["stage"], s["first_epoch"]) for s in stages.record] == [
        (s["stage"], s["first_epoch"]) for s in result.stages
    ]


@pytest.mark.slow
def test_imagenet_lt_code_adaptive_trains_a_natural_pass_per_choice_and_every_level(tmp_path):
    """fine_tune_tr.py:338-418: a pass over the natural data (the uniform set: every non-tail image, as many tail
    draws as tail images; here less the 100 held-out sources) before each choice, then every level mixed."""
    root = write_imagenet_lt_metadata(tmp_path)
    settings = [f"data.root={root}", "curriculum.levels=[0.1, 0.3, 0.5]", "train.epochs=3", "train.curriculum_epochs=2"]
    adaptive = ["curriculum.adaptive.measure=natural_pass", "curriculum.adaptive.train_on=all_levels"]
    cfg = load_config("imagenet_lt_discl", [*settings, *adaptive])
    frame = plan_method(plan_prep(cfg, ["discl_adaptive"]), "discl_adaptive", 0)
    natural = steps_per_epoch(115_846 - 100, 128)  # 905
    assert list(frame.probe_steps) == [natural, natural, 0] and list(frame.steps) == [310 + natural] * 2 + [310]
    assert frame.levels_known.all() and list(frame.levels[:2]) == [[0.1, 0.3, 0.5]] * 2


def test_a_resumed_run_under_a_continuing_stream_says_its_pass_restarts(tiny_prepared, tmp_path, caplog):
    """The pass under way is not in the checkpoint: resuming under real_rows warns that a fresh pass starts."""
    import harness.phases.fine_tune as phase5

    prep = with_settings(tiny_prepared, train={"epochs": 2, "curriculum_epochs": 1, "epoch_length": "real_rows"})
    phase5.fine_tune(prep, "discl_diverse_to_specific", seed=0, ckpt_dir=tmp_path, progress=False)
    with caplog.at_level("WARNING", logger="harness"):
        phase5.fine_tune(prep, "discl_diverse_to_specific", seed=0, ckpt_dir=tmp_path, progress=False)
    assert any("starts a fresh pass" in r.getMessage() for r in caplog.records)
    caplog.clear()
    passing = with_settings(tiny_prepared, train={"epochs": 2, "curriculum_epochs": 1})
    phase5.fine_tune(passing, "discl_diverse_to_specific", seed=0, ckpt_dir=tmp_path / "pass", progress=False)
    with caplog.at_level("WARNING", logger="harness"):
        phase5.fine_tune(passing, "discl_diverse_to_specific", seed=0, ckpt_dir=tmp_path / "pass", progress=False)
    assert not any("fresh pass" in r.getMessage() for r in caplog.records)  # a pass per epoch resumes exactly
