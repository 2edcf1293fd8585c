"""The shared phases as separate steps: generation shards that run in any order, one at a time or all at
once, without waiting for each other; a merge step that refuses an incomplete pool in one line; an in-process
``harness run`` that leaves the signal handlers as it found them; and (slow, HARNESS_TEST_SLURM=1) a real SLURM
submission whose generate array builds the same pool, image for image, as one local process."""

import hashlib
import json
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from quick import DIGITS_GENERATION, as_sets

from harness.config import load_config
from harness.data.base import TensorImages
from harness.phases import pipeline
from harness.phases.pipeline import Base, finish_pool, generate_shard
from harness.phases.spectrum import IncompletePool, PlannedImage, read_manifest, shard_lock, source_blocks


class NoiseGenerator:
    """Pixels from the item's seed alone (like every real generator here: independent of the batch)."""

    calls = loads = 0

    def generate(self, items, lam):
        NoiseGenerator.calls += len(items)
        return [
            Image.fromarray(np.random.default_rng([it.seed, round(lam * 1000)]).integers(0, 256, (4, 4), np.uint8))
            for it in items
        ]

    def describe(self):
        return {"name": "noise"}


def tiny_base(tmp_path: Path, sources: int = 6, levels=(0.0, 0.5), seeds: int = 2) -> Base:
    cfg = load_config("digits_lt_tiny")
    train = TensorImages(torch.rand(sources, 1, 4, 4), np.arange(sources) % 3, [f"s{i}" for i in range(sources)])
    plan = [
        PlannedImage(
            f"s{i}|{lam:.4f}|{s}",
            i,
            f"s{i}",
            i % 3,
            lam,
            s,
            1000 * i + 10 * s + int(lam * 10),
            "p",
            f"images/s{i}_{lam}_{s}.png",
        )
        for lam in levels
        for i in range(sources)
        for s in range(seeds)
    ]
    data = SimpleNamespace(train=train)
    return Base(cfg, data, torch.device("cpu"), {}, np.arange(sources), {}, tmp_path / "cache" / "pool" / "p", plan)


@pytest.fixture
def noise(monkeypatch):
    NoiseGenerator.calls = NoiseGenerator.loads = 0

    def load(base, cache):
        NoiseGenerator.loads += 1
        return NoiseGenerator()

    monkeypatch.setattr(pipeline, "load_generator", load)
    monkeypatch.setattr(pipeline, "train_generator", lambda base, cache: None)  # the fake generator has no training


def pixels(pool_dir: Path) -> dict[str, str]:
    """Manifest key → sha256 of its image file."""
    manifest = read_manifest(pool_dir)
    return {k: hashlib.sha256((pool_dir / f).read_bytes()).hexdigest() for k, f in zip(manifest.key, manifest.file)}


@pytest.mark.timeout(120)  # a shard that waited for another would hang here
def test_shards_run_in_reverse_order_one_at_a_time_without_waiting(tmp_path, noise):
    one = tiny_base(tmp_path / "one")
    assert generate_shard(one, tmp_path / "one") == len(one.plan)
    finish_pool(one, tmp_path / "one")
    expected = pixels(one.pool_dir)

    base = tiny_base(tmp_path / "three")
    owner = source_blocks([p.source_index for p in base.plan], 3)
    with shard_lock(base.pool_dir, 1):  # shard 1 busy elsewhere: shards 2 and 0 neither wait for it nor take it
        for rank in (2, 0):
            added = generate_shard(base, tmp_path / "three", rank, 3)
            assert added == sum(owner[p.source_index] == rank for p in base.plan) > 0
            assert (base.pool_dir / f"manifest.shard{rank:03d}.jsonl").exists()
    assert not (base.pool_dir / "manifest.shard001.jsonl").exists()
    assert generate_shard(base, tmp_path / "three", 1, 3) > 0
    calls, loads = NoiseGenerator.calls, NoiseGenerator.loads
    assert generate_shard(base, tmp_path / "three", 2, 3) == 0, "a finished shard is reused, nothing regenerated"
    assert (NoiseGenerator.calls, NoiseGenerator.loads) == (calls, loads), "not even the generator is loaded"
    finish_pool(base, tmp_path / "three", world=3)
    assert (base.pool_dir / "complete.json").exists()
    assert pixels(base.pool_dir) == expected, "the same keys and pixels as one process"


