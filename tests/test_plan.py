"""`harness plan`: the paper's own figures on metadata-only copies of ImageNet-LT and iWildCam at their real sizes
(no image file exists), and the plan equal to what `harness run` then logs in MLflow on imagenet_lt_discl_tiny
(digits_lt_tiny's plan against its fine-tuning, epoch by epoch: tests/test_fine_tune.py)."""

import dataclasses
import json
import math

import numpy as np
import pytest
from fakes import write_fake_imagenet_lt
from fakes_metadata import (
    IMAGENET_LT_TRAIN,
    IWILDCAM_SIZES,
    write_imagenet_lt_metadata,
    write_iwildcam_metadata,
)
from quick import IMAGENET_LT

from harness.config import load_config
from harness.core.registry import get_method
from harness.engine.train import steps_per_epoch
from harness.phases.curriculum import split_guidance_val
from harness.plan.epochs import (
    EPOCH_COLUMNS,
    make_plan,
    plan_hard,
    plan_method,
    plan_prep,
    plan_spectrum_counts,
    planned_pool,
)
from harness.plan.output import compact

# the curriculum's composition per epoch does not depend on how many epochs a stage lasts: the fast tests plan one
# epoch per stage and two after the curriculum (the full 65- and 20-epoch schedules: the slow CLI test below)
SHORT = ["train.epochs=6", "train.curriculum_epochs=4"]


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    return write_imagenet_lt_metadata(tmp_path_factory.mktemp("imagenet_lt_metadata"))


@pytest.fixture(scope="module")
def iwildcam_root(tmp_path_factory):
    return write_iwildcam_metadata(tmp_path_factory.mktemp("iwildcam_metadata"))


@pytest.fixture(scope="module")
def imagenet_prep(imagenet_root):
    cfg = load_config("imagenet_lt_discl", [f"data.root={imagenet_root}"])
    return plan_prep(cfg, ["plain", "plain_rebalanced", "discl_diverse_to_specific"])


@pytest.fixture(scope="module")
def iwildcam_prep(iwildcam_root):
    cfg = load_config("iwildcam_discl", [f"data.root={iwildcam_root}"])
    return plan_prep(cfg, ["plain", "discl_adaptive"])


def short(prep, experiment, root, extra=()):
    cfg = load_config(experiment, [f"data.root={root}", *SHORT, *extra])
    return dataclasses.replace(prep, cfg=cfg)


# --------------------------------------------------------------------------- metadata only


def test_a_metadata_only_copy_plans_without_an_image(imagenet_prep, imagenet_root):
    """The plan reads the split files alone: no image exists, the plan says so, and reading an image is an error."""
    assert not list(imagenet_root.rglob("*.JPEG")) and imagenet_prep.notes["data"].startswith("metadata only")
    assert len(imagenet_prep.data.train) == IMAGENET_LT_TRAIN
    with pytest.raises(Exception, match="no images"):
        imagenet_prep.data.train.load(0)


# --------------------------------------------------------------------------- ImageNet-LT at full size


def test_imagenet_lt_spectrum_is_the_few_shot_set_times_eight_seeds(imagenet_prep):
    s = plan_spectrum_counts(imagenet_prep)
    assert s["sources"] == 1643 and s["images_per_level"] == 1643 * 8 and s["images"] == 1643 * 8 * 4
    assert s["hard"].startswith("exact") and s["pool"].startswith("PLANNED")


def test_imagenet_lt_epochs(imagenet_prep, imagenet_root):
    prep = short(imagenet_prep, "imagenet_lt_discl", imagenet_root)
    plain = plan_method(prep, "plain", 0)
    assert (plain.images == IMAGENET_LT_TRAIN).all() and (plain.steps == math.ceil(IMAGENET_LT_TRAIN / 128)).all()
    assert (plain.real_hard == 1643).all() and (plain.synthetic == 0).all() and plain.levels.map(len).eq(0).all()
    discl = plan_method(prep, "discl_diverse_to_specific", 0)
    cur = discl[discl.epoch < 4]
    assert list(cur.levels) == [[0.0], [0.1], [0.3], [0.5]] and cur.levels_known.all()
    assert (cur.real_nonhard == int(0.3 * (IMAGENET_LT_TRAIN - 1643))).all()  # a fresh 30% of the non-tail
    assert (cur.synthetic > 0).all() and (discl.steps == [steps_per_epoch(n, 128) for n in discl.images]).all()
    control = plan_method(prep, "plain_rebalanced", 0)
    assert (control.synthetic == 0).all() and (control.images == discl.images).all()  # the same composition
    assert control.levels.map(len).eq(0).all()


