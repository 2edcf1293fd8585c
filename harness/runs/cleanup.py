"""Bounded disk and processes per run: what a finished run keeps, what it releases, and how much
disk it uses.

A run's cache folder (``cache/runs/NAME-METHOD-seedS-HASH``) holds ``checkpoint.pt`` while it trains (model,
optimizer state, RNG, history: what a killed run resumes from) and ``run_ids.json`` (its MLflow run per store).
Once the run is FINISHED in MLflow, the checkpoint goes: reuse goes through MLflow (a finished run is found by its
tags and skipped), and the selected model is MLflow's logged model. Where the model was not logged
(``tracking.log_model: never``, or over ``tracking.max_model_mb``) the selected weights alone stay, as
``selected.pt`` (a state dict), so they are not lost; optimizer state never stays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from harness.core.io import atomic_path, load_torch, read_json
from harness.runs.paths import RUN_IDS, run_config_hash, run_dir

log = logging.getLogger("harness")
CHECKPOINT = "checkpoint.pt"
SELECTED = "selected.pt"


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist); a hard link counts once per folder walk."""
    if not path.exists():
        return 0
    seen, total = set(), 0
    for f in [path] if path.is_file() else path.rglob("*"):
        if f.is_file() and not f.is_symlink():
            st = f.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def prune_finished_run(ckpt_dir: Path, model_logged: bool) -> dict[str, int]:
    """After a run is FINISHED: drop its training checkpoint (optimizer state and all), keeping the selected
    weights only when MLflow does not have them. Returns the folder's bytes ``before`` and ``after``."""
    before = folder_bytes(ckpt_dir)
    ckpt = ckpt_dir / CHECKPOINT
    if ckpt.exists():
        if not model_logged:
            saved = load_torch(ckpt, "delete it: its run is finished (the selected weights it held are lost)")
            state = saved["state"].get("best_state") or saved["trainer"]["model"]
            with atomic_path(ckpt_dir / SELECTED) as tmp:
                torch.save(state, tmp)
        ckpt.unlink()
    for stray in ckpt_dir.glob(f".{CHECKPOINT}.*.tmp"):  # a writer killed mid-save
        stray.unlink(missing_ok=True)
    after = folder_bytes(ckpt_dir)
    log.info("%s: finished, cache %.1f MB → %.1f MB", ckpt_dir.name, before / 2**20, after / 2**20)
    return {"before": before, "after": after}


def release_loaders(loaders: dict) -> int:
    """Shut down the kept evaluation loaders' workers and forget the loaders; returns how many were kept."""
    n = len(loaders)
    for loader in loaders.values():
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        if hasattr(loader, "_iterator"):
            loader._iterator = None
    loaders.clear()
    return n


def run_disk_usage(workdir: Path, cfg, method: str, seed: int) -> dict[str, int]:
    """Disk used by one (method, seed) run of ``cfg``: ``cache`` (its folder under cache/runs) and ``artifacts``
    (its MLflow artifacts under the workdir's artifact root, for every run id it remembers). Shared phases (base
    model, pool) are not counted: every run of the experiment shares them."""
    ckpt_dir = run_dir(workdir, cfg, method, seed, run_config_hash(cfg, method))
    ids = read_json(ckpt_dir / RUN_IDS) if (ckpt_dir / RUN_IDS).exists() else {}
    artifacts = 0
    for run_id in set(ids.values()):
        artifacts += sum(folder_bytes(p) for p in (Path(workdir) / "mlartifacts").glob(f"*/{run_id}"))
    cache = folder_bytes(ckpt_dir)
    return {"cache": cache, "artifacts": artifacts, "total": cache + artifacts}
