"""Cache keys (issue 11, item 8): speed-only settings leave every key unchanged; the contents of user files that
decide the output change the keys they decide. Pure functions of the config: no data is read."""

import json

import pytest

from harness.cache_keys import base_key, data_identity, pool_key, scorer_key
from harness.config import load_config

KEYS = {"base": base_key, "pool": pool_key, "scorer": scorer_key, "data": lambda cfg: str(data_identity(cfg))}


def keys(experiment: str, overrides=()) -> dict[str, str]:
    cfg = load_config(experiment, list(overrides))
    return {name: fn(cfg) for name, fn in KEYS.items()}


def test_pipeline_uses_the_cache_keys_module():
    from harness import cache_keys

    assert (base_key, pool_key, scorer_key) == (cache_keys.base_key, cache_keys.pool_key, cache_keys.scorer_key)


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
    ],
)
def test_speed_only_settings_leave_every_key_unchanged(experiment, override):
    assert keys(experiment, [override]) == keys(experiment)


@pytest.mark.parametrize(
    "override, changed",
    [
        ("scorer.params.batch_size=3", {"scorer"}),  # the judge's batch size is a training batch size
        ("generator.params.batch_size=3", {"pool"}),  # so is the tiny DDPM's
        ("base.batch_size=3", {"base"}),  # few_shot: the pool does not depend on the base model
        ("data.shot_groups.few=3", {"pool"}),  # ... but on which classes are few-shot
        ("data.image_size=12", {"base", "pool", "data"}),
        (
            "data.train_transform=[{Resize: {size: [16, 16]}}, RandomHorizontalFlip]",
            {"base"},
        ),  # what the base model trains on
        (
            "data.eval_transform=[{Resize: {size: [16, 16]}}, RandomVerticalFlip]",
            {"base"},
        ),  # how its training-set probabilities are measured
    ],
)
def test_settings_that_decide_the_output_change_their_keys(override, changed):
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
    assert {k for k in KEYS if edited[k] != first[k]} == {"data", "base", "pool"}


def test_iwildcam_common_names_contents_change_the_keys(tmp_path):
    names = write(tmp_path / "common.json", json.dumps({"0": "empty", "1": "peccary"}))
    first = keys("iwildcam_discl_tiny", [f"data.params.common_names={names}"])
    write(tmp_path / "common.json", json.dumps({"0": "empty", "1": "agouti"}))
    edited = keys("iwildcam_discl_tiny", [f"data.params.common_names={names}"])
    assert {k for k in KEYS if edited[k] != first[k]} == {"data", "base", "pool"}


def test_descriptions_contents_change_the_pool_key_only(tmp_path):
    path = write(tmp_path / "descriptions.json", json.dumps({"tench": ["a tench on a boat deck"]}))
    first = keys("imagenet_lt_discl_tiny", [f"spectrum.descriptions={path}"])
    write(tmp_path / "descriptions.json", json.dumps({"tench": ["a tench in a net"]}))
    edited = keys("imagenet_lt_discl_tiny", [f"spectrum.descriptions={path}"])
    assert {k for k in KEYS if edited[k] != first[k]} == {"pool"}


@pytest.mark.parametrize("key", ["base.checkpoint", "model.params.weights"])
def test_weight_file_contents_change_the_base_key(tmp_path, key):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"first")
    # low_prob hard samples come from the base model: the pool follows the base key
    first = keys("imagenet_lt_discl_tiny", [f"{key}={path}", "hard.rule=low_prob"])
    path.write_bytes(b"second")
    edited = keys("imagenet_lt_discl_tiny", [f"{key}={path}", "hard.rule=low_prob"])
    assert {k for k in KEYS if edited[k] != first[k]} == {"base", "pool"}
