"""Session fixtures: the tiny config, one warm workdir with digits_lt_tiny's shared phases built once, hard-linked
copies of it for the tests that write, and the SLURM cluster check."""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from workdirs import TINY_RUNS, copy_workdir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# one torch thread, as in the processes tests start (tests/processes.py): runs in this process and in those repeat
# each other exactly, and two pytest-xdist workers (`-n 2`) share 2 cores
torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (`-n 2 --dist loadgroup`), tests that would fight over one resource take turns on one
    worker: the SLURM tests over the one-node cluster's 2 CPUs (two array rounds at once would each wait for the
    other), the sweeps of four worker processes over the machine's cores."""
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif item.name.startswith("test_four_workers"):
            item.add_marker(pytest.mark.xdist_group("four-workers"))


@pytest.fixture(autouse=True)
def own_tracking_store(monkeypatch):
    """A user's MLFLOW_TRACKING_URI would win over each test's --workdir store; tests use their own."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def tiny_cfg():
    from harness.config import load_config

    return load_config("digits_lt_tiny")


@pytest.fixture(scope="session")
def warm_workdir(tmp_path_factory) -> Path:
    """The session's warm workdir: ``tiny_prepared`` builds digits_lt_tiny's shared phases here. Read only: a test
    that writes takes a copy (``cached_workdir``)."""
    return tmp_path_factory.mktemp("warm")


@pytest.fixture(scope="session")
def tiny_prepared(tiny_cfg, warm_workdir):
    """The shared phases of the tiny digits experiment (base model, generator, judge, pool, scores), built once per
    session in the warm workdir."""
    from harness.phases.pipeline import prepare

    return prepare(tiny_cfg, warm_workdir, methods=["discl_diverse_to_specific"], progress=False)


@pytest.fixture
def cached_workdir(tiny_prepared, warm_workdir, tmp_path) -> Path:
    """This test's own workdir holding the warm caches (hard links): a `harness run` of digits_lt_tiny in it trains
    only its runs."""
    return copy_workdir(warm_workdir, tmp_path / "wd")


@pytest.fixture(scope="session")
def tiny_runs(tiny_prepared, warm_workdir, tmp_path_factory) -> Path:
    """A copy of the warm workdir in which `harness run` finished plain and discl_diverse_to_specific on seeds 0 and 1
    of digits_lt_tiny (one MLflow store). Read only: a test that writes copies it with ``copy_workdir``."""
    from harness.cli import main

    wd = copy_workdir(warm_workdir, tmp_path_factory.mktemp("runs"))
    assert main(["run", "-e", "digits_lt_tiny", "--workdir", str(wd), "--quiet", *TINY_RUNS]) == 0
    return wd


@pytest.fixture(scope="session")
def slurm():
    """A reachable SLURM cluster: skip without HARNESS_TEST_SLURM, fail with it when SLURM does not answer."""
    if not os.environ.get("HARNESS_TEST_SLURM"):
        pytest.skip("HARNESS_TEST_SLURM is not set (.ci/slurm-up.sh starts a one-node cluster)")
    try:
        out = subprocess.run(["srun", "-t", "1", "hostname"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.fail(f"HARNESS_TEST_SLURM is set but srun does not run: {e}")
    assert out.returncode == 0, f"HARNESS_TEST_SLURM is set but SLURM does not answer: {out.stderr}"
