"""`harness generate` sharded over 2 processes (RANK / WORLD_SIZE, as torchrun sets them) writes the same pool,
image for image, as one process; only rank 0 merges, marks the pool complete and scores it."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from quick import DIGITS_GENERATION, as_sets

from harness.config import load_config
from harness.core.registry import get_dataset
from harness.phases.filter import read_scores, score_pool
from harness.phases.spectrum import read_manifest

QUICK = as_sets(DIGITS_GENERATION)


def pool_of(workdir):
    (pool,) = (workdir / "cache" / "pool").iterdir()
    return pool


@pytest.mark.slow
def test_two_ranks_equal_one_process(one_process_pool, tmp_path):
    one, two = one_process_pool, tmp_path / "two"
    for shared in ("base", "generator", "scorer"):  # reuse the trained models; only generation is compared
        shutil.copytree(one / "cache" / shared, two / "cache" / shared)
    procs = []
    for rank in (1, 0):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harness.cli",
                    "generate",
                    "--experiment",
                    "digits_lt_tiny",
                    "--workdir",
                    str(two),
                    "--quiet",
                    *QUICK,
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "rank 1 of 2: shard done" in outputs[0] and "synthetic pool" in outputs[1]

    pool1, pool2 = pool_of(one), pool_of(two)
    assert pool1.name == pool2.name
    shards = sorted(p.name for p in pool2.glob("manifest*.jsonl"))
    assert shards == ["manifest.shard000.jsonl", "manifest.shard001.jsonl"]
    assert (pool2 / "complete.json").exists() and list(pool2.glob("scores-*.jsonl"))
    m1, m2 = read_manifest(pool1), read_manifest(pool2)
    assert len(m1) > 20 and m1.key.tolist() == m2.key.tolist() and m1.seed.tolist() == m2.seed.tolist()
    for f in m1.file:
        a, b = np.asarray(Image.open(pool1 / f)), np.asarray(Image.open(pool2 / f))
        assert np.array_equal(a, b), f


def test_shards_are_contiguous_blocks_of_sources():
    """Each rank owns whole sources (every λ and seed of them), a contiguous block in plan order, so it reads and
    VAE-encodes each of its sources once; together the ranks cover the plan exactly once."""
    import torch

    from harness.config import SpectrumConfig
    from harness.data.base import DatasetBundle, TensorImages
    from harness.phases.spectrum import plan_spectrum, shard

    train = TensorImages(torch.zeros(20, 1, 4, 4), np.arange(20) % 2, [f"img{i}" for i in range(20)])
    data = DatasetBundle("toy", ["zero", "one"], {"train": train}, channels=1)
    plan = plan_spectrum(data, np.arange(3, 20), SpectrumConfig(levels=[0.0, 0.5, 0.9], seeds=4))
    for world in (1, 2, 3, 8):
        shards = [shard(plan, r, world) for r in range(world)]
        assert sorted(p.key for s in shards for p in s) == sorted(p.key for p in plan)
        blocks = [list(dict.fromkeys(p.source_index for p in s)) for s in shards]
        assert [i for b in blocks for i in b] == list(range(3, 20))  # contiguous, in order, disjoint
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
        for s in shards:
            by_source = {}
            for p in s:
                by_source.setdefault(p.source_index, set()).add((p.lam, p.seed_index))
            assert all(len(v) == 12 for v in by_source.values())  # every λ and seed of an owned source


class CountingScorer:
    """Scores an image by its mean pixel; records which real images it was handed."""

    def __init__(self):
        self.sources = []

    def score(self, images, prompts, labels, sources):
        self.sources += [id(s) for s in sources]
        means = [float(np.asarray(im).mean()) / 255 for im in images]
        return means, [1 - m for m in means]


@pytest.mark.slow
def test_scoring_shards_are_contiguous_blocks_and_merge_to_one_process(tmp_path):
    """Under DDP each rank scores a contiguous block of the sources into its own file; together they hold every
    image once, with the scores one process gives, and a rerun (any world size) scores nothing again."""
    data = get_dataset("digits_lt")(load_config("digits_lt_tiny"))
    pool = tmp_path / "pool"
    pool.mkdir()
    rows = []
    for i, source in enumerate([3, 3, 5, 5, 8, 8, 13]):
        Image.fromarray(np.full((8, 8), i * 30, dtype=np.uint8)).save(pool / f"{i}.png")
        rows.append({"key": f"k{i}", "file": f"{i}.png", "source_index": source, "label": 0, "prompt": "p"})
    manifest = pd.DataFrame(rows)
    one = score_pool(CountingScorer(), data, manifest, tmp_path / "pool", "one.jsonl", batch_size=2, progress=False)
    parts = [
        score_pool(CountingScorer(), data, manifest, pool, "two.jsonl", batch_size=2, progress=False, rank=r, world=2)
        for r in (0, 1)
    ]
    blocks = [sorted(set(p.source_index)) for p in parts]
    assert blocks == [[3, 5], [8, 13]]  # contiguous, disjoint blocks of sources
    assert sorted((pool).glob("two*.jsonl")) == [pool / "two.shard000.jsonl", pool / "two.shard001.jsonl"]
    merged = read_scores(pool, "two.jsonl")
    assert len(merged) == len(manifest) == sum(len(p) for p in parts)
    for row in one.itertuples():
        assert merged[row.key]["text_score"] == row.text_score and merged[row.key]["image_score"] == row.image_score
    again = CountingScorer()
    score_pool(again, data, manifest, pool, "two.jsonl", progress=False)  # one process after two ranks
    assert again.sources == []


class PidRecordingImages:
    """The training split, noting in ``folder`` the id of each process that decodes one of its images."""

    def __init__(self, images, folder):
        self.images, self.folder = images, folder

    def raw(self, i):
        (self.folder / str(os.getpid())).touch()
        return self.images.raw(i)


@pytest.mark.slow
def test_scoring_decodes_images_in_dataloader_workers(tmp_path):
    """With data.params.num_workers > 0 the images are decoded in worker processes, not in the scoring process,
    and the scores are the same as without workers."""
    data = get_dataset("digits_lt")(load_config("digits_lt_tiny"))
    pool, pids = tmp_path / "pool", tmp_path / "pids"
    pool.mkdir(), pids.mkdir()
    rows = []
    for i, source in enumerate([3, 3, 5, 5, 8, 8, 13]):
        Image.fromarray(np.full((8, 8, 3), i * 30, dtype=np.uint8)).save(pool / f"{i}.png")
        rows.append({"key": f"k{i}", "file": f"{i}.png", "source_index": source, "label": 0, "prompt": "p"})
    manifest = pd.DataFrame(rows)
    one = score_pool(CountingScorer(), data, manifest, pool, "one.jsonl", batch_size=2, progress=False)
    data.splits["train"], data.num_workers = PidRecordingImages(data.train, pids), 2
    scorer = DistinctScorer()
    two = score_pool(scorer, data, manifest, pool, "two.jsonl", batch_size=2, progress=False)
    decoders = {int(p.name) for p in pids.iterdir()}
    assert decoders and os.getpid() not in decoders
    assert two.text_score.tolist() == one.text_score.tolist() and two.image_score.tolist() == one.image_score.tolist()
    assert scorer.distinct == [1, 1, 1, 1]  # chunks of 2 rows, both of one source: one decoded image each


class DistinctScorer(CountingScorer):
    def __init__(self):
        super().__init__()
        self.distinct = []

    def score(self, images, prompts, labels, sources):
        self.distinct.append(len({id(s) for s in sources}))
        return super().score(images, prompts, labels, sources)
