"""Cache keys: speed-only settings leave every key unchanged; the contents of user files that
decide the output change the keys they decide. Pure functions of the config: no data is read."""

import json

import pytest

from harness.config import load_config
from harness.config.keys import base_key, data_identity, pool_key, run_key, scorer_key

METHOD = "discl_diverse_to_specific"
KEYS = {
    "base": base_key,
    "pool": pool_key,
    "scorer": scorer_key,
    "data": lambda cfg: str(data_identity(cfg)),
    "run": lambda cfg: run_key(cfg, METHOD),  # what `harness run` reuses a finished run by
}


def keys(experiment: str, overrides=()) -> dict[str, str]:
    cfg = load_config(experiment, list(overrides))
    return {name: fn(cfg) for name, fn in KEYS.items()}


def test_the_runner_reuses_runs_by_the_run_key():
    from harness.runs.paths import run_config_hash

    cfg = load_config("digits_lt_tiny")
    assert run_config_hash(cfg, METHOD) == run_key(cfg, METHOD, world=1)


@pytest.mark.parametrize(
    "experiment, override",
    [
        ("imagenet_lt_discl_tiny", "data.params.num_workers=7"),
        ("imagenet_lt_discl_tiny", "scorer.params.batch_size=3"),  # CLIP inference batch
        ("imagenet_lt_discl_tiny", "generator.params.compile=true"),
        ("imagenet_lt_discl_tiny", "spectrum.batch_size=5"),
        ("imagenet_lt_discl_tiny", "data.max_corrupt_fraction=0.2"),
        ("iwildcam_discl_tiny", "data.params.num_workers=7"),  # hard.rule low_prob: the pool hangs on the base key
        ("iwildcam_discl_tiny", "scorer.params.batch_size=3"),
        ("digits_lt_tiny", "spectrum.batch_size=64"),  # retrained a finished run before the run key
        ("digits_lt_tiny", "device=cpu"),
        ("digits_lt_tiny", "tracking.system_metrics=false"),
        ("digits_lt_tiny", "tracking.log_model=never"),
        ("digits_lt_tiny", "sweep.sampler_seed=5"),
        ("digits_lt_tiny", "seeds=[3, 4]"),
        ("digits_lt_tiny", "methods=[plain]"),
        ("digits_lt_tiny", "description=another"),
        ("digits_lt_tiny", "method_params.fixed_guidance.lam=0.1"),  # another method's params
    ],
)
def test_speed_only_settings_leave_every_key_unchanged(experiment, override):
    from harness.runs.paths import run_config_hash

    assert keys(experiment, [override]) == keys(experiment)
    cfg, changed = load_config(experiment), load_config(experiment, [override])
    assert run_config_hash(changed, METHOD) == run_config_hash(cfg, METHOD)


@pytest.mark.parametrize(
    "override, changed",
    [
        ("scorer.params.batch_size=3", {"scorer", "run"}),  # the judge's batch size is a training batch size
        ("generator.params.batch_size=3", {"pool", "run"}),  # so is the tiny DDPM's
        ("base.batch_size=3", {"base", "run"}),  # few_shot: the pool does not depend on the base model
        ("data.shot_groups.few=3", {"pool", "run"}),  # ... but on which classes are few-shot
        ("data.shot_groups.many_inclusive=true", {"pool", "run"}),
        ("base.mixup_alpha=0.2", {"base", "run"}),
        ("spectrum.zero_guidance=img2img", {"pool", "run"}),
        ("data.image_size=12", {"base", "pool", "data", "run"}),
        (
            "data.train_transform=[{Resize: {size: [16, 16]}}, RandomHorizontalFlip]",
            {"base", "run"},
        ),  # what the base model trains on
        (
            "data.eval_transform=[{Resize: {size: [16, 16]}}, RandomVerticalFlip]",
            {"base", "run"},
        ),  # how its training-set probabilities are measured
        ("train.epochs=9", {"run"}),
        ("train.batch_size=8", {"run"}),
        ("train.loss=balanced_softmax", {"run"}),
        ("curriculum.levels=[0.5]", {"run"}),
        ("filter.threshold=0.5", {"run"}),
        ("data.max_train=50", {"base", "pool", "run"}),
    ],
)
def test_settings_that_decide_the_output_change_their_keys(override, changed):
    """Which settings change which key (every cached phase feeds the run key)."""
    before, after = keys("digits_lt_tiny"), keys("digits_lt_tiny", [override])
    differ = {k for k in KEYS if before[k] != after[k]}
    assert differ == changed


def write(path, text):
    path.write_text(text)
    return str(path)


