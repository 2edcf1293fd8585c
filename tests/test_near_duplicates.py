"""A pool's near duplicates of validation and test images, per λ: counted once per pool by the shared phase (a copy
of an evaluation image counts), logged on every run that trains on the pool; the shared phase also builds
retrieval's embeddings, under locks, so runs started together embed each set once."""

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch
from recording import Recorder

import baselines.retrieved_real  # noqa: F401 (registers the method)
from harness.data.base import LabeledImages
from harness.phases import near_duplicates
from harness.phases.near_duplicates import count_pool_near_duplicates, embed_cached, eval_embeddings, load_scorer
from harness.phases.pipeline import fine_tune


def pool_levels(prep) -> set[str]:
    return {f"spectrum/test_near_duplicates/{lam:g}" for lam in np.unique(prep.pool.lam)}


def test_the_shared_phase_counts_the_pool_and_a_synthetic_run_logs_it_from_the_cache(tiny_prepared, monkeypatch):
    (counted,) = (tiny_prepared.pool_dir.parents[1] / "retrieval").glob("near-*.json")
    assert counted.exists()  # prepare (methods: discl_diverse_to_specific) counted them
    monkeypatch.setattr(near_duplicates, "load_scorer", lambda *a: pytest.fail("the count is cached"))
    run = Recorder()
    fine_tune(tiny_prepared, "discl_diverse_to_specific", seed=0, run=run, progress=False)
    logged = {k: v for k, v in run.metrics.items() if k.startswith("spectrum/test_near_duplicates/")}
    assert set(logged) == pool_levels(tiny_prepared)
    assert all(0 <= v <= tiny_prepared.pool.keep.sum() for v in logged.values())
    plain = Recorder()
    fine_tune(tiny_prepared, "plain", seed=0, run=plain, progress=False)
    assert not any(k.startswith("spectrum/test_near_duplicates/") for k in plain.metrics)


class CopiesOfTest(LabeledImages):
    """A pool whose every image is a copy of a test image (a generator that memorised them)."""

    def __init__(self, test, n):
        self.test, self.labels, self.ids = test, np.zeros(n, np.int64), [str(i) for i in range(n)]

    def raw(self, i):
        return self.test.raw(i % len(self.test))


def test_a_pool_of_copies_of_test_images_counts_every_kept_image(tiny_prepared, tmp_path):
    prep = tiny_prepared
    copies = dataclasses.replace(prep, pool_images=CopiesOfTest(prep.data.splits["test"], len(prep.pool)))
    scorer = load_scorer(prep, prep.pool_dir.parents[1])  # the trained judge, read from the warm cache
    counts = count_pool_near_duplicates(copies, scorer, tmp_path, eval_embeddings(prep, scorer, tmp_path))
    kept = prep.pool[prep.pool.keep].groupby("lam").size()
    assert sum(kept) > 0
    assert counts == {
        f"spectrum/test_near_duplicates/{lam:g}": int(kept.get(lam, 0)) for lam in np.unique(prep.pool.lam)
    }
    own = tmp_path / "own"  # the pool's own images (the copies' embeddings are cached under its key in tmp_path)
    honest = count_pool_near_duplicates(prep, scorer, own, eval_embeddings(prep, scorer, own))
    assert sum(honest.values()) < sum(counts.values())


class SlowScorer:
    calls = 0

    def embed_images(self, images):
        SlowScorer.calls += 1
        time.sleep(0.3)  # the second builder arrives while the first is embedding
        return torch.nn.functional.normalize(torch.ones(len(images), 3), dim=-1)


def test_two_builders_at_once_embed_a_set_once(tmp_path):
    from harness.data.base import TensorImages

    images = TensorImages(torch.rand(4, 1, 8, 8), [0, 1, 0, 1], list("abcd"))
    results = []

    def build():
        results.append(embed_cached(SlowScorer(), images, np.arange(4), {"k": 2}, tmp_path, "x"))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert SlowScorer.calls == 1 and len(results) == 2 and np.array_equal(*results)


def test_the_shared_phase_builds_the_retrieved_images_the_runs_then_read(tiny_cfg, cached_workdir, monkeypatch):
    from harness.phases.pipeline import prepare

    prep = prepare(tiny_cfg, cached_workdir, methods=["retrieved_real"], progress=False)
    assert prep.retrieved is not None and len(prep.retrieved.images) > 0
    assert len(list((cached_workdir / "cache" / "retrieval").glob("emb-*.npy"))) >= 3  # reference, eval, sources
    fresh = dataclasses.replace(prep, retrieved=None)  # a run job's process: it reads the embeddings
    calls = []
    scorer_class = type(load_scorer(prep, cached_workdir / "cache"))
    original = scorer_class.embed_images
    monkeypatch.setattr(scorer_class, "embed_images", lambda self, im: calls.append(1) or original(self, im))
    fine_tune(fresh, "retrieved_real", seed=0, progress=False)
    assert calls == [] and np.array_equal(fresh.retrieved.source_index, prep.retrieved.source_index)
