"""Where a (method, seed) run keeps its files: its key (what decides the run besides its seed) and its cache folder
``cache/runs/NAME-METHOD-seedS-HASH`` (training checkpoint, MLflow run ids)."""

from __future__ import annotations

from pathlib import Path

from harness.config import Config
from harness.config.keys import run_key
from harness.core import distributed as dist
from harness.core.workdir import cache_dir

RUN_IDS = "run_ids.json"  # in a run's cache folder: {tracking URI: MLflow run id}


def run_config_hash(cfg: Config, method: str) -> str:
    """What determines one run besides its seed (``harness.config.keys.run_key``, at this process's world size)."""
    return run_key(cfg, method, dist.world())


def run_dir(workdir: Path, cfg: Config, method: str, seed: int, config_hash: str) -> Path:
    """The run's cache folder: its checkpoint while it trains, the MLflow run it logs to."""
    return cache_dir(workdir) / "runs" / f"{cfg.name}-{method}-seed{seed}-{config_hash}"
