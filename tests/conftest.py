import os
import subprocess
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def own_tracking_store(monkeypatch):
    """A user's MLFLOW_TRACKING_URI would win over each test's --workdir store; tests use their own."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def tiny_cfg():
    from harness.config import load_config

    return load_config("digits_lt_tiny")


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("workdir")


@pytest.fixture(scope="session")
def tiny_prepared(tiny_cfg, tiny_workdir):
    """The shared phases of the tiny digits experiment (base model, pool, scores), built once per session."""
    from harness.phases.pipeline import prepare

    return prepare(tiny_cfg, tiny_workdir, methods=["discl_diverse_to_specific"], progress=False)


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
