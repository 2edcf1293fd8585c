"""Faults injected for real: SIGKILL during generation and training, two runs at once on one workdir."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from harness.config import load_config
from harness.config.keys import pool_key
from harness.phases.pipeline import fine_tune, prepare
from harness.phases.spectrum import plan_spectrum, read_manifest


def planned_images(experiment: str) -> int:
    """How many images the experiment's spectrum plans: hard sources × λ levels × seeds (few_shot hard samples come
    from the training counts alone, so no base model is needed)."""
    from harness.data import load_dataset
    from harness.phases.hard_samples import select_hard

    cfg = load_config(experiment)
    assert cfg.hard.rule == "few_shot"
    data = load_dataset(cfg)
    return len(plan_spectrum(data, select_hard(cfg.hard, data, None), cfg.spectrum))


pytestmark = pytest.mark.slow  # the fast lane (-m "not slow") skips this file

TINY = ["--experiment", "digits_lt_tiny", "--quiet"]


def harness(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("TQDM_DISABLE") if kw.pop("bars", False) else None
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False if it finished first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError("the condition never held")


def test_sigkill_during_generation_then_rerun_equals_an_uninterrupted_pool(tmp_path):
    cfg, planned = load_config("digits_lt_tiny"), planned_images("digits_lt_tiny")
    killed_wd, clean_wd = tmp_path / "killed", tmp_path / "clean"
    pool_dir = killed_wd / "cache" / "pool" / pool_key(cfg)
    manifest = pool_dir / "manifest.jsonl"
    clean = harness("generate", *TINY, "--workdir", str(clean_wd))  # the uninterrupted pool, meanwhile (2 cores)
    try:
        # small batches, so the kill lands between batches or inside one
        proc = harness("generate", *TINY, "--workdir", str(killed_wd), "--set", "spectrum.batch_size=8")
        killed = kill_when(proc, lambda: manifest.exists() and manifest.stat().st_size > 0)
        partial = len(read_manifest(pool_dir))
        assert killed and 0 < partial < planned, "the kill should land mid-generation"
        assert not (pool_dir / "complete.json").exists()
        assert harness("generate", *TINY, "--workdir", str(killed_wd)).wait() == 0
        assert clean.wait() == 0
    finally:
        if clean.poll() is None:
            clean.kill()
    a, b = read_manifest(pool_dir), read_manifest(clean_wd / "cache" / "pool" / pool_key(cfg))
    assert len(a) == len(b) == a.key.nunique() == planned
    rows = sum(1 for line in manifest.read_text().splitlines() if line.strip().endswith("}"))
    assert rows == planned, "no manifest row is duplicated"
    for fa, fb in zip(a.file, b.file):
        assert (pool_dir / fa).read_bytes() == (clean_wd / "cache" / "pool" / pool_key(cfg) / fb).read_bytes()


def test_sigkill_during_training_resumes_to_the_same_metrics(tmp_path):
    wd = tmp_path / "wd"
    args = ["run", *TINY, "--workdir", str(wd), "--method", "discl_diverse_to_specific", "--seed", "0"]
    ckpts = wd / "cache" / "runs"
    proc = harness(*args)
    assert kill_when(proc, lambda: any(ckpts.glob("*/checkpoint.pt"))), "killed after the first checkpoint"
    assert harness(*args).wait() == 0
    client = MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits_lt_tiny").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", "the resumed run continues the same MLflow run"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]
    assert sorted(steps) == list(range(5)), "each epoch logged exactly once"
    cfg = load_config("digits_lt_tiny")
    reference = fine_tune(prepare(cfg, wd, progress=False), "discl_diverse_to_specific", seed=0, progress=False)
    for key, value in reference.test_metrics.items():
        assert runs[0].data.metrics[key] == pytest.approx(value, abs=1e-12)


def test_two_runs_at_once_share_the_caches(tmp_path):
    wd = tmp_path / "wd"
    env_args = ["--experiment", "digits_lt_tiny", "--workdir", str(wd), "--seed", "0"]
    a = harness("run", *env_args, "--method", "discl_diverse_to_specific", bars=True)
    b = harness("run", *env_args, "--method", "text_only", bars=True)
    out_a, err_a = a.communicate(timeout=900)
    out_b, err_b = b.communicate(timeout=900)
    assert a.returncode == 0 and b.returncode == 0, err_a[-2000:] + err_b[-2000:]
    # progress bars go to stderr; each shared artifact was built by exactly one process
    for phase in ("train base model", "train tiny_ddpm", "generate spectrum", "train judge"):
        assert (phase in err_a) + (phase in err_b) == 1, phase
    client = MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits_lt_tiny").experiment_id])
    assert sorted(r.data.tags["method"] for r in runs) == ["discl_diverse_to_specific", "text_only"]
    assert len(list((wd / "cache" / "base").glob("*/model.safetensors"))) == 1
