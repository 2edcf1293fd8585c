"""``harness status``: where each (method, seed) run of an experiment stands, from MLflow (tags method / seed /
config_hash, run status, last logged epoch) and the launcher's records (job ids of runs not started yet), with
the disk its cache folder uses."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.config import Config
from harness.launch.job_state import job_states
from harness.launch.records import phases_line, read_records, recorded_phases
from harness.runs.cleanup import folder_bytes
from harness.runs.paths import run_config_hash, run_dir
from harness.runs.search import search_tagged
from harness.runs.tracking import client

MLFLOW_STATES = {"FINISHED": "finished", "RUNNING": "running", "FAILED": "failed", "KILLED": "preempted"}


def last_epoch(c, run_id: str) -> int | None:
    steps = [m.step for m in c.get_metric_history(run_id, "train/loss")]
    return max(steps) if steps else None


def submitted_jobs(workdir: Path, cfg: Config) -> dict[tuple[str, int, str], tuple[str, str, str]]:
    """(method, seed, config hash) → (launcher, job id, submitit folder) of its latest submission."""
    out = {}
    for rec in read_records(workdir, cfg.name):
        kind, folder = rec["launcher"], rec.get("folder", "")
        for r in rec.get("runs", []):
            if r.get("job_id"):
                out[(r["method"], int(r["seed"]), r["config_hash"])] = (kind, r["job_id"], folder)
    return out


def queue_states(jobs: list[tuple[str, str, str]]) -> dict[str, str]:
    """The queue's state of the SLURM jobs among ``jobs`` (launcher, job id, folder), asked of submitit."""
    return job_states({job: folder for kind, job, folder in jobs if kind == "slurm"})


def status_frame(cfg: Config, workdir: Path, methods: list[str] | None = None, seeds: list[int] | None = None):
    """One row per (method, seed): state (finished / running / preempted / requeued / failed / pending / not started),
    launcher, job id, last logged epoch, MLflow run id, disk used by the run's cache folder (MB)."""
    c = client(workdir)
    exp = c.get_experiment_by_name(cfg.name)
    submitted = submitted_jobs(workdir, cfg)
    queued = queue_states(list(submitted.values()))
    rows = []
    for m in methods or cfg.methods:
        h = run_config_hash(cfg, m)
        for s in seeds or cfg.seeds:
            runs = (
                search_tagged(
                    c,
                    [exp.experiment_id],
                    {"method": m, "seed": s, "config_hash": h},
                    order_by=["attributes.start_time DESC"],
                )
                if exp is not None
                else []
            )
            finished = [r for r in runs if r.info.status == "FINISHED"]
            run = finished[0] if finished else runs[0] if runs else None
            kind, job, _ = submitted.get((m, s, h), ("", "", ""))
            row = {"method": m, "seed": s, "state": "not started", "launcher": kind, "job_id": job}
            if run is not None:
                tags = run.data.tags
                row |= {
                    "state": MLFLOW_STATES.get(run.info.status, run.info.status.lower()),
                    "launcher": tags.get("launcher", kind),
                    "job_id": tags.get("launcher.job_id", job),
                    "epoch": last_epoch(c, run.info.run_id),
                    "run_id": run.info.run_id,
                }
            elif job and queued.get(job) in ("pending", "running"):
                row["state"] = queued[job]
            if row["state"] in ("running", "preempted") and queued.get(job) == "pending":
                row["state"] = "requeued"  # its job waits in the queue to resume it
            row["disk_mb"] = round(folder_bytes(run_dir(workdir, cfg, m, s, h)) / 2**20, 1)
            rows.append(row)
    frame = pd.DataFrame(rows)
    if "epoch" in frame:
        frame["epoch"] = frame["epoch"].astype("Int64")
    return frame


def shared_phases_line(workdir: Path, cfg: Config) -> str | None:
    """The latest SLURM submission's shared-phase jobs and their states (``base 12: done; generate 2 of 3 done
    (...); merge 14: running``), or None when no SLURM submission recorded them."""
    recs = [r for r in read_records(workdir, cfg.name) if r.get("launcher") == "slurm" and r.get("phases")]
    if not recs:
        return None
    rec = recs[-1]
    phases = recorded_phases(rec)
    states = job_states(dict.fromkeys((p.job_id for p in phases), rec.get("folder", "")))  # never unpickles a result
    for p in phases:
        p.state = states.get(p.job_id, "unknown")
    return phases_line(phases)