def test_merge_refuses_an_incomplete_pool_in_one_line(tmp_path, noise):
    base = tiny_base(tmp_path)
    owner = source_blocks([p.source_index for p in base.plan], 3)
    for rank in (0, 2):
        generate_shard(base, tmp_path, rank, 3)
    with pytest.raises(IncompletePool) as e:
        finish_pool(base, tmp_path, world=3)
    message = str(e.value)
    missing = sum(owner[p.source_index] == 1 for p in base.plan)
    assert "\n" not in message
    assert f"{missing} of {len(base.plan)} planned images" in message and "shard 1 of 3" in message, message
    assert not (base.pool_dir / "complete.json").exists(), "an incomplete pool is never marked complete"
    generate_shard(base, tmp_path, 1, 3)
    finish_pool(base, tmp_path, world=3)
    assert (base.pool_dir / "complete.json").exists()


def test_an_in_process_run_restores_the_signal_handlers(tmp_path):
    from harness import cli

    def mine(signum, frame):  # pragma: no cover (never sent)
        pass

    old = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGUSR1", "SIGUSR2", "SIGTERM")}
    try:
        for name in old:
            signal.signal(getattr(signal, name), mine)
        args = ["run", "-e", "digits_lt_tiny", "-m", "plain", "--seed", "0", "--workdir", str(tmp_path), "--quiet"]
        sets = ["base.epochs=1", "train.epochs=1", "train.curriculum_epochs=1"]
        assert cli.main(args + [a for s in sets for a in ("--set", s)]) == 0
        assert {name: signal.getsignal(getattr(signal, name)) for name in old} == dict.fromkeys(old, mine)
    finally:
        for name, handler in old.items():
            signal.signal(getattr(signal, name), handler)


# --------------------------------------------------------------------------- SLURM (slow; HARNESS_TEST_SLURM=1)


@pytest.mark.slow
@pytest.mark.timeout(300)  # a SLURM submission: base, generate array, merge, runs
def test_slurm_generate_array_builds_the_same_pool_as_one_process(slurm, one_process_pool, launching, tmp_path, capsys):
    import submitit

    from harness.cli import main

    local, remote = one_process_pool, tmp_path / "slurm"
    quick = as_sets([*DIGITS_GENERATION, "train.epochs=1", "train.curriculum_epochs=1"])
    for shared in ("base", "generator", "scorer"):  # reuse the trained models; the pool itself is generated again
        shutil.copytree(local / "cache" / shared, remote / "cache" / shared)
    sets = ["--set", "launcher.generate_shards=2"]  # two array tasks, at once on the node's 2 CPUs
    args = ["run", "--experiment", "digits_lt_tiny", "-m", "discl_diverse_to_specific", "--seed", "0", "--quiet"]
    capsys.readouterr()
    code = main([*args, *quick, *sets, "--workdir", str(remote), "--launcher", "slurm"])
    captured = capsys.readouterr()
    log = captured.out + captured.err
    assert code == 0, log
    assert "generate 2 of 2 done" in log and "runs: 1 done, 0 running, 0 pending, 0 failed" in log, log

    (pool_local,) = (local / "cache" / "pool").iterdir()
    (pool_remote,) = (remote / "cache" / "pool").iterdir()
    assert pool_local.name == pool_remote.name
    assert pixels(pool_remote) == pixels(pool_local), "same manifest keys, same pixels"
    assert (pool_remote / "complete.json").exists()

    (record,) = (remote / "launcher" / "digits_lt_tiny").glob("*.json")
    rec = json.loads(record.read_text())
    assert [p["name"] for p in rec["phases"]] == ["generate", "generate", "merge"]  # the base model is cached
    writers = {}
    for p in rec["phases"]:
        if p["name"] != "generate":
            continue
        result = submitit.SlurmJob(rec["folder"], p["job_id"]).result()  # raises if the job failed
        assert result["rank"] == p["rank"] and result["world"] == 2, result
        rows = (pool_remote / f"manifest.shard{p['rank']:03d}.jsonl").read_text().splitlines()
        assert result["added"] == len(rows) > 0, "each shard's manifest holds what its own task generated"
        writers[p["rank"]] = result["job_id"]
    assert sorted(writers) == [0, 1] and len(set(writers.values())) == 2, f"one array task per shard: {writers}"
    assert all("_" in j for j in writers.values()), writers

    assert main(["status", *args[1:], *quick, *sets, "--workdir", str(remote)]) == 0
    status = capsys.readouterr().out
    assert "generate 2 of 2 done" in status, status
    assert all(j in status for j in writers.values()), status


