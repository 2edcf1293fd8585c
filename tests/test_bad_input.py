"""Bad input: property tests of the split-file parser; corrupt and truncated images skipped, counted, or refused."""

from pathlib import Path

import pytest
from fakes import write_fake_imagenet_lt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config import load_config
from harness.data import load_dataset
from harness.data.base import DataError
from harness.data.imagenet_lt import inside_root, read_split
from harness.data.verify import drop_corrupt

segment = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.lists(segment, min_size=1, max_size=4), st.integers(-3, 10**6)), max_size=20))
def test_split_parser_accepts_exactly_the_safe_lines(tmp_path, entries):
    """Every line either parses to the same (path, label), or the file is refused with a DataError naming a line."""
    path = tmp_path / "split.txt"
    lines = [f"{'/'.join(parts)} {label}" for parts, label in entries]
    path.write_text("\n".join(lines) + "\n")
    safe = all(inside_root("/".join(parts)) and label >= 0 for parts, label in entries)
    try:
        rels, labels, numbers = read_split(path)
    except DataError as e:
        assert not safe and "line" in str(e) and "\n" not in str(e)
        return
    assert safe
    assert rels == ["/".join(parts) for parts, _ in entries]
    assert labels.tolist() == [label for _, label in entries]
    for rel in rels:  # nothing accepted can leave the root once joined
        resolved = (tmp_path / "root" / rel).resolve()
        assert resolved.is_relative_to((tmp_path / "root").resolve())


@pytest.mark.parametrize("rel", ["../etc/passwd", "/etc/passwd", "train/../../x.JPEG", "C:/x.JPEG", "a/../../b"])
def test_escaping_paths_are_refused(tmp_path, rel):
    path = tmp_path / "split.txt"
    path.write_text(f"train/n0/ok.JPEG 0\n{rel} 1\n")
    with pytest.raises(DataError, match="line 2.*escapes the data root"):
        read_split(path)