def test_names_file_contents_change_the_data_base_and_pool_keys(tmp_path):
    names = write(tmp_path / "names.txt", "tench\ngoldfish\n")
    first = keys("imagenet_lt_discl_tiny", [f"data.params.class_names={names}"])
    assert first != keys("imagenet_lt_discl_tiny")
    moved = write(tmp_path / "moved.txt", "tench\ngoldfish\n")  # same contents elsewhere: same keys
    assert keys("imagenet_lt_discl_tiny", [f"data.params.class_names={moved}"]) == first
    write(tmp_path / "names.txt", "tench\ncarp\n")  # edited in place
    edited = keys("imagenet_lt_discl_tiny", [f"data.params.class_names={names}"])
    assert {k for k in KEYS if edited[k] != first[k]} == {"data", "base", "pool", "run"}


def test_iwildcam_common_names_contents_change_the_keys(tmp_path):
    names = write(tmp_path / "common.json", json.dumps({"0": "empty", "1": "peccary"}))
    first = keys("iwildcam_discl_tiny", [f"data.params.common_names={names}"])
    write(tmp_path / "common.json", json.dumps({"0": "empty", "1": "agouti"}))
    edited = keys("iwildcam_discl_tiny", [f"data.params.common_names={names}"])
    assert {k for k in KEYS if edited[k] != first[k]} == {"data", "base", "pool", "run"}


def test_descriptions_contents_change_the_pool_key_only(tmp_path):
    path = write(tmp_path / "descriptions.json", json.dumps({"tench": ["a tench on a boat deck"]}))
    first = keys("imagenet_lt_discl_tiny", [f"spectrum.descriptions={path}"])
    write(tmp_path / "descriptions.json", json.dumps({"tench": ["a tench in a net"]}))
    edited = keys("imagenet_lt_discl_tiny", [f"spectrum.descriptions={path}"])
    assert {k for k in KEYS if edited[k] != first[k]} == {"pool", "run"}


@pytest.mark.parametrize("key", ["base.checkpoint", "model.params.weights"])
def test_weight_file_contents_change_the_base_key(tmp_path, key):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"first")
    # low_prob hard samples come from the base model: the pool follows the base key
    first = keys("imagenet_lt_discl_tiny", [f"{key}={path}", "hard.rule=low_prob"])
    path.write_bytes(b"second")
    edited = keys("imagenet_lt_discl_tiny", [f"{key}={path}", "hard.rule=low_prob"])
    assert {k for k in KEYS if edited[k] != first[k]} == {"base", "pool", "run"}


@pytest.mark.parametrize("experiment", ["digits_lt_tiny", "iwildcam_discl_tiny"])
def test_the_keys_hold_the_global_batch(experiment):
    """``batch_size`` is per rank: 2 ranks × 8 is the base model and run of 1 process × 16, not of 1 × 8."""
    cfg = load_config(experiment)
    one = load_config(
        experiment, [f"base.batch_size={2 * cfg.base.batch_size}", f"train.batch_size={2 * cfg.train.batch_size}"]
    )
    for key in (base_key, pool_key, lambda c, world: run_key(c, METHOD, world)):
        assert key(cfg, world=2) == key(one, world=1)
    assert base_key(cfg, world=2) != base_key(cfg, world=1)
    assert run_key(cfg, METHOD, world=2) != run_key(cfg, METHOD, world=1)
    assert base_key(cfg) == base_key(cfg, world=1)  # outside a process group: one rank


def test_a_methods_own_params_change_its_run_key():
    cfg, other = load_config("digits_lt_tiny"), load_config("digits_lt_tiny", ["method_params.fixed_guidance.lam=0.1"])
    assert run_key(other, "fixed_guidance") != run_key(cfg, "fixed_guidance")
    assert run_key(other, METHOD) == run_key(cfg, METHOD)
    assert run_key(cfg, "fixed_guidance") != run_key(cfg, METHOD)


@pytest.mark.parametrize(
    "experiment, base, pool",
    [(None, "f820a074cf07", "3a2c4439c699"), ("digits_lt_tiny", "d28d6588ee3d", "19874bbde712")],
)
def test_settings_added_later_leave_the_keys_of_configs_that_do_not_set_them(experiment, base, pool):
    """The keys computed before the base recipe, shot-group and λ = 0 settings existed: an experiment that
    leaves them at their defaults keeps its cached base model and pool."""
    from harness.config import Config

    cfg = load_config(experiment) if experiment else Config()
    assert (base_key(cfg, 1), pool_key(cfg, 1)) == (base, pool)
