import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.config import Config, ConfigError, build, load_config, stable_hash


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_default_experiment_loads_and_names_itself():
    cfg = load_config("digits_lt_discl")
    assert cfg.name == "digits_lt_discl"
    assert cfg.curriculum_levels == [0.0, 0.1, 0.3, 0.5]
    assert cfg.methods == ["plain", "discl_diverse_to_specific"]


def test_suite_extends_the_default():
    suite = load_config("digits_lt_suite")
    assert suite.name == "digits_lt_suite"
    assert len(suite.methods) == 9 and suite.seeds == [0, 1, 2]
    assert suite.spectrum == load_config("digits_lt_discl").spectrum


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = write(tmp_path, "extends: digits_lt_discl\ntrain: {epohcs: 3}\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: unknown key 'train.epohcs' \(did you mean 'epochs'\?\)"):
        load_config(path)


def test_wrong_type_is_named(tmp_path):
    path = write(tmp_path, "extends: digits_lt_discl\ntrain: {epochs: many}\n")
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(path)


def test_unknown_method_suggests_the_closest(tmp_path):
    path = write(tmp_path, "extends: digits_lt_discl\nmethods: [discl_diverse_to_specfic]\n")
    with pytest.raises(ConfigError, match="did you mean discl_diverse_to_specific"):
        load_config(path)


def test_set_overrides_and_rejects_unknown_keys():
    cfg = load_config("digits_lt_discl", ["train.epochs=3", "train.curriculum_epochs=2", "spectrum.levels=[0.0, 0.5]", "curriculum.levels=[0.5]",
                                            "curriculum.adaptive_levels=[0.5]"])
    assert cfg.train.epochs == 3 and cfg.spectrum.levels == [0.0, 0.5]
    with pytest.raises(ConfigError, match="no key 'train.epoch'"):
        load_config("digits_lt_discl", ["train.epoch=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config("digits_lt_discl", ["train.epochs"])


def test_cross_key_checks():
    with pytest.raises(ConfigError, match="not among the generated"):
        load_config("digits_lt_discl", ["curriculum.levels=[0.2]"])
    with pytest.raises(ConfigError, match="exceeds train.epochs"):
        load_config("digits_lt_discl", ["train.curriculum_epochs=99"])
    with pytest.raises(ConfigError, match="leak the test split"):
        load_config("digits_lt_discl", ["train.select_on=test/acc"])


def test_missing_experiment_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no experiment 'nope'"):
        load_config("nope")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: {epochs: [\n"))


def test_hash_is_stable_and_order_free():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


scalars = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans(), st.none())


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["epochs", "lr", "loss", "batch_size", "bogus", "undersample"]), scalars))
def test_loader_accepts_exactly_the_well_typed(values):
    """Any mapping either builds a config whose fields have the declared types, or raises ConfigError."""
    try:
        cfg = build(Config, {"train": values})
    except ConfigError as e:
        assert str(e).startswith(("train.", "unknown key 'train."))
        return
    assert "bogus" not in values
    assert isinstance(cfg.train.epochs, int) and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.train.loss, str)