class FakeExecutor:
    """submitit's executor as ``submit_phases`` uses it: job ids in order, ``batch()`` as one array."""

    submitted: list = []

    def __init__(self, name, dependency):
        self.name, self.dependency, self.array = name, dependency, None

    def submit(self, job):
        n = len(FakeExecutor.submitted) + 1
        if self.array is not None:
            job_id = f"{self.array}_{sum(1 for s in FakeExecutor.submitted if s[3].startswith(self.array + '_'))}"
        else:
            job_id = str(100 + n)
        FakeExecutor.submitted.append((self.name, self.dependency, job, job_id))
        return SimpleNamespace(job_id=job_id)

    def batch(self):
        import contextlib

        @contextlib.contextmanager
        def array():
            self.array = str(200 + len(FakeExecutor.submitted))
            yield

        return array()


def test_the_phases_are_base_then_a_generate_array_then_merge_less_what_is_cached(tmp_path, monkeypatch):
    from harness.config.keys import base_key, pool_key
    from harness.launch import slurm
    from harness.launch.records import phases_line

    monkeypatch.setattr(
        slurm, "slurm_executor", lambda cfg, folder, name, dependency=None: FakeExecutor(name, dependency)
    )
    FakeExecutor.submitted = []
    cfg = load_config("digits_lt_tiny", ["launcher.generate_shards=3"])
    methods = ["discl_diverse_to_specific"]
    phases = slurm.submit_phases(cfg, tmp_path, "digits_lt_tiny", [], tmp_path, methods)
    assert [(p.name, p.rank, p.world) for p in phases] == [
        ("base", 0, 1),
        ("generate", 0, 3),
        ("generate", 1, 3),
        ("generate", 2, 3),
        ("merge", 0, 3),
    ]
    deps = [s[1] for s in FakeExecutor.submitted]
    base, array = phases[0].job_id, phases[1].job_id.split("_")[0]
    assert deps == [None, f"afterok:{base}", f"afterok:{base}", f"afterok:{base}", f"afterok:{array}"]
    assert [s[2].rank for s in FakeExecutor.submitted[1:4]] == [0, 1, 2]
    assert phases_line(phases) == (
        f"base {base}: pending; generate 0 of 3 done ({array}_0 pending, {array}_1 pending, {array}_2 pending); "
        f"merge {phases[-1].job_id}: pending"
    )

    FakeExecutor.submitted = []  # a cached base model: no base job, the array starts at once
    model = tmp_path / "cache" / "base" / base_key(cfg) / "model.safetensors"
    model.parent.mkdir(parents=True)
    model.touch()
    phases = slurm.submit_phases(cfg, tmp_path, "digits_lt_tiny", [], tmp_path, methods)
    assert [p.name for p in phases] == ["generate", "generate", "generate", "merge"]
    assert [s[1] for s in FakeExecutor.submitted[:3]] == [None, None, None]
    model.unlink()

    FakeExecutor.submitted = []  # a complete pool: no generate array, and one job for base and merge
    done = tmp_path / "cache" / "pool" / pool_key(cfg) / "complete.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    (shared,) = slurm.submit_phases(cfg, tmp_path, "digits_lt_tiny", [], tmp_path, methods)
    assert (shared.name, FakeExecutor.submitted[0][1], FakeExecutor.submitted[0][2].phase) == ("shared", None, "shared")
    done.unlink()  # real-only methods: nothing to generate either
    assert [p.name for p in slurm.submit_phases(cfg, tmp_path, "digits_lt_tiny", [], tmp_path, ["plain"])] == ["shared"]


def test_a_failed_generate_job_cancels_the_jobs_after_it_and_names_its_log(monkeypatch):
    from harness.launch import slurm
    from harness.launch.records import Phase, Submission, Task

    phases = [Phase("base", "11"), *[Phase("generate", f"12_{r}", r, 3) for r in range(3)], Phase("merge", "13", 0, 3)]
    tasks = [Task("plain", 0, "h", "14_0"), Task("plain", 1, "h", "14_1")]
    sub = Submission("slurm", "digits_lt_tiny", tasks, phases=phases, folder="/logs")
    states = {"11": "done", "12_0": "done", "12_1": "failed", "12_2": "running", "13": "pending"}
    monkeypatch.setattr(
        slurm, "job_states", lambda jobs, read_results=False: {i: states.get(i, "pending") for i in jobs}
    )
    cancelled, said = [], []
    monkeypatch.setattr(slurm.subprocess, "run", lambda cmd, **kw: cancelled.append(cmd))
    assert slurm.wait_slurm(sub, say=said.append, poll_s=0) is False
    assert cancelled == [["scancel", "12_2", "13", "14_0", "14_1"]]
    assert said == ["generate shard 1 of 3 job 12_1 failed; see /logs/12_1_0_log.err"]
