import re
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.config import Config, ConfigError, Loss, build, list_experiments, load_config, stable_hash, validate


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("experiment", list_experiments())
def test_every_experiment_loads_validates_and_names_itself(experiment):
    """The one test over the shipped YAMLs; the others test the loader's behaviour, not the files' values."""
    cfg = load_config(experiment)
    validate(cfg, experiment)
    assert cfg.name == experiment and cfg.methods and cfg.seeds


def test_extends_merges_the_parent_and_the_child_names_itself(tmp_path):
    write(
        tmp_path,
        "description: parent\ntrain: {epochs: 7, lr: 0.5}\nspectrum: {levels: [0.0, 0.5], seeds: 3}\n",
        "parent.yaml",
    )
    child = load_config(write(tmp_path, f"extends: {tmp_path / 'parent.yaml'}\ntrain: {{epochs: 9}}\n", "child.yaml"))
    assert child.name == "child" and child.description == "parent"
    assert (child.train.epochs, child.train.lr) == (9, 0.5)  # nested keys merge: the child's wins, the rest stays
    assert child.spectrum.levels == [0.0, 0.5] and child.spectrum.seeds == 3
    assert child.curriculum_levels == [0.0, 0.5]  # curriculum.levels unset: every generated level


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
    cfg = load_config(
        "digits_lt_discl",
        [
            "train.epochs=3",
            "train.curriculum_epochs=2",
            "spectrum.levels=[0.0, 0.5]",
            "curriculum.levels=[0.5]",
            "curriculum.adaptive_levels=[0.5]",
        ],
    )
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
    # pinned: serializing values any other way would orphan every cache on every machine without an error
    assert stable_hash({"b": [1, 2.5, None], "a": "λ"}) == "abc9385eb270"


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
    assert {key: getattr(cfg.train, key) for key in values} == values  # each given value is kept as given
    assert type(cfg.train.epochs) is int and type(cfg.train.lr) is float and type(cfg.train.undersample) is float
    assert cfg.train.loss in typing.get_args(Loss)


# ------------------------------------------------------------------------ pydantic models, no silent settings

CHOICES = [
    ("train.schedule", "cosin", ["cosine", "constant"]),
    ("train.optimizer", "adamm", ["adam", "adamw", "sgd"]),
    ("base.loss", "focal", ["ce", "balanced_softmax"]),
    ("base.precision", "fp8", ["auto", "bf16", "fp16", "fp32"]),
    ("train.init", "scratch", ["base", "pretrained"]),
    ("hard.rule", "fewshot", ["few_shot", "low_prob", "k_hardest", "misclassified"]),
    ("curriculum.adaptive.statistic", "avg", ["mean", "trimmed_mean", "median"]),
    ("sweep.pruner", "hyper", ["median", "hyperband", "none"]),
    (
        "sweep.space.orderings",
        "[random, adaptve]",
        ["diverse_to_specific", "specific_to_diverse", "random", "adaptive"],
    ),
    ("sweep.space.losses", "[ce, focal]", ["ce", "balanced_softmax"]),
    ("tracking.log_model", "sometimes", ["auto", "always", "never"]),
    ("device", "gpu", ["auto", "cpu", "cuda"]),
    ("spectrum.scheduler", "eulr", ["default", "ddim", "euler", "euler_a", "pndm", "dpm", "lms"]),
]


@pytest.mark.parametrize("key,value,choices", CHOICES, ids=[c[0] for c in CHOICES])
def test_an_unknown_choice_names_the_key_and_the_choices(key, value, choices):
    with pytest.raises(ConfigError) as e:
        load_config("digits_lt_discl", [f"{key}={value}"])
    message = str(e.value)
    assert "\n" not in message and f"digits_lt_discl.yaml: {key}" in message
    assert all(c in message for c in choices), message


