"""One unique, unambiguous name per ImageNet-1k id by default (prompts and the CLIP filter), and a
descriptions JSON keyed by other names (the authors' list) mapped to label ids by ``spectrum.description_names``."""

import json

import numpy as np
import pytest
from fakes import write_fake_imagenet_lt

from harness.config import Config, ConfigError, SpectrumConfig, build
from harness.data import load_dataset
from harness.data.imagenet_lt import curated_names, imagenet_names
from harness.phases.spectrum import class_prompts, plan_spectrum

# ids whose torchvision names repeat or are terse: the crane bird and the machine, the two maillots, the kite (a
# bird), the Corgi and the sweater, the missile and the projectile, the burning glass and the sunglasses
PAIRS = [(134, 517), (638, 639), (264, 474), (657, 744), (836, 837)]


def test_a_unique_name_for_each_of_the_1000_ids():
    names = imagenet_names(1000)
    assert len(names) == 1000 == len({n.casefold() for n in names})  # unique even ignoring case
    assert all(n and n == n.strip() and "\n" not in n for n in names)
    assert names[:3] == ["tench", "goldfish", "great white shark"]


def test_the_known_repeated_and_terse_names_are_told_apart():
    names = curated_names()
    for a, b in PAIRS:
        assert names[a].casefold() != names[b].casefold()
    assert names[134] == "crane (bird)" and names[517] == "construction crane"
    assert names[21] == "kite (bird of prey)"
    assert "swimsuit" in names[639] and "swimsuit" not in names[638]
    assert "Corgi" in names[264] and "sweater" in names[474]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return write_fake_imagenet_lt(
        tmp_path_factory.mktemp("imagenet"), counts=(6, 5, 3, 2), val_per_class=1, test_per_class=1
    )


def imagenet_config(root, spectrum=None, **params) -> Config:
    values = {"data": {"name": "imagenet_lt", "root": str(root), "image_size": 16, "params": params}}
    return build(Config, {**values, "spectrum": spectrum or {}})


def test_imagenet_lt_prompts_and_filter_name_the_curated_classes(fake_root, tmp_path):
    data = load_dataset(imagenet_config(fake_root, num_classes=22))
    assert data.class_names[21] == "kite (bird of prey)" and data.class_names[4] == "hammerhead shark"
    spec = SpectrumConfig(levels=[0.5], seeds=1)
    plan = plan_spectrum(data, np.flatnonzero(data.train.labels == 3)[:1], spec)
    assert plan[0].prompt == "a photo of a tiger shark"
    # the CLIP filter's text comes from the same names (the scorer is built with the dataset's class names)
    from types import SimpleNamespace

    from harness.scorers.clip import ClipParams, ClipScorer

    scorer = SimpleNamespace(p=ClipParams(prompt="a photo of {name}"), class_names=list(data.class_names))
    assert ClipScorer.filter_prompts(scorer, ["ignored"], [21]) == ["a photo of kite (bird of prey)"]

    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\nd\n")
    assert load_dataset(imagenet_config(fake_root, class_names=str(names))).class_names == ["a", "b", "c", "d"]


def authors_style_names() -> list[str]:
    """Names in another curation, in label order, as the authors' list is: two pairs named alike, others
    worded differently from ours."""
    names = list(curated_names())
    names[134], names[517] = "crane bird", "construction crane"
    names[657] = names[744] = "missile"
    names[836] = names[837] = "sunglasses"
    names[21] = "kite"
    return names