def test_imagenet_lt_tail_is_13_6_percent_of_every_epoch(imagenet_prep, imagenet_root):
    """The authors' loader: the tail (real tail + synthetic) is 0.136 of every epoch, after the curriculum too."""
    prep = short(imagenet_prep, "imagenet_lt_discl", imagenet_root)
    for method in ("discl_diverse_to_specific", "plain_rebalanced"):
        frame = plan_method(prep, method, 0)
        assert frame.tail_share.to_numpy() == pytest.approx(0.136, abs=5e-4), method


# --------------------------------------------------------------------------- iWildCam at full size


def test_iwildcam_hard_set_is_an_estimate_with_the_papers_count(iwildcam_prep):
    s = plan_spectrum_counts(iwildcam_prep)
    assert s["sources"] == 8260 and s["images_per_level"] == 8260 * 8 and "ESTIMATE" in s["hard"]


def test_iwildcam_k_hardest_count_is_exact(iwildcam_prep, iwildcam_root):
    cfg = load_config("iwildcam_discl", [f"data.root={iwildcam_root}", "hard.rule=k_hardest", "hard.k=5000"])
    hard, how = plan_hard(cfg, iwildcam_prep.data, None)
    empty = iwildcam_prep.data.class_names.index("empty")
    assert (
        len(hard) == 5000
        and how.startswith("exact count")
        and not (iwildcam_prep.data.train.labels[hard] == empty).any()
    )


def test_iwildcam_epochs_and_the_adaptive_levels_unknown(iwildcam_prep, iwildcam_root):
    prep = short(iwildcam_prep, "iwildcam_discl", iwildcam_root)
    plain = plan_method(prep, "plain", 0)
    assert (plain.images == IWILDCAM_SIZES["train"]).all()
    adaptive = plan_method(prep, "discl_adaptive", 0)
    cur, post = adaptive[adaptive.epoch < 4], adaptive[adaptive.epoch >= 4]
    assert not cur.levels_known.any() and post.levels_known.all()  # chosen during training: marked, not invented
    assert list(cur.levels) == [[0.5]] * 4 and list(post.levels) == [[], []]
    assert (cur.real_nonhard == IWILDCAM_SIZES["train"] - 8260).all() and (cur.real_hard == 0).all()
    train_sources, held = split_guidance_val(prep, get_method("discl_adaptive")(), 0)
    assert len(held) == prep.cfg.curriculum.adaptive.holdout == 2000  # the paper's guidance-validation set
    kept = prep.pool[prep.pool.keep & (prep.pool.lam == 0.5) & prep.pool.source_index.isin(train_sources)]
    assert (cur.synthetic == len(kept)).all()  # S_λ: every kept image of the level whose source trains


def test_iwildcam_flyp_epoch_is_one_pass_over_image_template_pairs(iwildcam_prep, iwildcam_root):
    """FLYP's and the authors' CSV: every training image once per template (2 × 129,809 rows), ≈ 1014 steps at 256."""
    plain = plan_method(short(iwildcam_prep, "iwildcam_discl", iwildcam_root), "plain", 0)
    assert set(plain.steps) <= {1014, 1015}


# --------------------------------------------------------------------------- the CLI at full size


@pytest.mark.slow
def test_cli_plan_at_full_size_writes_the_json(imagenet_root, iwildcam_root, tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "plan.json"
    argv = ["plan", "-e", "imagenet_lt_discl", "--set", f"data.root={imagenet_root}", "--json", str(out)]
    assert main([*argv, "--workdir", str(tmp_path / "work"), "--quiet"]) == 0
    plan = json.loads(out.read_text())
    assert set(plan) >= {"methods", "spectrum", "gpu_hours"}
    plain = plan["methods"]["plain"]
    assert len(plain["epochs"]) == 65 and plain["total_steps"] == 65 * 906
    assert set(plain["epochs"][0]) == set(EPOCH_COLUMNS)
    assert plan["spectrum"]["images_per_level"] == 1643 * 8 and plan["gpu_hours"]["total_one_seed"] > 0
    assert "plain: 58890 steps in all" in capsys.readouterr().out
    argv = ["plan", "-e", "iwildcam_discl", "--set", f"data.root={iwildcam_root}", "-m", "plain", "--json", str(out)]
    assert main([*argv, "--workdir", str(tmp_path / "work"), "--quiet"]) == 0
    plan = json.loads(out.read_text())
    assert len(plan["methods"]["plain"]["epochs"]) == 20 and plan["gpu_hours"]["fine_tune_per_seed"]["plain"] > 0


# --------------------------------------------------------------------------- plan vs run


def logged(tmp_path, experiment: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    out = {}
    for run in runs:
        history = {
            key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"curriculum/{key}")}
            for key in ("images", "synthetic", "tail_share", "lambda")
        }
        out[run.data.tags["method"]] = history
    return out


