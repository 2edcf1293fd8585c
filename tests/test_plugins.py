"""A separate package adds a method through the ``discl_harness.methods`` entry point: installed beside the harness,
it shows in `harness list` and `harness run` trains with it, without a line of the harness changed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from processes import finish, harness

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


@pytest.mark.slow  # pip-installs the plugin
def test_plugin_method_is_listed(plugin_env, tmp_path):
    code, listed = finish(harness("list", env=plugin_env, cwd=tmp_path))
    assert code == 0, listed
    methods = next(line for line in listed.splitlines() if line.startswith("methods:"))
    assert "middle_level" in methods and "discl_diverse_to_specific" in methods  # beside the built-ins
    _, without = finish(harness("list", cwd=tmp_path))
    assert "middle_level" not in without  # it comes from the installed plugin, not from this repository


@pytest.mark.slow
def test_plugin_method_runs(plugin_env, cached_workdir, tmp_path):
    """A run of the plugin's method on the warm caches: it trains only its own run."""
    argv = ["run", "-e", "digits_lt_tiny", "-m", "middle_level", "--workdir", str(cached_workdir), "--quiet"]
    code, out = finish(harness(*argv, env=plugin_env, cwd=tmp_path))
    assert code == 0, out[-3000:]
    from harness.config import load_config
    from harness.runs.tracking import client

    c = client(cached_workdir)
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
