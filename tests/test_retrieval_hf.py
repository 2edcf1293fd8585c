"""``retrieval.source: hf:FOLDER``: a ``datasets`` dataset saved with ``save_to_disk``, labelled or not, read by
``load_from_disk`` alone; a name that is no saved folder is refused in one line and nothing is looked up."""

import dataclasses

import numpy as np
import pytest
from recording import Recorder

import baselines.retrieved_real  # noqa: F401 (registers the method)
from harness.core.errors import HarnessError
from harness.phases.near_duplicates import load_scorer
from harness.phases.pipeline import fine_tune
from harness.phases.retrieval import assign_classes


def save(folder, images, labels, class_names):
    import datasets

    columns = {"image": images} | ({} if labels is None else {"label": labels})
    features = {"image": datasets.Image()} | (
        {} if labels is None else {"label": datasets.ClassLabel(names=class_names)}
    )
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).save_to_disk(str(folder))
    return folder


def with_source(prep, source, **settings):
    retrieval = prep.cfg.retrieval.model_copy(update={"source": source, **settings})
    return dataclasses.replace(prep, cfg=prep.cfg.model_copy(update={"retrieval": retrieval}), retrieved=None)


def run_retrieved(prep):
    run = Recorder()
    result = fine_tune(prep, "retrieved_real", seed=0, run=run, progress=False)
    assert run.metrics["retrieval/images"] == len(prep.retrieved.images) > 0
    assert "retrieval/test_near_duplicates" in run.metrics
    assert sum(row["curriculum/retrieved"] for row in result.history) > 0
    return run


def test_a_labelled_saved_dataset_is_retrieved_from(tiny_prepared, tmp_path):
    pool = tiny_prepared.data.splits["pool"]  # real digits the runs never evaluate on
    folder = save(
        tmp_path / "ds", [pool.raw(i) for i in range(len(pool))], pool.labels.tolist(), tiny_prepared.data.class_names
    )
    prep = with_source(tiny_prepared, f"hf:{folder}")
    run_retrieved(prep)
    assert np.array_equal(prep.retrieved.images.labels, prep.data.train.labels[prep.retrieved.source_index])


def test_an_unlabelled_saved_dataset_gets_classes_by_the_class_embedding(tiny_prepared, tmp_path):
    prep = tiny_prepared
    scorer = load_scorer(prep, prep.pool_dir.parents[1])
    pool = prep.data.splits["pool"]
    images = [pool.raw(i) for i in range(len(pool))]
    classes = assign_classes(
        scorer.embed_images(images).numpy(), scorer.embed_classes(list(prep.data.class_names)).numpy()
    )
    hard_classes = set(prep.data.train.labels[np.unique(prep.hard)].tolist())
    assert hard_classes <= set(classes.tolist())  # every hard class has an image here
    prep = with_source(prep, f"hf:{save(tmp_path / 'ds', images, None, None)}", label_column=None)
    run_retrieved(prep)
    got = prep.retrieved.images
    emb = scorer.embed_images([got.raw(i) for i in range(len(got))]).numpy()
    by_prompt = assign_classes(emb, scorer.embed_classes(list(prep.data.class_names)).numpy())
    assert np.array_equal(got.labels, by_prompt)  # each retrieved image's class is its class embedding's
    assert np.array_equal(got.labels, prep.data.train.labels[prep.retrieved.source_index])


def test_a_name_that_is_no_saved_dataset_is_refused_in_one_line_without_a_lookup(tiny_prepared, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("looked the name up"))
    prep = with_source(tiny_prepared, "hf:someone/not-on-this-disk")
    with pytest.raises(HarnessError, match="no dataset saved on disk here") as e:
        fine_tune(prep, "retrieved_real", seed=0, progress=False)
    assert "\n" not in str(e.value)


def rows_name_paths(folder, path: str) -> None:
    """Rewrite a saved dataset so that every row's image holds no bytes and names ``path`` instead, as a dataset
    made elsewhere may (``save_to_disk`` would have embedded the bytes)."""
    import pyarrow as pa

    (arrow,) = folder.glob("*.arrow")
    table = pa.ipc.open_stream(pa.BufferReader(arrow.read_bytes())).read_all()  # in memory: the file is rewritten
    field = table.schema.field("image")
    cells = pa.array([{"bytes": None, "path": path}] * len(table), type=field.type)
    table = table.set_column(table.schema.get_field_index("image"), field, cells)
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def test_a_row_that_names_a_path_instead_of_bytes_is_refused_never_opened(tiny_prepared, tmp_path):
    pool = tiny_prepared.data.splits["pool"]
    secret = tmp_path / "elsewhere.png"
    pool.raw(0).save(secret)  # a readable image: opening it would succeed, so only the refusal ends the run
    names = tiny_prepared.data.class_names
    folder = save(tmp_path / "ds", [pool.raw(i) for i in range(len(pool))], pool.labels.tolist(), names)
    rows_name_paths(folder, str(secret))
    with pytest.raises(HarnessError, match="holds no image bytes") as e:
        fine_tune(with_source(tiny_prepared, f"hf:{folder}"), "retrieved_real", seed=0, progress=False)
    assert "\n" not in str(e.value) and str(secret) in str(e.value)
