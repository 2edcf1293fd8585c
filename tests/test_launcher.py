"""Many runs at once: the launcher config, preemption at a step boundary, ``harness status`` (which never unpickles
a result file a record points at), job states from squeue through submitit, ``--launcher local`` against a
sequential run, and (slow) a real one-node SLURM cluster: a job array through submitit and a real
``scontrol requeue``. The SLURM tests need HARNESS_TEST_SLURM=1 (``.ci/slurm-up.sh`` starts the cluster and CI sets
it); they fail, not skip, when it is set and SLURM does not answer."""

import contextlib
import io
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from processes import finish, harness

from harness.cli import main
from harness.config import ConfigError, OptimConfig, load_config
from harness.data.base import TensorImages
from harness.engine import preempt
from harness.engine.train import Part, Trainer
from harness.models.base import HarnessModel
from harness.runs.paths import run_config_hash

TINY = ["--experiment", "digits_lt_tiny", "--quiet"]
RUNS = ["-m", "plain", "-m", "discl_diverse_to_specific", "--seed", "0", "--seed", "1"]
PAIRS = [(m, s) for m in ("plain", "discl_diverse_to_specific") for s in (0, 1)]


def store(wd: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")


def runs_of(wd: Path, experiment: str = "digits_lt_tiny") -> dict:
    c = store(wd)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id]) if exp else []
    return {(r.data.tags["method"], int(r.data.tags["seed"])): r for r in runs}


def test_launcher_section_is_strict_and_left_out_of_run_hashes():
    cfg = load_config("digits_lt_tiny", ["launcher.partition=gpu", "launcher.sbatch={constraint: a100}"])
    assert cfg.launcher.partition == "gpu" and cfg.launcher.sbatch == {"constraint": "a100"}
    base = load_config("digits_lt_tiny")
    assert run_config_hash(cfg, "plain") == run_config_hash(base, "plain"), "placement does not change a run"
    with pytest.raises(ConfigError, match="launcher.partiton"):
        load_config("digits_lt_tiny", ["launcher.partiton=gpu"])
    with pytest.raises(ConfigError, match="launcher.gpus_per_job"):
        load_config("digits_lt_tiny", ["launcher.gpus_per_job=-1"])


class SignalAt(HarnessModel, torch.nn.Module):
    """A linear classifier that sends this process SIGUSR1 during its ``at``-th forward pass."""

    def __init__(self, at: int):
        super().__init__()
        self.fc, self.calls, self.at = torch.nn.Linear(4, 3), 0, at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return self.fc(x.flatten(1))


def tiny_trainer(at: int) -> tuple[Trainer, list[Part]]:
    images = TensorImages(torch.rand(40, 1, 2, 2), np.arange(40) % 3, [str(i) for i in range(40)])
    trainer = Trainer(SignalAt(at), OptimConfig(batch_size=4, precision="fp32"), 1, None, 0, torch.device("cpu"))
    return trainer, [Part(images, np.arange(40))]


@pytest.fixture
def handlers():
    old = {name: signal.getsignal(getattr(signal, name)) for name in preempt.SIGNALS}
    preempt.install()
    yield
    preempt.clear()
    for name, h in old.items():
        signal.signal(getattr(signal, name), h)


def test_a_signal_during_training_stops_at_the_next_step_boundary(handlers):
    trainer, parts = tiny_trainer(at=3)
    with preempt.deferred(), pytest.raises(preempt.Preempted, match="SIGUSR1"):
        trainer.train_epoch(parts, 0)
    assert trainer.step == 3, "the step in progress completes; no further step starts"
    preempt.clear()
    trainer, parts = tiny_trainer(at=3)
    with pytest.raises(preempt.Preempted):  # outside a training loop's deferral: at once, inside the forward pass
        trainer.train_epoch(parts, 0)
    assert trainer.step == 2