@pytest.fixture()
def imagenet_with_bad_images(tmp_path):
    root = write_fake_imagenet_lt(tmp_path / "imagenet", counts=(30, 25, 21, 10, 5), val_per_class=2, test_per_class=2)
    train = sorted((root / "train").rglob("*.JPEG"))
    truncated, garbage = train[3], train[7]
    truncated.write_bytes(truncated.read_bytes()[: len(truncated.read_bytes()) // 2])
    garbage.write_bytes(b"not an image at all")
    cfg = load_config("imagenet_lt_discl_tiny", [f"data.root={root}"])
    return cfg, {str(truncated), str(garbage)}, tmp_path / "cache"


def test_corrupt_images_are_skipped_and_listed(imagenet_with_bad_images):
    cfg, bad, cache = imagenet_with_bad_images
    data = load_dataset(cfg)
    n_train = len(data.train)
    data = drop_corrupt(data, max_fraction=0.1, cache_dir=cache, progress=False)
    dropped = {path for path, _ in data.corrupt.get("train", [])}
    assert dropped == bad
    assert len(data.train) == n_train - 2 and not bad & {str(p) for p in data.train.paths}
    assert all(reason for _, reason in data.corrupt["train"])
    again = drop_corrupt(load_dataset(cfg), max_fraction=0.1, cache_dir=cache, progress=False)  # cached scan
    assert {p for p, _ in again.corrupt["train"]} == bad


def test_too_many_corrupt_images_fail_with_a_list(imagenet_with_bad_images):
    cfg, bad, cache = imagenet_with_bad_images
    with pytest.raises(DataError, match=r"2 of \d+ train images are unreadable.*max_corrupt_fraction=0.001") as e:
        drop_corrupt(load_dataset(cfg), max_fraction=0.001, cache_dir=cache, progress=False)
    assert all(Path(p).name in str(e.value) for p in bad)


# --------------------------------------------------------------------------- settings refused before any data is read


@pytest.fixture()
def no_data_read(monkeypatch):
    """Reading a dataset fails the test: a refused config must stop before it."""
    import harness.phases.pipeline

    def read(cfg):
        raise AssertionError(f"dataset {cfg.data.name} read despite a bad config")

    monkeypatch.setattr(harness.phases.pipeline, "load_dataset", read)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("harness: error:")]
    assert "Traceback" not in err and len(errors) == 1 and err.splitlines()[-1] == errors[0]
    return errors[0]


@pytest.mark.parametrize(
    "experiment, override, expected",
    [
        ("digits_lt_discl", "train.schedule=cosin", "train.schedule: 'cosin' is not one of cosine, constant"),
        ("digits_lt_discl", "train.optimizer=adamm", "train.optimizer: 'adamm' is not one of adam, adamw, sgd"),
        ("digits_lt_tiny", "train.lr=fast", "train.lr: expected a number"),
        ("imagenet_lt_discl_tiny", "train.select_on=val/acc_fw", "'val/acc_fw'"),  # no data.root: refused before
        ("iwildcam_discl_tiny", "train.loss=balanced_softmax", "own loss"),  # a setting this model ignores
        ("no_such_experiment", None, "no experiment 'no_such_experiment'"),
    ],
)
def test_cli_refuses_a_bad_setting_with_exit_2_before_reading_data(
    experiment, override, expected, tmp_path, capsys, no_data_read
):
    """A typo in a choice, a number, a metric name or an experiment, or a setting the model ignores: one line naming
    the key (and the closest name, where there is one), exit 2, and nothing read or written."""
    from harness.cli import main

    sets = ["--set", override] if override else []
    code = main(["run", "-e", experiment, *sets, "--workdir", str(tmp_path / "work"), "--quiet"])
    line = one_error_line(capsys)
    assert code == 2 and expected in line
    if override:
        assert override.split("=")[0] in line
    if "select_on" in (override or ""):
        assert "did you mean val/acc_few" in line
    assert not (tmp_path / "work" / "cache").exists()


@pytest.mark.parametrize(
    "experiment, root, expected",
    [
        ("imagenet_lt", "no_imagenet", "harness: error: imagenet_lt:"),  # an experiment file of the user's
        ("iwildcam", "no_such_root", "harness: error: iwildcam:"),
        ("imagenet_lt_discl", None, "data.root"),  # a shipped paper experiment, no data.root given
        ("iwildcam_discl", None, "data.root"),
    ],
)
def test_cli_run_on_missing_data_exits_2_with_one_line(experiment, root, expected, tmp_path, capsys):
    """The data root is missing or not given: one line naming the dataset and the path, or data.root."""
    from harness.cli import main

    sets = []
    if root:
        path = tmp_path / f"{experiment}_missing.yaml"
        path.write_text(f"data: {{name: {experiment}, image_size: 16}}\nmethods: [plain]\n")
        experiment, sets = str(path), ["--set", f"data.root={tmp_path / root}"]
    code = main(["run", "--experiment", experiment, *sets, "--workdir", str(tmp_path / "work"), "--quiet"])
    line = one_error_line(capsys)  # MLflow may log its store creation first; the error is the one last line
    assert code == 2 and expected in line
    if root:
        assert line.startswith(expected) and str(tmp_path / root) in line


def test_cli_refuses_text_only_without_lambda_0_before_reading_data(tmp_path, capsys, no_data_read):
    from fakes import write_fake_iwildcam

    from harness.cli import main

    root = write_fake_iwildcam(tmp_path / "wilds")  # a copy whose data is fine
    code = main(
        [
            "run",
            "-e",
            "iwildcam_discl_tiny",
            "-m",
            "text_only",
            "--set",
            f"data.root={root}",
            "--workdir",
            str(tmp_path / "work"),
            "--quiet",
        ]
    )
    line = one_error_line(capsys)
    assert code == 2 and "method text_only needs λ 0 generated, but spectrum.levels is [0.5, 0.7, 0.9]" in line
    assert not (tmp_path / "work" / "cache").exists()


@pytest.mark.slow  # a fresh interpreter
def test_the_harness_process_exits_2_with_one_line_on_stderr(tmp_path):
    """``python -m harness.cli`` itself: exit status 2, nothing on stdout, the one line on stderr."""
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "-e",
            "digits_lt_discl",
            "--set",
            "train.schedule=cosin",
            "--workdir",
            str(tmp_path / "work"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and out.stdout == "" and len(lines) == 1 and lines[0].startswith("harness: error:")
    assert "train.schedule: 'cosin' is not one of cosine, constant" in lines[0]
