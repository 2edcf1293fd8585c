"""Session fixtures: the tiny config, one warm workdir with digits_lt_tiny's shared phases built once, hard-linked
copies of it for the tests that write, and the SLURM cluster check."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from quick import DIGITS_GENERATION, as_sets
from workdirs import INLT_COUNTS, TINY_RUNS, copy_workdir, inlt_overrides, iwildcam_overrides

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# one torch thread, as in the processes tests start (tests/processes.py): runs in this process and in those repeat
# each other exactly, and pytest-xdist workers share the cores
torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The slow tests first, so that under pytest-xdist (`-n 2 --dist loadgroup`) the quick ones fill the workers'
    last minutes instead of one long test running alone at the end. Tests that would fight over one resource take
    turns on one worker: the SLURM tests over the one-node cluster's 2 CPUs (two array rounds at once would each wait
    for the other), the sweeps of four worker processes over the machine's cores."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order within each part
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif item.name.startswith("test_four_workers"):
            item.add_marker(pytest.mark.xdist_group("four-workers"))


@pytest.fixture(autouse=True)
def own_tracking_store(monkeypatch):
    """A user's MLFLOW_TRACKING_URI would win over each test's --workdir store; tests use their own."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def launching(monkeypatch):
    """A launcher driven from the test's process (what the launcher tests are about is the jobs it starts, each a
    process of its own): its jobs inherit one torch thread, as the runs they are compared with had, and unbuffered
    output, so a job's log holds what it printed before a kill; a SLURM launcher polls squeue twice a second, so a
    test waits for its jobs, not for a poll."""
    from harness.launch import slurm

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    monkeypatch.setattr(slurm, "POLL_S", 0.5)


@pytest.fixture(scope="session")
def tiny_cfg():
    from harness.config import load_config

    return load_config("digits_lt_tiny")


def shared(tmp_path_factory, name: str) -> tuple[Path, FileLock]:
    """A folder every pytest-xdist worker of this session shares (the session's own under a single process), and
    the lock under which the first worker to get there builds it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-of-USER/pytest-N: the workers' base temp folders sit in it
    return root / name, FileLock(str(root / f"{name}.lock"))


@pytest.fixture(scope="session")
def warm_workdir(tmp_path_factory) -> Path:
    """The session's warm workdir: ``tiny_prepared`` builds digits_lt_tiny's shared phases here, once for all
    pytest-xdist workers. Read only: a test that writes takes a copy (``cached_workdir``)."""
    path, _ = shared(tmp_path_factory, "warm")
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_prepared(tiny_cfg, warm_workdir, tmp_path_factory):
    """The shared phases of the tiny digits experiment (base model, generator, judge, pool, scores), built once per
    session in the warm workdir (a second worker loads them from its caches)."""
    from harness.phases.pipeline import prepare

    _, building = shared(tmp_path_factory, "warm")
    with building:
        return prepare(tiny_cfg, warm_workdir, methods=["discl_diverse_to_specific"], progress=False)


@pytest.fixture
def cached_workdir(tiny_prepared, warm_workdir, tmp_path) -> Path:
    """This test's own workdir holding the warm caches (hard links): a `harness run` of digits_lt_tiny in it trains
    only its runs."""
    return copy_workdir(warm_workdir, tmp_path / "wd")


@pytest.fixture(scope="session")
def tiny_runs(tiny_prepared, warm_workdir, tmp_path_factory) -> Path:
    """A copy of the warm workdir in which `harness run` finished plain and discl_diverse_to_specific on seeds 0 and 1
    of digits_lt_tiny (one MLflow store), once for all pytest-xdist workers. Read only: a test that writes copies it
    with ``copy_workdir``."""
    from harness.cli import main

    wd, building = shared(tmp_path_factory, "runs")
    with building:
        if not (wd / "finished").exists():
            shutil.rmtree(wd, ignore_errors=True)  # a worker that died while building it
            copy_workdir(warm_workdir, wd)
            assert main(["run", "-e", "digits_lt_tiny", "--workdir", str(wd), "--quiet", *TINY_RUNS]) == 0
            (wd / "finished").touch()
    return wd


@pytest.fixture(scope="session")
def one_process_pool(tmp_path_factory) -> Path:
    """A workdir in which one process (this one) ran ``harness generate`` of digits_lt_tiny at ``DIGITS_GENERATION``
    from nothing, once for all pytest-xdist workers: what the sharded generations (torchrun-style ranks, a SLURM
    array) must equal. Read only: a test copies its base model, generator and judge."""
    from harness.cli import main

    wd, building = shared(tmp_path_factory, "one_process_pool")
    with building:
        if not (wd / "finished").exists():
            shutil.rmtree(wd, ignore_errors=True)  # a worker that died while building it
            argv = ["generate", "--experiment", "digits_lt_tiny", "--workdir", str(wd), "--quiet"]
            assert main([*argv, *as_sets(DIGITS_GENERATION)]) == 0
            (wd / "finished").touch()
    return wd


@pytest.fixture(scope="session")
def imagenet_lt_tiny_runs(tmp_path_factory) -> tuple[Path, Path]:
    """``imagenet_lt_discl_tiny`` on a fake ImageNet-LT tree (tests/fakes.py, counts ``INLT_COUNTS``) run cold in this
    process, plain and discl_diverse_to_specific (``INLT_RUNS``), once for all pytest-xdist workers: the tiny random
    SDXL img2img, the CLIP filter and ResNet-10 through the real loaders. Returns (data root, workdir); read only."""
    from fakes import write_fake_imagenet_lt

    from harness.config import load_config
    from harness.runs.runner import run_experiment

    folder, building = shared(tmp_path_factory, "imagenet_lt")
    root, wd = folder / "data", folder / "work"
    with building:
        if not (folder / "finished").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that died while building it
            write_fake_imagenet_lt(root, counts=INLT_COUNTS)
            run_experiment(load_config("imagenet_lt_discl_tiny", inlt_overrides(root)), wd, progress=False)
            (folder / "finished").touch()
    return root, wd


@pytest.fixture(scope="session")
def iwildcam_tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """``iwildcam_discl_tiny``'s discl_adaptive on seed 0 on a fake iWildCam copy (tests/fakes.py), run cold in this
    process once for all pytest-xdist workers: the tiny random SDXL img2img and FLYP-CLIP through wilds' layout.
    Returns (data root, workdir); read only."""
    from fakes import write_fake_iwildcam

    from harness.cli import main

    folder, building = shared(tmp_path_factory, "iwildcam")
    root, wd = folder / "data", folder / "work"
    with building:
        if not (folder / "finished").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that died while building it
            write_fake_iwildcam(root, n_per_split=8, num_classes=4, seed=1)
            argv = ["run", "-e", "iwildcam_discl_tiny", "-m", "discl_adaptive", "--workdir", str(wd), "--quiet"]
            assert main([*argv, *as_sets(iwildcam_overrides(root))]) == 0
            (folder / "finished").touch()
    return root, wd


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
