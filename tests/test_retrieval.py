"""``retrieved_real``: the nearest real images of each hard source's class, as many as the synthetic method keeps
for it, with near duplicates of validation and test images dropped and counted; the index is cached by content."""

import numpy as np
import pytest
import torch
from PIL import Image
from recording import Recorder
from test_base_method import declared_methods  # noqa: F401 (the methods this checkout declares)

import baselines.retrieved_real  # noqa: F401 (registers the method)
from harness.core.errors import HarnessError
from harness.phases.curriculum import epoch_parts
from harness.phases.near_duplicates import embed_cached, max_cosine
from harness.phases.pipeline import fine_tune
from harness.phases.retrieval import assign_classes, per_source_counts, retrieve
from harness.phases.retrieval_sources import folder_reference


def unit(rows):
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_retrieval_takes_the_nearest_of_the_source_class_as_many_as_asked():
    ref = unit([[1, 0], [0.9, 0.1], [0.5, 0.5], [1, 0.01], [0, 1]])
    labels = np.array([0, 0, 0, 1, 1])  # row 3, the nearest of all to the source, is of another class
    rows, owners = retrieve(ref, labels, np.ones(5, bool), unit([[1, 0]]), np.array([0]), np.array([2]))
    assert rows.tolist() == [0, 1] and owners.tolist() == [0, 0]


def test_near_duplicates_of_eval_images_are_not_retrieved():
    ref = unit([[1, 0], [0.9, 0.1], [0.5, 0.5]])
    near = max_cosine(ref, unit([[1, 0.001]])) > 0.95
    assert near.tolist() == [True, True, False]
    rows, _ = retrieve(ref, np.zeros(3, int), ~near, unit([[1, 0]]), np.array([0]), np.array([2]))
    assert rows.tolist() == [2]  # the only one left, though two were asked for


def test_per_source_count_is_the_most_kept_at_any_one_level():
    import pandas as pd

    pool = pd.DataFrame(
        {"source_index": [5, 5, 5, 5, 7], "lam": [0.1, 0.1, 0.5, 0.9, 0.1], "keep": [True, True, True, True, False]}
    )
    assert per_source_counts(pool, np.array([5, 7]), (0.1, 0.5)).tolist() == [2, 0]


def test_unlabelled_images_get_the_class_of_the_nearest_prompt():
    assert assign_classes(unit([[1, 0.2], [0.1, 1]]), unit([[0, 1], [1, 0]])).tolist() == [1, 0]


class CountingScorer:
    calls = 0

    def embed_images(self, images):
        CountingScorer.calls += 1
        return torch.nn.functional.normalize(torch.ones(len(images), 3), dim=-1)


def test_the_index_is_built_once_and_then_read_from_the_cache(tmp_path):
    from harness.data.base import TensorImages

    images = TensorImages(torch.rand(4, 1, 8, 8), [0, 1, 0, 1], list("abcd"))
    first = embed_cached(CountingScorer(), images, np.arange(4), {"k": 1}, tmp_path, "x")
    again = embed_cached(CountingScorer(), images, np.arange(4), {"k": 1}, tmp_path, "x")
    assert CountingScorer.calls == 1 and np.array_equal(first, again) and first.shape == (4, 3)


def write_folder(root, names):
    for name in names:
        (root / name).mkdir(parents=True)
        Image.new("L", (8, 8), 128).save(root / name / "a.png")


def test_a_folder_names_its_classes_by_name_or_index_and_refuses_an_unknown_one(tmp_path):
    write_folder(tmp_path / "ok", ["zero", "1"])
    ref = folder_reference(tmp_path / "ok", ["one", "zero"], 8, 1)
    assert sorted(ref.labels.tolist()) == [1, 1]
    write_folder(tmp_path / "bad", ["zero", "seven"])
    with pytest.raises(HarnessError, match="seven names no class") as e:
        folder_reference(tmp_path / "bad", ["one", "zero"], 8, 1)
    assert "\n" not in str(e.value)
    with pytest.raises(HarnessError, match="does not exist"):
        folder_reference(tmp_path / "missing", ["one"], 8, 1)


def test_a_reference_set_without_a_hard_source_class_refuses_in_one_line(tiny_prepared, tmp_path):
    import dataclasses

    write_folder(tmp_path / "ref", [tiny_prepared.data.class_names[0]])
    cfg = tiny_prepared.cfg.model_copy(
        update={"retrieval": tiny_prepared.cfg.retrieval.model_copy(update={"source": f"folder:{tmp_path / 'ref'}"})}
    )
    prep = dataclasses.replace(tiny_prepared, cfg=cfg, retrieved=None)
    with pytest.raises(HarnessError, match="has no image of the hard sources' class") as e:
        fine_tune(prep, "retrieved_real", seed=0, progress=False)
    assert "\n" not in str(e.value)


def test_retrieved_real_trains_on_retrieved_images_as_many_as_the_synthetic_method(tiny_prepared):
    import dataclasses

    prep = dataclasses.replace(tiny_prepared, retrieved=None)
    run = Recorder()
    result = fine_tune(prep, "retrieved_real", seed=0, run=run, progress=False)
    assert run.metrics["retrieval/images"] == len(prep.retrieved.images) > 0
    assert "retrieval/test_near_duplicates" in run.metrics
    assert any(k.startswith("spectrum/test_near_duplicates/") for k in run.metrics)
    assert all(row["curriculum/synthetic"] == 0 for row in result.history)
    synthetic = fine_tune(prep, "discl_diverse_to_specific", seed=0, progress=False)
    assert [r["curriculum/images"] for r in result.history] == [r["curriculum/images"] for r in synthetic.history]
    from harness.core.registry import get_method

    method = get_method("retrieved_real")()
    sources = np.unique(prep.hard)
    parts = epoch_parts(prep, method, (0.5,), True, sources, np.random.default_rng(0))
    assert any(p.images is prep.retrieved.images for p in parts)
    assert not any(p.images is prep.pool_images for p in parts)
    # each retrieved image is of its source's class
    assert np.array_equal(prep.retrieved.images.labels, prep.data.train.labels[prep.retrieved.source_index])


def test_harness_list_shows_retrieved_real_and_plan_replays_it(declared_methods, capsys):  # noqa: F811
    from harness.cli import main

    assert declared_methods["retrieved_real"] == "baselines.retrieved_real:RetrievedReal"
    assert main(["list"]) == 0
    methods = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("methods:"))
    assert "retrieved_real" in methods.split(":", 1)[1].replace(",", " ").split()
    assert main(["plan", "-e", "digits_lt_tiny", "--method", "retrieved_real"]) == 0
    assert "retrieved_real" in capsys.readouterr().out
