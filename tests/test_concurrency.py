"""One workdir, many processes. Locks are OS locks (they die with their process), entries are published atomically
(a complete marker or an atomic rename), so a killed builder leaves neither an entry the others take for done nor a
lock that blocks them (a builder killed mid-generation: tests/test_reliability.py); runs started at once on a fresh
workdir build each shared phase once."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from quick import DIGITS, as_sets

from harness.core.io import lock

REPO = Path(__file__).resolve().parents[1]


def test_a_lock_dies_with_its_killed_process(tmp_path):
    held = tmp_path / "held"
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from harness.core.io import lock
        with lock({str(tmp_path / "entry")!r}):
            Path({str(held)!r}).write_text("1")
            time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 120
        while not held.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the holder never took the lock"
            time.sleep(0.1)
        with pytest.raises(TimeoutError):
            lock(tmp_path / "entry").acquire(timeout=0.5)  # held by the other process
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        with lock(tmp_path / "entry").acquire(timeout=10):  # not a stale marker: the OS released it
            pass
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_file_system_without_flock_is_an_error_not_a_soft_lock(tmp_path, monkeypatch):
    import fcntl

    def no_flock(*args):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with pytest.raises(OSError, match="no flock"):
        with lock(tmp_path / "entry"):
            pass
    assert not list(tmp_path.glob("*.lock*")) or all(p.stat().st_size == 0 for p in tmp_path.glob("*.lock*"))


# a `harness run` that notes every build of a shared phase (and every generated image) in $BUILD_LOG
WRAPPER = """
import os, sys
import harness.phases.base_model as bm, harness.generators.tiny_ddpm as td, harness.scorers.judge as jd
import harness.phases.pipeline as pl
from harness.generators.tiny_ddpm import TinyDDPM

def note(line):
    with open(os.environ["BUILD_LOG"], "a") as f:
        f.write(f"{line} {os.getpid()}\\n")

def marked(name, fn):
    def wrapped(*a, **k):
        note(name)
        return fn(*a, **k)
    return wrapped

bm.train_base_epochs = marked("base", bm.train_base_epochs)
td.train_ddpm = marked("generator", td.train_ddpm)
jd.train_judge = marked("judge", jd.train_judge)
pl.generate_spectrum = marked("spectrum", pl.generate_spectrum)
generate = TinyDDPM.generate
def counting(self, items, lam):
    for it in items:
        note(f"image {it.source_id}|{lam:.4f}|{it.seed}")
    return generate(self, items, lam)
TinyDDPM.generate = counting
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""
# the quick digits config on 10 hard images: 10 × 2 levels × 2 seeds, two fine-tuning epochs
QUICK = [*as_sets([*DIGITS, "hard.rule=k_hardest", "hard.k=10"]), "--quiet"]


def start(tmp_path: Path, method: str, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    wrapper = tmp_path / "wrapped_harness.py"
    wrapper.write_text(WRAPPER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "BUILD_LOG": str(tmp_path / "builds.log"), "TQDM_DISABLE": "1"}
    argv = [
        sys.executable,
        str(wrapper),
        "run",
        "-e",
        "digits_lt_tiny",
        "-m",
        method,
        "--workdir",
        str(tmp_path / "wd"),
    ]
    out = open(tmp_path / f"{method}.log", "w")
    return subprocess.Popen([*argv, *QUICK, *extra], env=env, stdout=out, stderr=subprocess.STDOUT)


def builds(tmp_path: Path) -> tuple[Counter, Counter]:
    lines = (tmp_path / "builds.log").read_text().splitlines()
    phases = Counter(line.split()[0] for line in lines if not line.startswith("image"))
    images = Counter(line.split()[1] for line in lines if line.startswith("image"))
    return phases, images


def finish(procs, tmp_path, timeout=280):
    try:
        for method, proc in procs.items():
            assert proc.wait(timeout) == 0, (tmp_path / f"{method}.log").read_text()[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()


def pool_of(tmp_path: Path) -> Path:
    (pool,) = (tmp_path / "wd" / "cache" / "pool").iterdir()
    return pool


@pytest.mark.slow
def test_three_runs_on_one_fresh_workdir_build_each_shared_phase_once(tmp_path):
    from harness.phases.spectrum import read_manifest

    procs = {m: start(tmp_path, m) for m in ("discl_diverse_to_specific", "all_levels", "fixed_guidance")}
    finish(procs, tmp_path)
    phases, images = builds(tmp_path)
    assert phases == {"base": 1, "generator": 1, "judge": 1, "spectrum": 1}
    pool = pool_of(tmp_path)
    assert (pool / "complete.json").exists()
    assert max(images.values()) == 1 and len(images) == len(read_manifest(pool))  # every image generated once
    assert len(list((tmp_path / "wd" / "cache" / "base").glob("*/model.safetensors"))) == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'wd' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits_lt_tiny").experiment_id])
    assert sorted(r.data.tags["method"] for r in runs) == sorted(procs)
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_rank0_waits_on_shards_reading_only_appended_bytes(tmp_path, monkeypatch):
    import json
    import threading

    import harness.phases.spectrum as spectrum
    import harness.phases.spectrum.manifest as manifest

    def no_reparse(*a, **k):
        raise AssertionError("wait_for_shards re-parsed the manifests")

    # what read_manifest and read_all_tries parse whole manifests with, wherever they are called from
    monkeypatch.setattr(manifest, "read_jsonl", no_reparse)
    keys = {f"k{i}" for i in range(6)}
    shard = tmp_path / "manifest.shard001.jsonl"
    (tmp_path / "manifest.shard000.jsonl").write_text(json.dumps({"key": "k0"}) + "\n")

    def writer():
        for i in range(1, 6):
            line = (json.dumps({"key": f"k{i}"}) + "\n").encode()
            with open(shard, "ab") as f:  # a row in two writes: the reader must not take half a line
                f.write(line[:5])
                f.flush()
                time.sleep(0.08)
                f.write(line[5:])
            time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    spectrum.wait_for_shards(tmp_path, keys, poll_s=0.02, timeout_s=60)
    thread.join()
    tail = spectrum.ManifestTail(tmp_path)
    assert tail.poll() == keys
    size = sum(p.stat().st_size for p in spectrum.manifest_files(tmp_path))
    assert tail.bytes_read == size and tail.poll() == keys and tail.bytes_read == size  # a second poll reads nothing