def test_status_of_an_experiment_nothing_ran_yet(tmp_path, capsys):
    code = main(["status", *TINY, *RUNS, "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 not started" in out
    assert out.count("not started") == 5  # the count line and one row per (method, seed)


def test_jobs_and_no_wait_need_a_launcher(tmp_path, capsys):
    code = main(["run", *TINY, "--jobs", "2", "--workdir", str(tmp_path)])
    assert code == 2 and "--launcher" in capsys.readouterr().err


# --------------------------------------------------------------------------- real runs (slow)


@pytest.fixture(scope="module")
def reference(tiny_runs):
    """The four runs one after another in one process (the session's ``tiny_runs``, at one torch thread as every
    process here): (method, seed) → test metrics, and the workdir."""
    runs = runs_of(tiny_runs)
    assert set(runs) == set(PAIRS)
    return {k: {m: v for m, v in r.data.metrics.items() if m.startswith("test")} for k, r in runs.items()}, tiny_runs


def warm(seq_wd: Path, wd: Path) -> Path:
    """``wd`` with the reference's shared phases (base model, generator, judge, pool, scores) already built, not its
    runs: each test starts its runs from the same caches instead of building them again."""
    shutil.copytree(seq_wd / "cache", wd / "cache", ignore=shutil.ignore_patterns("runs"), copy_function=os.link)
    return wd


def in_process(*argv: str) -> tuple[int, str]:
    """``harness ARGV`` in this process (one torch thread, as the processes above): exit status and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def same_metrics(runs: dict, expected: dict) -> None:
    for key, metrics in expected.items():
        assert metrics, key
        got = runs[key].data.metrics
        for name, value in metrics.items():
            assert got[name] == pytest.approx(value, abs=1e-12), (key, name)


@pytest.mark.slow
@pytest.mark.timeout(300)  # several runs in processes
def test_local_launcher_two_jobs_equals_sequential(reference, launching, tmp_path):
    expected, seq_wd = reference
    warm(seq_wd, tmp_path)
    # two of the reference's runs (another method and another seed each) as two jobs at once
    runs2 = ["-m", "plain", "-m", "discl_diverse_to_specific", "--seed", "1"]
    code, out = in_process("run", *TINY, *runs2, "--workdir", str(tmp_path), "--launcher", "local", "--jobs", "2")
    assert code == 0, out
    assert "2 done, 0 running, 0 pending, 0 failed" in out
    runs = runs_of(tmp_path)
    pairs = {("plain", 1), ("discl_diverse_to_specific", 1)}
    assert set(runs) == pairs and all(r.info.status == "FINISHED" for r in runs.values())
    assert {r.data.tags["launcher"] for r in runs.values()} == {"local"}
    assert len({r.data.tags["launcher.job_id"] for r in runs.values()}) == 2, "one process per run"
    same_metrics(runs, {k: expected[k] for k in pairs})
    code, out = in_process("status", *TINY, *runs2, "--workdir", str(tmp_path))
    assert code == 0 and "2 finished" in out, out


@pytest.mark.slow
@pytest.mark.timeout(300)  # several runs in processes
def test_sigterm_mid_training_leaves_a_resumable_run_that_ends_as_uninterrupted(reference, tmp_path):
    expected, seq_wd = reference
    warm(seq_wd, tmp_path)
    args = ["run", *TINY, "-m", "discl_diverse_to_specific", "--seed", "1", "--workdir", str(tmp_path)]
    proc = harness(*args)
    deadline = time.time() + 240
    while not any((tmp_path / "cache" / "runs").glob("*/checkpoint.pt")):  # after the first epoch's checkpoint
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc)
    assert code == 143 and "SIGTERM" in out, out
    (run,) = runs_of(tmp_path).values()
    assert run.info.status == "KILLED" and "step boundary" in run.data.tags["launcher.preempted"]
    code, out = in_process(*args)  # the resume, in this process: the signal is what needed a process of its own
    assert code == 0, out
    runs = runs_of(tmp_path)
    assert len(runs) == 1 and runs[("discl_diverse_to_specific", 1)].info.run_id == run.info.run_id
    assert runs[("discl_diverse_to_specific", 1)].info.status == "FINISHED"
    same_metrics(runs, {("discl_diverse_to_specific", 1): expected[("discl_diverse_to_specific", 1)]})


# --------------------------------------------------------------------------- SLURM (slow; HARNESS_TEST_SLURM=1)


@pytest.mark.slow
@pytest.mark.timeout(300)  # several runs in processes
def test_slurm_job_array_runs_each_method_and_seed_as_its_own_job(slurm, reference, launching, tmp_path):
    expected, seq_wd = reference
    warm(seq_wd, tmp_path)
    # two of the reference's runs (another method and another seed each): one round of array tasks on 2 CPUs
    runs2 = ["-m", "plain", "-m", "discl_diverse_to_specific", "--seed", "1"]
    code, out = in_process("run", *TINY, *runs2, "--workdir", str(tmp_path), "--launcher", "slurm")
    assert code == 0, out
    assert "runs: 2 done, 0 running, 0 pending, 0 failed" in out
    runs = runs_of(tmp_path)
    pairs = {("plain", 1), ("discl_diverse_to_specific", 1)}
    assert set(runs) == pairs and all(r.info.status == "FINISHED" for r in runs.values())
    assert {r.data.tags["launcher"] for r in runs.values()} == {"slurm"}
    ids = {r.data.tags["launcher.job_id"] for r in runs.values()}
    assert len(ids) == 2 and all("_" in i for i in ids), f"one array task each: {ids}"
    same_metrics(runs, {k: expected[k] for k in pairs})
    code, out = in_process("status", *TINY, *runs2, "--workdir", str(tmp_path))
    assert code == 0 and "2 finished" in out and all(i in out for i in ids), out


@pytest.mark.slow
@pytest.mark.timeout(300)  # several runs in processes
def test_slurm_requeue_of_a_running_job_resumes_to_the_same_metrics(slurm, reference, launching, tmp_path):
    """``scontrol requeue`` on the running job: the run stops at a step boundary (SIGTERM), SLURM starts the job
    again, and it resumes the same MLflow run from its last epoch checkpoint to the uninterrupted result (a
    sequential ``--force`` rerun in the same workdir)."""
    _, seq_wd = reference
    wd = warm(seq_wd, tmp_path / "wd")
    # 15 epochs (~0.15 s each): the requeue lands around epoch 3, so a dozen epochs are left to resume
    longer = ["--set", "train.epochs=15", "-m", "discl_diverse_to_specific", "--seed", "0", "--workdir", str(wd)]
    code, out = in_process("run", *TINY, *longer, "--launcher", "slurm", "--no-wait")
    assert code == 0, out
    job = out.split("runs as ")[1].split(";")[0].strip()
    c, deadline = store(wd), time.time() + 400
    while True:  # requeue once the run has logged two epochs
        runs = runs_of(wd)
        run = runs.get(("discl_diverse_to_specific", 0))
        if run is not None and len(c.get_metric_history(run.info.run_id, "train/loss")) >= 2:
            break
        assert time.time() < deadline, "the job never got to its second epoch"
        time.sleep(0.2)
    assert run.info.status == "RUNNING"
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
    while "PENDING" not in queue_state(job):
        assert time.time() < deadline
        time.sleep(0.5)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)  # skip SLURM's requeue delay
    while runs_of(wd)[("discl_diverse_to_specific", 0)].info.status != "FINISHED":
        assert time.time() < deadline + 300, "the requeued job did not finish"
        time.sleep(1)
    log = (wd / "launcher" / "digits_lt_tiny" / "logs" / f"{job}_0_log.err").read_text()
    assert "step boundary" in log and "resuming discl_diverse_to_specific seed 0 at epoch" in log, log[-3000:]
    requeued = runs_of(wd)[("discl_diverse_to_specific", 0)]
    assert requeued.info.run_id == run.info.run_id, "the requeued job continues the same MLflow run"
    steps = sorted(m.step for m in c.get_metric_history(run.info.run_id, "train/loss"))
    assert steps == list(range(15)), "each epoch logged once"
    code, out = in_process("run", *TINY, *longer, "--force")  # the same run uninterrupted, in this process
    assert code == 0, out
    fresh = [r for r in runs_of_all(wd) if r.info.run_id != run.info.run_id]
    assert len(fresh) == 1
    for name, value in fresh[0].data.metrics.items():
        if name.startswith("test"):
            assert requeued.data.metrics[name] == pytest.approx(value, abs=1e-12), name


def queue_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout


def runs_of_all(wd: Path) -> list:
    c = store(wd)
    return c.search_runs([c.get_experiment_by_name("digits_lt_tiny").experiment_id])


@pytest.mark.slow
@pytest.mark.timeout(300)  # several runs in processes
def test_slurm_sweep_workers_run_as_an_array(slurm, reference, launching, tmp_path):
    _, seq_wd = reference
    wd = warm(seq_wd, tmp_path / "wd")
    fast = ["--set", "train.epochs=2", "--set", "train.curriculum_epochs=2", "--set", "sweep.pruner=none"]
    fast += ["--set", "tracking.log_model=never"]  # it counts trials and jobs, not models
    journal = f"journal:{tmp_path / 'optuna.journal'}"
    args = ["sweep", *TINY, *fast, "--trials", "3", "--workers", "2", "--storage", journal, "--workdir", str(wd)]
    code, out = in_process(*args, "--launcher", "slurm")
    assert code == 0, out
    assert "runs: 2 done, 0 running, 0 pending, 0 failed" in out and "best trial" in out, out
    trials = [r for r in runs_of_all(wd) if r.data.tags.get("sweep") == "digits_lt_tiny-sweep"]
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    assert {r.data.tags["launcher"] for r in trials} == {"slurm"}
    assert all("_" in r.data.tags["launcher.job_id"] for r in trials), "array tasks"


def test_each_local_job_gets_one_gpu_or_its_share_of_the_cores(monkeypatch):
    from harness.launch.local import cpu_slots, slot_env

    env, cores = slot_env(3, 8, gpus=8)
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and cores is None and env["HARNESS_LAUNCHER"] == "local"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert cpu_slots(4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    env, cores = slot_env(1, 4, gpus=0)
    assert cores == [4, 5, 6, 7] and env["OMP_NUM_THREADS"] == "4" and env["CUDA_VISIBLE_DEVICES"] == ""


def test_launcher_tags_name_the_slurm_array_task_or_the_process(monkeypatch):
    monkeypatch.setenv("HARNESS_LAUNCHER", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "107")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert preempt.launcher_tags() == {"launcher": "slurm", "launcher.job_id": "100_7"}
    monkeypatch.delenv("HARNESS_LAUNCHER")
    assert preempt.launcher_tags() == {"launcher": "none", "launcher.job_id": str(os.getpid())}


def test_a_report_does_not_call_placement_a_differing_setting():
    from types import SimpleNamespace

    import pandas as pd

    from reports import differing_settings

    params = pd.DataFrame({"launcher.partition": ["a", "b"], "train.lr": ["0.1", "0.1"], "seed": ["0", "1"]})
    assert differing_settings(SimpleNamespace(params=params)) == []
    params["train.lr"] = ["0.1", "0.2"]
    assert differing_settings(SimpleNamespace(params=params)) == ["train.lr"]


# --------------------------------------------------------------------------- job states, asked of submitit


def test_squeue_lines_read_as_submitit_job_states():
    from harness.launch.job_state import SqueueWatcher

    watcher = SqueueWatcher()
    for job in ("12_0", "12_1", "13"):
        watcher.register_job(job)
    command = watcher._make_command()
    assert command[0] == "squeue" and sorted(command[-1].split(",")) == ["12", "12", "13"], command
    info = watcher.read_info(b"12_0|RUNNING\n12_[1-2]|PENDING\n13|CANCELLED by 0\n")
    assert {k: v["State"] for k, v in info.items()} == {
        "12_0": "RUNNING",
        "12_1": "PENDING",
        "12_2": "PENDING",
        "13": "CANCELLED by 0",
    }


def fake_squeue(bin_dir: Path, lines: str) -> None:
    """An ``squeue`` on PATH that prints ``lines`` whatever it is asked."""
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    (bin_dir / "squeue").chmod(0o755)


class Crafted:
    """A result file a crafted record could point at: unpickling it writes ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "ran"))