def test_each_choice_list_is_written_once():
    """The schema's choices are exactly what the code that runs them knows, and the default sweep space searches
    every ordering."""
    from harness.config import Ordering, Scheduler, SweepSpace
    from harness.generators.sd_img2img import SCHEDULERS
    from harness.sweep import ORDERING_METHODS

    assert set(typing.get_args(Scheduler)) == {"default", *SCHEDULERS}
    assert set(typing.get_args(Ordering)) == set(ORDERING_METHODS) == set(SweepSpace().orderings)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lr=true", "train.lr: expected a number, got True"),
        ("train.epochs=3.0", "train.epochs: expected an integer, got 3.0"),
        ("train.batch_size='64'", "train.batch_size: expected an integer, got '64'"),
        ("train.include_hard_real=1", "train.include_hard_real: expected true or false, got 1"),
        ("data.root=3", "data.root: expected a string, got 3"),
        ("spectrum.levels=0.5", "spectrum.levels: expected a list, got float 0.5"),
        ("curriculum.adaptive=mean", "curriculum.adaptive: expected a mapping, got str 'mean'"),
        ("spectrum.levels=[0.0, x]", "spectrum.levels[1]: expected a number, got 'x'"),
    ],
)
def test_a_wrong_type_is_named(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("digits_lt_discl", [override])


def test_an_int_is_a_number_and_stays_a_float():
    cfg = load_config(
        "digits_lt_discl",
        ["train.lr=1", "spectrum.levels=[0, 0.5]", "curriculum.levels=[0]", "curriculum.adaptive_levels=[0.5]"],
    )
    assert type(cfg.train.lr) is float and all(type(x) is float for x in cfg.spectrum.levels)


def test_an_unknown_nested_key_suggests_the_closest(tmp_path):
    path = write(tmp_path, "extends: digits_lt_discl\nsweep: {space: {curriculum_fraction: {low: 0.2, hihg: 0.9}}}\n")
    with pytest.raises(
        ConfigError, match=re.escape("unknown key 'sweep.space.curriculum_fraction.hihg' (did you mean 'high'?)")
    ):
        load_config(path)
    with pytest.raises(
        ConfigError, match=re.escape("no key 'data.shot_groups.fwe' in the config (did you mean 'few'?)")
    ):
        load_config("digits_lt_discl", ["data.shot_groups.fwe=3"])
    with pytest.raises(ConfigError, match=re.escape("unknown key 'data.shot_groups.fwe' (did you mean 'few'?)")):
        load_config("digits_lt_discl", ["data.shot_groups={fwe: 3}"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.batch_size=0", "train.batch_size: must be greater than or equal to 1, got 0"),
        ("spectrum.seeds=0", "spectrum.seeds: must be greater than or equal to 1"),
        ("data.shot_groups={many: 3, few: 5}", "data.shot_groups: few (5) exceeds many (3)"),
        ("seeds=[1, 1]", "seeds: seed 1 given twice"),
        ("seeds=[]", "seeds: give at least one seed"),
        ("spectrum.levels=[0.5, 0.5]", "spectrum.levels: λ 0.5 given twice"),
        ("spectrum.levels=[0.5, 1.0]", "spectrum.levels: λ must be in [0, 1), got 1.0"),
        ("train.undersample=0", "train.undersample: must be greater than 0"),
        ("train.synthetic_scale=-1", "train.synthetic_scale: must be greater than 0"),
        ("hard.threshold=2", "hard.threshold: must be less than or equal to 1"),
        ("curriculum.adaptive.holdout=1.0", "curriculum.adaptive.holdout: give a count (an integer ≥ 1) or a fraction"),
        ("sweep.space.curriculum_fraction={low: 0.5, high: 2}", "sweep.space.curriculum_fraction: a fraction must lie"),
        ("sweep.space.synthetic_scale={low: 5, high: 1}", "sweep.space.synthetic_scale: need low <= high"),
        ("sweep.grace_period=5", "sweep.grace_period: must exceed sweep.heartbeat_interval (10)"),
        ("sweep.multi_objective=[val/acc]", "sweep.multi_objective: give at least two"),
        ("sweep.objective=test/acc", "never a test metric"),
        ("spectrum.prompt='a photo'", "spectrum.prompt: 'a photo' does not name the class"),
        ("spectrum.prompt='a {nme}'", "spectrum.prompt: 'a {nme}' is not a template over {name} alone"),
    ],
)
def test_out_of_range_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("digits_lt_discl", [override])


def test_methods_need_the_levels_they_draw_on():
    with pytest.raises(
        ConfigError,
        match=r"iwildcam_discl.yaml: method text_only needs λ 0 generated, but "
        r"spectrum.levels is \[0.5, 0.7, 0.9\]",
    ):
        load_config("iwildcam_discl", methods=["text_only"])
    with pytest.raises(ConfigError, match="method text_only needs λ 0"):  # listed in the YAML
        load_config("iwildcam_discl", ["methods=[plain, text_only]"])
    assert "text_only" in load_config("iwildcam_suite").methods  # its pool has λ 0
    load_config("iwildcam_discl", methods=["plain", "discl_adaptive", "fixed_guidance"])  # λ 0.5 is generated
    with pytest.raises(ConfigError, match=r"method fixed_guidance needs λ 0.2 generated"):
        load_config("digits_lt_discl", ["method_params.fixed_guidance={lam: 0.2}"], methods=["fixed_guidance"])
    with pytest.raises(ConfigError, match="method discl_random needs at least one curriculum λ level"):
        load_config("digits_lt_discl", ["curriculum.levels=[]"], methods=["discl_random"])
    with pytest.raises(ConfigError, match="method all_levels draws synthetic images during the curriculum only"):
        load_config("digits_lt_discl", ["train.curriculum_epochs=0"], methods=["all_levels"])
    # real-only methods need no level (plain_rebalanced over no level is the sweep's real-only control)
    load_config(
        "digits_lt_discl", ["curriculum.levels=[]", "train.curriculum_epochs=0"], methods=["plain", "plain_rebalanced"]
    )


def test_every_method_declares_its_levels():
    from harness.core.registry import get_method, list_methods

    cfg = load_config("digits_lt_discl")
    needed = {m: get_method(m)(**cfg.method_params.get(m, {})).levels_needed((0.1, 0.3)) for m in list_methods()}
    assert needed["text_only"] == (0.0,) and needed["fixed_guidance"] == (0.5,) and needed["plain"] == ()
    assert needed["discl_diverse_to_specific"] == needed["discl_adaptive"] == needed["plain_rebalanced"] == (0.1, 0.3)


def test_method_params_a_method_does_not_take_are_refused():
    with pytest.raises(ConfigError, match="method_params.fixed_guidance: .*'lamb'"):
        load_config("digits_lt_discl", ["method_params.fixed_guidance={lamb: 0.2}"])
    with pytest.raises(ConfigError, match=r"method_params.plain: Plain takes no parameters, got \['x'\]"):
        load_config("digits_lt_discl", ["method_params={plain: {x: 1}}"])


def test_validate_checks_a_changed_config_again():
    from harness.config import validate

    cfg = load_config("digits_lt_discl")
    cfg.train.schedule = "cosin"
    with pytest.raises(ConfigError, match="trial: train.schedule: 'cosin' is not one of cosine, constant"):
        validate(cfg, "trial")


def test_component_params_dataclasses_build_strictly():
    from harness.data.digits_lt import DigitsParams

    p = build(DigitsParams, {"imbalance_ratio": 1, "max_per_class": 50}, "data.params")
    assert isinstance(p, DigitsParams) and type(p.imbalance_ratio) is float and p.max_per_class == 50
    with pytest.raises(
        ConfigError, match=re.escape("unknown key 'data.params.max_per_clas' (did you mean 'max_per_class'?)")
    ):
        build(DigitsParams, {"max_per_clas": 50}, "data.params")
    with pytest.raises(ConfigError, match="data.params.max_per_class: expected an integer, got 50.0"):
        build(DigitsParams, {"max_per_class": 50.0}, "data.params")


def test_sections_still_take_their_fields_by_position():
    from harness.config import HardConfig, Range

    assert HardConfig("k_hardest", k=7).rule == "k_hardest" and Range(0.2, 0.9).high == 0.9
