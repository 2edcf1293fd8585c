"""A separate package adds a method through the ``discl_harness.methods`` entry point: installed beside the harness,
it shows in `harness list` and `harness run` trains with it, without a line of the harness changed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the fast lane (-m "not slow") skips this file

PLUGIN = Path(__file__).resolve().parent / "plugin_example"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """The plugin pip-installed into a folder of its own, put on the path of the commands below."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "plugin"
    shutil.copytree(PLUGIN, source)  # setuptools builds in the source folder: keep the repository clean
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    assert (target / "discl_example_plugin").is_dir()
    path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def harness(env, *args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_plugin_method_is_listed(plugin_env, tmp_path):
    listed = harness(plugin_env, "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    methods = next(line for line in listed.stdout.splitlines() if line.startswith("methods:"))
    assert "middle_level" in methods and "discl_diverse_to_specific" in methods  # beside the built-ins
    without = harness({**os.environ}, "list", cwd=tmp_path)
    assert "middle_level" not in without.stdout  # it comes from the installed plugin, not from this repository


def test_plugin_method_runs(plugin_env, tmp_path):
    done = harness(
        plugin_env,
        "run",
        "-e",
        "digits_lt_tiny",
        "-m",
        "middle_level",
        "--workdir",
        str(tmp_path / "w"),
        "--quiet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from harness.config import load_config
    from harness.runs.tracking import client

    c = client(tmp_path / "w")
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], "tags.method = 'middle_level'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    lambdas = [
        m.value for m in sorted(c.get_metric_history(runs[0].info.run_id, "curriculum/lambda"), key=lambda m: m.step)
    ]
    cfg = load_config("digits_lt_tiny")
    levels = sorted(cfg.curriculum_levels)
    middle = levels[len(levels) // 2]
    curriculum, after = lambdas[: cfg.train.curriculum_epochs], lambdas[cfg.train.curriculum_epochs :]
    assert curriculum == pytest.approx([middle] * cfg.train.curriculum_epochs) and after == [1.0] * len(after)
