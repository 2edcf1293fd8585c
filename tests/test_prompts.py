"""Class names and prompts: ImageNet-1k names by label id, the descriptions prefix, placeholder
names refused before generation, spectrum/prompts.csv, and iWildCam's hard set without `empty`."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import write_fake_imagenet_lt

from harness.config import Config, ConfigError, HardConfig, SpectrumConfig, build
from harness.data import load_dataset
from harness.data.base import DataError, DatasetBundle, TensorImages
from harness.phases.hard_samples import select_hard
from harness.phases.spectrum import class_prompts, plan_spectrum

IMAGENET_FIRST = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark", "electric ray"]


def imagenet_config(root, **params) -> Config:
    return build(Config, {"data": {"name": "imagenet_lt", "root": str(root), "image_size": 16, "params": params}})


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return write_fake_imagenet_lt(
        tmp_path_factory.mktemp("imagenet"), counts=(6, 5, 3, 2), val_per_class=1, test_per_class=1
    )


def test_imagenet_lt_names_classes_by_their_imagenet_id(fake_root):
    assert load_dataset(imagenet_config(fake_root)).class_names == IMAGENET_FIRST[:4]
    # a subset of classes (a quick run with num_classes set) keeps the ids' names
    assert load_dataset(imagenet_config(fake_root, num_classes=6)).class_names == IMAGENET_FIRST


def test_a_names_file_wins(fake_root, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\nd\n")
    assert load_dataset(imagenet_config(fake_root, class_names=str(names))).class_names == ["a", "b", "c", "d"]


def test_more_than_1000_classes_need_a_names_file(fake_root):
    with pytest.raises(DataError) as error:
        load_dataset(imagenet_config(fake_root, num_classes=1001))
    assert "\n" not in str(error.value) and "data.params.class_names" in str(error.value)


def tiny_bundle(names, labels=(0, 0, 1, 1, 2)) -> DatasetBundle:
    images = TensorImages(torch.zeros(len(labels), 1, 4, 4), list(labels), [f"img{i}" for i in range(len(labels))])
    return DatasetBundle("fake", list(names), {"train": images}, channels=1)


@pytest.mark.parametrize("placeholder", ["class_17", "class 3", "Class_2"])
def test_placeholder_names_stop_generation_with_one_line(placeholder):
    data = tiny_bundle(["tench", "goldfish", placeholder])
    spec = SpectrumConfig(levels=[0.5], seeds=1)
    assert len(plan_spectrum(data, np.array([0, 2]), spec)) == 2  # the unnamed class has no hard image
    with pytest.raises(ConfigError) as error:
        plan_spectrum(data, np.array([0, 4]), spec)
    message = str(error.value)
    assert "\n" not in message and "class 2" in message and repr(placeholder) in message
    assert "data.params.class_names" in message and "data.params.common_names" in message


def test_descriptions_get_the_prefix_and_must_cover_the_prompted_classes(tmp_path):
    path = tmp_path / "descriptions.json"
    path.write_text(json.dumps({"tench": ["a tench on a deck", "a tench in a net"], "goldfish": "a goldfish"}))
    spec = SpectrumConfig(descriptions=str(path), description_prefix="a 8k real photo: ")
    prompts = class_prompts(spec, ["tench", "goldfish", "shark"], labels=[0, 1])
    assert prompts[:2] == [
        ["a 8k real photo: a tench on a deck", "a 8k real photo: a tench in a net"],
        ["a 8k real photo: a goldfish"],
    ]
    with pytest.raises(ConfigError) as error:  # no silent fallback to the template for a class it lacks
        class_prompts(spec, ["tench", "goldfish", "shark"], labels=[0, 2])
    assert "'shark'" in str(error.value) and "\n" not in str(error.value)
    assert SpectrumConfig().description_prefix == ""


def test_prompts_frame_has_one_row_per_class_with_hard_images(tmp_path):
    from harness.phases.spectrum import prompts_frame

    path = tmp_path / "descriptions.json"
    path.write_text(json.dumps({"tench": ["d1", "d2", "d3"], "goldfish": ["g1"], "shark": ["s1"]}))
    data = tiny_bundle(["tench", "goldfish", "shark"])
    spec = SpectrumConfig(levels=[0.1, 0.5], seeds=2, descriptions=str(path), description_prefix="p: ")
    pool = pd.DataFrame([p.__dict__ for p in plan_spectrum(data, np.array([0, 1, 4]), spec)])
    frame = prompts_frame(pool, data.class_names)
    assert list(frame.columns) == ["label", "class_name", "prompt"]
    assert frame.to_dict("records") == [  # seeds 2: the first two of tench's three descriptions are used
        {"label": 0, "class_name": "tench", "prompt": "p: d1 | p: d2"},
        {"label": 2, "class_name": "shark", "prompt": "p: s1"},
    ]


def probs_for(labels, p_true):
    probs = np.full((len(labels), 3), 0.0)
    probs[np.arange(len(labels)), labels] = p_true
    probs[np.arange(len(labels)), (np.asarray(labels) + 1) % 3] = 1 - np.asarray(p_true)
    return probs


def test_hard_set_excludes_named_classes():
    labels = [0, 0, 1, 1, 2, 2]
    data = tiny_bundle(["empty", "peccary", "agouti"], labels)
    probs = probs_for(labels, [0.1, 0.2, 0.3, 0.9, 0.05, 0.6])
    assert select_hard(HardConfig(rule="low_prob", threshold=0.5), data, probs).tolist() == [0, 1, 2, 4]
    rule = HardConfig(rule="low_prob", threshold=0.5, exclude_classes=["empty"])
    assert select_hard(rule, data, probs).tolist() == [2, 4]
    k = HardConfig(rule="k_hardest", k=3, exclude_classes=["empty"])  # the k hardest of the other classes
    assert select_hard(k, data, probs).tolist() == [2, 4, 5]


def test_an_excluded_name_that_is_not_a_class_is_an_error():
    data = tiny_bundle(["empty", "peccary", "agouti"])
    with pytest.raises(ConfigError) as error:
        select_hard(HardConfig(rule="few_shot", exclude_classes=["Empty"]), data, None)
    assert "hard.exclude_classes" in str(error.value) and "did you mean 'empty'" in str(error.value)