def assert_plan_is_run(plan: dict, runs: dict, methods: list[str]) -> None:
    for method in methods:
        frame, history = plan["methods"][method]["epochs"], runs[method]
        assert len(frame) == len(history["images"]), method
        for row in frame.itertuples():
            lam = float(np.mean(row.levels)) if row.levels else 1.0
            assert history["images"][row.epoch] == row.images, (method, row.epoch)
            assert history["synthetic"][row.epoch] == row.synthetic, (method, row.epoch)
            assert history["tail_share"][row.epoch] == row.tail_share, (method, row.epoch)
            assert history["lambda"][row.epoch] == pytest.approx(lam), (method, row.epoch)


@pytest.mark.slow
def test_plan_equals_run_on_imagenet_lt_discl_tiny(tmp_path):
    from harness.cli import main

    root = write_fake_imagenet_lt(tmp_path / "data", counts=(14, 11, 6, 3, 2), val_per_class=2, test_per_class=4)
    # this tree's shot groups, and one epoch after the curriculum
    sets = [f"data.root={root}", *IMAGENET_LT, "data.shot_groups={many: 10, few: 4}", "train.epochs=3"]
    methods = ["plain", "plain_rebalanced", "discl_diverse_to_specific"]
    argv = ["--experiment", "imagenet_lt_discl_tiny", "--workdir", str(tmp_path / "work"), "--quiet"]
    argv += [a for s in sets for a in ("--set", s)]
    assert main(["run", *argv, *[a for m in methods for a in ("-m", m)]]) == 0
    plan = make_plan(load_config("imagenet_lt_discl_tiny", sets), methods, tmp_path / "work")
    assert plan["spectrum"]["pool"].endswith("(exact)") and plan["spectrum"]["sources"] == 5
    assert_plan_is_run(plan, logged(tmp_path, "imagenet_lt_discl_tiny"), methods)


def test_compact_groups_runs_of_the_same_composition(imagenet_prep, imagenet_root):
    frame = plan_method(short(imagenet_prep, "imagenet_lt_discl", imagenet_root), "plain", 0)
    table = compact(frame)
    assert list(table.epochs) == ["0-5"] and len(frame) == 6


# --------------------------------------------------------------------------- the metadata readers follow the loaders


def test_metadata_readers_give_the_loaders_labels_and_ids(tmp_path):
    """The same splits, labels and ids (and the same random subsample) as the loaders, without the images."""
    from fakes import write_fake_iwildcam

    from harness.data import load_dataset
    from harness.data.metadata import load_metadata

    root = write_fake_imagenet_lt(tmp_path / "inlt", counts=(14, 11, 6, 3, 2), val_per_class=2, test_per_class=4)
    iw_root = write_fake_iwildcam(tmp_path / "iw", n_per_split=10, num_classes=4)
    for experiment, data_root, sub in (
        ("imagenet_lt_discl_tiny", root, "data.max_train=20"),
        ("iwildcam_discl_tiny", iw_root, "data.params.max_per_split=7"),
    ):
        cfg = load_config(experiment, [f"data.root={data_root}", sub])
        full, (meta, metadata_only) = load_dataset(cfg), load_metadata(cfg)
        assert metadata_only and meta.class_names == full.class_names and set(meta.splits) == set(full.splits)
        for name, split in full.splits.items():
            assert meta.splits[name].ids == split.ids and (meta.splits[name].labels == split.labels).all(), name
        assert (meta.train_counts == full.train_counts).all() and meta.val_split == full.val_split


def test_keep_all_plans_every_image_kept(imagenet_prep):
    pool, how = planned_pool(imagenet_prep.cfg, imagenet_prep.hard, imagenet_prep.data.train.labels, "all")
    assert pool.keep.all() and len(pool) == 1643 * 8 * 4 and "every image assumed kept" in how
    assert imagenet_prep.pool.keep.mean() == pytest.approx(24_141 / 51_917, abs=1e-4)  # the paper's acceptance


def test_steps_are_counted_at_the_global_batch():
    """As Trainer.train_epoch: each of N ranks takes ceil(rows / N) rows at train.batch_size."""
    assert steps_per_epoch(129_809, 256) == 508 and steps_per_epoch(2 * 129_809, 256) == 1015
    assert steps_per_epoch(129_809, 256, world=8) == 64 and steps_per_epoch(3, 256) == 1


def test_a_hard_rule_the_plan_cannot_count_is_one_line(tmp_path, capsys):
    from harness.cli import main

    argv = ["plan", "-e", "digits_lt_tiny", "--set", "hard.rule=low_prob", "--workdir", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hard.rule low_prob needs the base model" in err and "k_hardest" in err
