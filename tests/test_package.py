"""A non-editable install works: the wheel holds the experiments (as the package ``harness_experiments``), and the
installed ``harness`` lists and runs them from any directory; a user's experiment file passed by path still loads."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from quick import SHORT_TRAINING, as_sets
from workdirs import copy_workdir

ROOT = Path(__file__).resolve().parents[1]
JUNK = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "harness-workdir", ".*cache")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed with --no-deps into a folder of its own; the environment that
    puts it first and the current site-packages (for the dependencies) after it, with no .pth files processed
    (``python -S``), so the editable install of the checkout cannot answer."""
    tmp = tmp_path_factory.mktemp("package")
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=JUNK)  # setuptools builds in the source folder: keep the checkout clean
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", source], check=True)
    (wheel,) = (tmp / "dist").glob("discl_harness-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp / "site", wheel], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HARNESS_EXPERIMENTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp / "site"), sysconfig.get_paths()["purelib"]])
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return tmp / "site", env, elsewhere


def python(env, cwd, *args):
    done = subprocess.run([sys.executable, "-S", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow  # builds a wheel (the module's fixture)
def test_the_installed_harness_is_the_wheels(installed):
    site, env, elsewhere = installed
    out = python(
        env, elsewhere, "-c", "import harness, harness.config as c; print(harness.__file__, c.shipped_experiments())"
    )
    module, experiments = out.split()
    assert Path(module).is_relative_to(site) and Path(experiments) == site / "harness_experiments"


@pytest.mark.slow  # builds a wheel (the module's fixture)
def test_list_from_another_directory(installed):
    _, env, elsewhere = installed
    out = python(env, elsewhere, "-m", "harness.cli", "list")
    experiments = next(line for line in out.splitlines() if line.startswith("experiments:"))
    shipped = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
    assert experiments.split(":", 1)[1].strip().split(", ") == shipped
    assert "discl_diverse_to_specific" in out


@pytest.mark.slow  # builds a wheel (the module's fixture)
def test_a_user_file_by_path_extends_a_shipped_experiment(installed):
    _, env, elsewhere = installed
    (elsewhere / "mine.yaml").write_text("extends: digits_lt_tiny\ntrain: {epochs: 2, curriculum_epochs: 1}\n")
    code = "from harness.config import load_config; c = load_config('mine.yaml'); print(c.name, c.train.epochs)"
    assert python(env, elsewhere, "-c", code).split() == ["mine", "2"]


@pytest.mark.slow
def test_run_from_another_directory(installed, tiny_prepared, warm_workdir):
    """A run in a copy of the warm workdir: the installed harness finds the checkout's caches (the same keys) and
    trains only the run."""
    _, env, elsewhere = installed
    copy_workdir(warm_workdir, elsewhere / "wd")
    argv = ["-m", "harness.cli", "run", "-e", "digits_lt_tiny", "-m", "plain", "--workdir", "wd", "--quiet"]
    out = python(env, elsewhere, *argv, *as_sets(SHORT_TRAINING))
    assert "plain-seed0=" in out and (elsewhere / "wd" / "mlflow.db").is_file()