@pytest.mark.parametrize("suffix", [".txt", ".json"])
def test_descriptions_keyed_by_the_authors_names_give_the_right_prompts(tmp_path, suffix):
    names_file = tmp_path / f"authors_names{suffix}"
    theirs = authors_style_names()
    names_file.write_text(json.dumps(theirs) if suffix == ".json" else "\n".join(theirs) + "\n")
    descriptions = tmp_path / "descriptions.json"
    descriptions.write_text(
        json.dumps(
            {
                "crane bird": ["a crane wading in a marsh"],
                "construction crane": ["a tower crane over a building site"],
                "missile": ["a missile on a launcher"],
                "kite": ["a kite soaring over a field", "a kite on a branch"],
            }
        )
    )
    spec = SpectrumConfig(
        descriptions=str(descriptions), description_names=str(names_file), description_prefix="a 8k real photo: "
    )
    prompts = class_prompts(spec, curated_names(), labels=[21, 134, 517, 657, 744])
    assert prompts[134] == ["a 8k real photo: a crane wading in a marsh"]
    assert prompts[517] == ["a 8k real photo: a tower crane over a building site"]
    assert prompts[21] == ["a 8k real photo: a kite soaring over a field", "a 8k real photo: a kite on a branch"]
    assert prompts[657] == prompts[744] == ["a 8k real photo: a missile on a launcher"]  # their list names both alike
    assert prompts[0] == ["a photo of a tench"]  # not prompted, no descriptions: the template
    # keyed by their names but read by ours: the kite and the cranes are missing, one line that says what to give
    plain = SpectrumConfig(descriptions=str(descriptions))
    with pytest.raises(ConfigError) as error:
        class_prompts(plain, curated_names(), labels=[21, 134])
    assert "spectrum.description_names" in str(error.value) and "\n" not in str(error.value)


def test_descriptions_keyed_by_label_id_and_a_names_file_of_the_wrong_length(tmp_path):
    descriptions = tmp_path / "descriptions.json"
    descriptions.write_text(json.dumps({"134": ["a crane in flight"]}))
    spec = SpectrumConfig(descriptions=str(descriptions))
    assert class_prompts(spec, curated_names(), labels=[134])[134] == ["a crane in flight"]
    short = tmp_path / "names.txt"
    short.write_text("tench\ngoldfish\n")
    with pytest.raises(ConfigError, match="has 2 names for 1000 classes"):
        class_prompts(SpectrumConfig(descriptions=str(descriptions), description_names=str(short)), curated_names())


def test_the_names_file_enters_the_pool_key(tmp_path):
    from harness.config import load_config
    from harness.config.keys import pool_key

    names = tmp_path / "names.txt"
    names.write_text("a\n")
    base = load_config("imagenet_lt_discl")
    with_names = load_config("imagenet_lt_discl", [f"spectrum.description_names={names}"])
    key = pool_key(with_names)
    assert key != pool_key(base)
    names.write_text("b\n")
    assert pool_key(load_config("imagenet_lt_discl", [f"spectrum.description_names={names}"])) != key


def test_the_authors_names_are_their_list_in_label_order_with_its_repeats():
    from harness.data.imagenet_lt import authors_names

    theirs, ours = authors_names(), curated_names()
    assert len(theirs) == 1000 and theirs[:3] == ["tench", "goldfish", "great white shark"]
    assert theirs[8] == "hen" and ours[8] == "hen (chicken)"
    assert theirs[657] == theirs[744] == "missile" and theirs[836] == theirs[837] == "sunglasses"
    assert sum(a.casefold() != b.casefold() for a, b in zip(theirs, ours)) == 306
    assert not any(name.startswith("#") for name in theirs)  # the file's header is not a name


def test_class_names_authors_names_the_classes_and_enters_the_data_key(fake_root):
    from harness.config.keys import data_identity

    authors = imagenet_config(fake_root, num_classes=22, class_names="authors")
    data = load_dataset(authors)
    assert data.class_names[8] == "hen" and data.class_names[21] == "kite (bird of prey)"
    ours = imagenet_config(fake_root, num_classes=22)
    assert load_dataset(ours).class_names[8] == "hen (chicken)"  # ours stay the default
    digest = data_identity(authors)["params"]["class_names"]
    assert "sha256" in digest and digest != data_identity(ours)["params"].get("class_names")
