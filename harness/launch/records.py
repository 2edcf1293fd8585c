"""What a launcher submitted: its (method, seed) tasks and shared-phase jobs, the JSON record each submission leaves
under ``WORKDIR/launcher/EXPERIMENT/`` (read back by ``harness status``), and the one-line progress of both."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError

from harness.config import explain
from harness.core.io import read_json, write_json

log = logging.getLogger("harness")


@dataclass
class Task:
    """One (method, seed) run the launcher starts."""

    method: str
    seed: int
    config_hash: str
    job_id: str = ""
    state: str = "pending"  # pending | running | done | failed


@dataclass
class Phase:
    """One SLURM job of the shared phases: ``base``, ``generate`` (one per shard, ``rank`` of ``world``) or
    ``merge``."""

    name: str
    job_id: str
    rank: int = 0
    world: int = 1
    state: str = "pending"


@dataclass
class Submission:
    """One ``harness run --launcher KIND`` (or SLURM sweep): its tasks, its shared-phase jobs, where their logs go."""

    launcher: str
    experiment: str
    tasks: list[Task]
    submitted_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    phases: list[Phase] = field(default_factory=list)
    folder: str = ""


def records_dir(workdir: Path, experiment: str) -> Path:
    return workdir / "launcher" / experiment


def write_record(workdir: Path, sub: Submission) -> Path:
    """A new record of ``sub`` (its phases and runs with their job ids); returns its path."""
    stamp = sub.submitted_at.replace(":", "").replace("-", "")
    path = records_dir(workdir, sub.experiment) / f"{stamp}-{sub.launcher}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        path,
        {
            "launcher": sub.launcher,
            "experiment": sub.experiment,
            "submitted_at": sub.submitted_at,
            "phases": [{"name": p.name, "job_id": p.job_id, "rank": p.rank, "world": p.world} for p in sub.phases],
            "folder": sub.folder,
            "runs": run_entries(sub),
        },
    )
    return path


def update_record(path: Path, sub: Submission) -> None:
    """The record at ``path`` with the runs' job ids as they are now (a local run's process id once it starts)."""
    old = read_json(path)
    old["runs"] = run_entries(sub)
    write_json(path, old)


def run_entries(sub: Submission) -> list[dict]:
    return [{"method": t.method, "seed": t.seed, "config_hash": t.config_hash, "job_id": t.job_id} for t in sub.tasks]


# a SLURM job (12), an array task (12_3) or a local run's process id; "" before it is submitted
JobId = Annotated[str, Field(pattern=r"^(\d+(_\d+)?)?$", max_length=40)]


class RecordedRun(BaseModel):
    method: str
    seed: int
    config_hash: str
    job_id: JobId = ""


class RecordedPhase(BaseModel):
    name: Literal["base", "generate", "merge", "shared"]
    job_id: JobId
    rank: int = 0
    world: int = 1


class Record(BaseModel):
    """A launcher record as ``write_record`` writes it; any other file in the folder is not one."""

    launcher: Literal["local", "slurm"]
    experiment: str = ""
    submitted_at: str = ""
    phases: list[RecordedPhase] = []
    folder: str = ""
    runs: list[RecordedRun] = []


def read_records(workdir: Path, experiment: str) -> list[dict]:
    """Every submission recorded for ``experiment``, oldest first. The workdir may be shared: a file that is not a
    record as ``write_record`` writes it (invalid JSON, wrong fields, a job id that is not one) is left out, with a
    warning naming it."""
    folder = records_dir(workdir, experiment)
    records = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            records.append(Record.model_validate(read_json(path)).model_dump())
        except ValidationError as e:
            left_out(path, explain(e, Record))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            left_out(path, str(e))
    return records


def left_out(path: Path, why: str) -> None:
    log.warning("%s: not a launcher record, left out (%s); delete it if nothing of yours wrote it", path, why)


def recorded_phases(record: dict) -> list[Phase]:
    """The shared-phase jobs a record names (their state unknown yet)."""
    return [Phase(p["name"], p["job_id"], p.get("rank", 0), p.get("world", 1)) for p in record.get("phases", [])]


def progress_line(tasks: list[Task]) -> str:
    """``2 done, 1 running, 1 pending, 0 failed  (running: plain/s1=12_1; pending: plain/s2=12_2)``."""
    by = {k: [t for t in tasks if t.state == k] for k in ("done", "running", "pending", "failed")}
    parts = [f"{len(v)} {k}" for k, v in by.items()]
    ids = [
        f"{k}: " + " ".join(f"{t.method}/s{t.seed}" + (f"={t.job_id}" if t.job_id else "") for t in v)
        for k, v in by.items()
        if v and k != "done"
    ]
    return ", ".join(parts) + ("  (" + "; ".join(ids) + ")" if ids else "")


def phases_line(phases: list[Phase]) -> str:
    """``base 12: done; generate 2 of 3 done (13_0 done, 13_1 running, 13_2 pending); merge 14: pending``."""
    parts = [f"{p.name} {p.job_id}: {p.state}" for p in phases if p.name != "generate"]
    shards = [p for p in phases if p.name == "generate"]
    if shards:
        done = sum(p.state == "done" for p in shards)
        ids = ", ".join(f"{p.job_id} {p.state}" for p in shards)
        parts.insert(1, f"generate {done} of {len(shards)} done ({ids})")
    return "; ".join(parts)
