"""Faults injected for real, in processes of their own on a copy of the warm workdir: SIGKILL during generation (a
second process, waiting on the pool's lock, completes it to the very pool an uninterrupted build made) and during
training (the rerun resumes the same MLflow run to the same metrics)."""

import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from processes import finish, harness, kill_when
from workdirs import copy_workdir

from harness.cli import main
from harness.core.io import read_json
from harness.phases.pipeline import fine_tune
from harness.phases.spectrum import read_manifest

TINY = ["--experiment", "digits_lt_tiny", "--quiet"]


def wait_for(condition, proc, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the process ended first"
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def same_threads() -> dict:
    """The pytest process's torch thread count, so a process's numbers equal this one's to the last digit."""
    return {"OMP_NUM_THREADS": str(torch.get_num_threads())}


@pytest.mark.slow
def test_sigkill_during_generation_leaves_the_next_process_the_uninterrupted_pool(
    tiny_prepared, warm_workdir, tmp_path
):
    """The warm caches without the pool and its images: one process generates it one image a batch and is killed
    mid-way while a second waits on the pool's lock; the killed one published nothing as done, and the second
    completes the pool byte for byte as the session's uninterrupted build made it, no manifest row twice, no temp
    file taken for an image."""
    clean = tiny_prepared.pool_dir
    planned = len(read_manifest(clean))
    wd = copy_workdir(warm_workdir, tmp_path / "wd")
    for built in ("pool", "images"):  # the pool and the image store it links from
        shutil.rmtree(wd / "cache" / built)
    pool = wd / "cache" / "pool" / clean.name
    manifest = pool / "manifest.jsonl"
    first = harness("generate", *TINY, "--workdir", str(wd), "--set", "spectrum.batch_size=1")
    second = None
    try:
        wait_for(lambda: manifest.exists() and manifest.stat().st_size > 0, first)  # generating now
        second = harness("generate", *TINY, "--workdir", str(wd))  # waits on the pool's lock
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        partial = len(read_manifest(pool))
        assert 0 < partial < planned and not (pool / "complete.json").exists()  # nothing published as done
        code, out = finish(second)
        assert code == 0, out[-3000:]  # it took the dead process's lock and generated the rest
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    a, b = read_manifest(pool), read_manifest(clean)
    assert len(a) == len(b) == a.key.nunique() == planned == read_json(pool / "complete.json")["images"]
    rows = sum(1 for line in manifest.read_text().splitlines() if line.strip().endswith("}"))
    assert rows == planned, "no manifest row is duplicated"
    assert not any(Path(f).name.startswith(".") for f in a.file)  # a killed writer's temp file is no entry
    for fa, fb in zip(a.sort_values("key").file, b.sort_values("key").file):
        assert (pool / fa).read_bytes() == (clean / fb).read_bytes()


@pytest.mark.slow
def test_sigkill_during_training_resumes_the_same_run_to_the_same_metrics(tiny_prepared, cached_workdir):
    wd = cached_workdir
    args = ["run", *TINY, "--workdir", str(wd), "--method", "discl_diverse_to_specific", "--seed", "0"]
    ckpts = wd / "cache" / "runs"
    proc = harness(*args, env=same_threads())
    assert kill_when(proc, lambda: any(ckpts.glob("*/checkpoint.pt"))), "killed after the first checkpoint"
    assert main(args) == 0  # the resume, in this process: the kill is what needed a process of its own
    client = MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits_lt_tiny").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", "the resumed run continues the same MLflow run"
    losses = sorted((m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "train/loss"))
    assert [step for step, _ in losses] == list(range(5)), "each epoch logged exactly once"
    reference = fine_tune(tiny_prepared, "discl_diverse_to_specific", seed=0, progress=False)  # never killed
    assert [loss for _, loss in losses] == pytest.approx([r["train/loss"] for r in reference.history], abs=1e-12)
    for key, value in reference.test_metrics.items():
        assert runs[0].data.metrics[key] == pytest.approx(value, abs=1e-12)