def test_job_states_map_the_queue_then_the_result_files(tmp_path, monkeypatch):
    import pickle

    from harness.launch.job_state import job_states

    fake_squeue(tmp_path / "bin", "12_0|RUNNING\\n12_1|REQUEUED\\n13|COMPLETED\\n14|TIMEOUT\\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "15_0_result.pkl").write_bytes(pickle.dumps(("success", {"added": 3})))
    (folder / "16_0_result.pkl").write_bytes(pickle.dumps(("error", "Traceback ...")))
    jobs = dict.fromkeys(["12_0", "12_1", "13", "14", "15", "16", "17"], folder)
    queue = {"12_0": "running", "12_1": "pending", "13": "done", "14": "failed"}
    assert job_states(jobs, read_results=True) == {**queue, "15": "done", "16": "failed"}, "17: neither"
    assert job_states(jobs) == {**queue, "15": "ended", "16": "ended"}, "without read_results no result is read"
    ran = tmp_path / "ran"
    (folder / "18_0_result.pkl").write_bytes(pickle.dumps(("success", Crafted(ran))))
    assert job_states({"18": folder}) == {"18": "ended"} and not ran.exists()


def test_status_never_unpickles_a_result_file_a_record_points_at(tmp_path, monkeypatch):
    import json
    import pickle

    from harness.launch.status import shared_phases_line

    fake_squeue(tmp_path / "bin", "")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    folder, ran = tmp_path / "elsewhere", tmp_path / "ran"
    folder.mkdir()
    (folder / "21_0_result.pkl").write_bytes(pickle.dumps(("success", Crafted(ran))))
    record = {"launcher": "slurm", "folder": str(folder), "runs": []}
    record["phases"] = [{"name": "base", "job_id": "21"}, {"name": "merge", "job_id": "22"}]
    (tmp_path / "launcher" / "digits_lt_tiny").mkdir(parents=True)
    (tmp_path / "launcher" / "digits_lt_tiny" / "x.json").write_text(json.dumps(record))
    assert shared_phases_line(tmp_path, load_config("digits_lt_tiny")) == "base 21: ended; merge 22: unknown"
    assert not ran.exists(), "a crafted result file ran code in harness status"
