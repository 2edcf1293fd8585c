"""iWildCam through the real wilds loader, on a tiny fake copy in the exact wilds 2.0 layout."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import write_fake_iwildcam

from harness.config import Config, build
from harness.data import load_dataset
from harness.data.base import DataError
from harness.data.iwildcam import import_wilds, wilds_metrics

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return write_fake_iwildcam(tmp_path_factory.mktemp("iwildcam"), n_per_split=15, num_classes=NUM_CLASSES)


def config(root, **params) -> Config:
    return build(Config, {"data": {"name": "iwildcam", "root": str(root), "image_size": 20, "params": params}})


@pytest.fixture(scope="module")
def bundle(fake_root):
    return load_dataset(config(fake_root))


@pytest.fixture(scope="module")
def wilds_dataset(fake_root):
    return import_wilds().get_dataset("iwildcam", root_dir=str(fake_root), download=False)


def test_splits_match_metadata(bundle, fake_root):
    metadata = pd.read_csv(fake_root / "iwildcam_v2.0" / "metadata.csv")
    assert set(bundle.splits) == {"train", "val", "test", "id_val", "id_test"}
    for split, images in bundle.splits.items():
        rows = metadata[metadata.split == split]
        assert images.ids == rows.image_id.tolist()
        assert images.labels.tolist() == rows.y.tolist()
        assert [p.name for p in images.paths] == rows.filename.tolist()
        assert images.extra.location.tolist() == rows.location_remapped.tolist()
        assert images.extra.sequence.tolist() == rows.sequence_remapped.tolist()
    assert bundle.num_classes == NUM_CLASSES
    assert bundle.val_split == "val"  # OOD val selects, the WILDS convention
    assert bundle.test_splits == {"test_id": "id_test", "test_ood": "test"}
    x = bundle.splits["test"].load(0)
    assert x.shape == (3, 20, 20) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert bundle.splits["test"].raw(0).size == (64, 48)  # raw stays full resolution


def test_class_names_shipped_user_and_categories(fake_root, tmp_path):
    assert load_dataset(config(fake_root)).class_names[:3] == [
        "empty",
        "White-lipped peccary",
        "Central American agouti",
    ]
    user = tmp_path / "names.json"
    user.write_text(json.dumps({"1": "peccary"}))
    names = load_dataset(config(fake_root, common_names=str(user))).class_names
    assert names[:3] == ["empty", "peccary", "Central American agouti"]
    user.write_text(
        json.dumps(
            {
                "classes": [
                    {"y": 0, "category_id": 0, "common_name": "nothing"},
                    {"y": 99999, "category_id": 7, "common_name": "not a class"},
                ]
            }
        )
    )
    assert load_dataset(config(fake_root, common_names=str(user))).class_names[:2] == [
        "nothing",
        "White-lipped peccary",
    ]
    user.write_text(json.dumps(["a", "b"]))
    with pytest.raises(DataError, match="names.json"):
        load_dataset(config(fake_root, common_names=str(user)))
    # a category the shipped list does not know falls back to categories.csv
    copy = shutil.copytree(fake_root, tmp_path / "copy")
    categories = copy / "iwildcam_v2.0" / "categories.csv"
    frame = pd.read_csv(categories)
    frame.loc[frame.y == 2, "category_id"] = 123456
    frame.to_csv(categories, index=False)
    assert load_dataset(config(copy)).class_names[2] == "dasyprocta punctata"


def test_val_split_and_subsampling(fake_root):
    data = load_dataset(config(fake_root, val_split="val", max_per_split=6))
    assert data.val_split == "val"
    assert all(len(images) == 6 for images in data.splits.values())
    with pytest.raises(DataError, match="val_split"):
        load_dataset(config(fake_root, val_split="test"))


def test_full_decode_reads_each_image_at_full_resolution(fake_root, bundle):
    """The default decodes at a reduced JPEG DCT scale (64×48 → 32×24 for 20 px); ``decode: full`` reads the whole
    file, as the authors' loaders do, and the transforms then crop and resize."""
    assert tuple(bundle.splits["train"].decode(0).shape) == (3, 24, 32)
    full = load_dataset(config(fake_root, decode="full"))
    assert tuple(full.splits["train"].decode(0).shape) == (3, 48, 64)
    assert tuple(full.splits["train"].load(0).shape) == (3, 20, 20)
    with pytest.raises(DataError, match="data.params.decode must be reduced or full"):
        load_dataset(config(fake_root, decode="draft"))


def test_metrics_equal_wilds_eval(bundle, wilds_dataset):
    rng = np.random.default_rng(0)
    for split in ("id_test", "test"):
        mask = wilds_dataset.split_array == wilds_dataset.split_dict[split]
        y_true = wilds_dataset.y_array[mask]
        # include predictions of a class absent from y_true: wilds leaves it out of the macro average
        y_pred = torch.where(
            torch.from_numpy(rng.random(len(y_true)) < 0.5),
            y_true,
            torch.from_numpy(rng.integers(0, NUM_CLASSES + 2, len(y_true))),
        )
        expected, _ = wilds_dataset.eval(y_pred, y_true, wilds_dataset.metadata_array[mask])
        ours = bundle.evaluate(y_true.numpy(), y_pred.numpy())
        assert ours["f1_macro"] == pytest.approx(expected["F1-macro_all"], abs=1e-6)  # wilds returns float32
        assert ours["acc"] == pytest.approx(expected["acc_avg"], abs=1e-6)  # wilds averages in float32
        assert 0 < ours["f1_macro"] < 1
    y = np.array([0, 0, 1, 2])  # class 3 predicted but absent: not in the average
    assert wilds_metrics(y, np.array([0, 3, 1, 2]))["f1_macro"] == pytest.approx((2 / 3 + 1 + 1) / 3)


@pytest.mark.slow  # a fresh interpreter
def test_import_wilds_starts_no_version_check():
    code = (
        "import threading, sys; from harness.data.iwildcam import import_wilds; import_wilds(); "
        "print(threading.active_count(), 'outdated' in sys.modules, 'wilds' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "False", "True"]


def edit_metadata(folder, change):
    path = folder / "metadata.csv"
    frame = pd.read_csv(path)
    change(frame)
    frame.to_csv(path, index=False)


def drop_value(column, value):
    def change(frame):
        frame.loc[frame[column] == value, column] = frame[column].max() + 1

    return change


BROKEN = {
    "no_release": (lambda f: (f / "RELEASE_v2.0.txt").unlink(), "RELEASE_v2.0.txt"),
    "no_metadata": (lambda f: (f / "metadata.csv").unlink(), "metadata.csv"),
    "no_categories": (lambda f: (f / "categories.csv").unlink(), "categories.csv"),
    "no_images": (lambda f: shutil.rmtree(f / "train"), "train"),
    "one_image_missing": (lambda f: (f / "train" / pd.read_csv(f / "metadata.csv").filename[0]).unlink(), ".jpg"),
    "gap_in_y": (lambda f: edit_metadata(f, drop_value("y", 1)), "metadata.csv"),
    "gap_in_location": (lambda f: edit_metadata(f, drop_value("location_remapped", 0)), "metadata.csv"),
    "gap_in_sequence": (lambda f: edit_metadata(f, drop_value("sequence_remapped", 3)), "metadata.csv"),
    "bad_datetime": (
        lambda f: edit_metadata(f, lambda m: m.__setitem__("datetime", "2013/06/09 16:01")),
        "metadata.csv",
    ),
    "missing_column": (
        lambda f: edit_metadata(f, lambda m: m.drop(columns=["sequence_remapped"], inplace=True)),
        "metadata.csv",
    ),
    "unknown_split": (lambda f: edit_metadata(f, lambda m: m.__setitem__("split", "holdout")), "metadata.csv"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_layout_is_one_line_naming_the_path(case, fake_root, tmp_path):
    root = shutil.copytree(fake_root, tmp_path / "root")
    folder = root / "iwildcam_v2.0"
    breakage, named = BROKEN[case]
    breakage(folder)
    with pytest.raises(DataError) as error:
        load_dataset(config(root))
    message = str(error.value)
    assert "\n" not in message
    assert str(folder) in message and named in message


@pytest.mark.parametrize("where", ["missing_root", "empty_root"])
def test_missing_copy_says_how_to_stage_it(where, tmp_path):
    root = tmp_path / "nowhere"
    if where == "empty_root":
        root.mkdir()
    with pytest.raises(DataError) as error:
        load_dataset(config(root))
    message = str(error.value)
    assert "\n" not in message and str(root) in message
    assert "iwildcam_v2.0" in message and "RELEASE_v2.0.txt" in message and "by hand" in message


def test_logged_predictions_recompute_to_wilds_eval(bundle, wilds_dataset, tmp_path):
    """predictions CSV (as the pipeline logs it) → wilds' evaluator gives the metrics the bundle reports."""
    from harness.engine.evaluate import evaluate_split

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 20 * 20, NUM_CLASSES))
    metrics, preds = evaluate_split(model, bundle, "test", torch.device("cpu"))
    preds.to_csv(tmp_path / "test.csv", index=False)
    logged = pd.read_csv(tmp_path / "test.csv")
    assert {"location", "sequence", "datetime"} <= set(logged.columns)
    expected, _ = wilds_dataset.eval(
        torch.tensor(logged.y_pred.to_numpy()), torch.tensor(logged.y_true.to_numpy()), None
    )
    assert metrics["f1_macro"] == pytest.approx(expected["F1-macro_all"], abs=1e-6)
    assert metrics["acc"] == pytest.approx(expected["acc_avg"], abs=1e-6)


def test_max_train_is_a_random_subset(fake_root):
    cfg = config(fake_root)
    cfg.data.max_train = 7
    data = load_dataset(cfg)
    assert len(data.train) == 7 and len(data.splits["test"]) == 15
    train_ids = pd.read_csv(fake_root / "iwildcam_v2.0" / "metadata.csv").query("split == 'train'").image_id
    assert set(data.train.ids) < set(train_ids) and data.train.ids != train_ids.tolist()[:7]


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_tiny_experiment_end_to_end_matches_wilds_eval(iwildcam_tiny_run, tmp_path):
    """`harness run --experiment iwildcam_discl_tiny` on a fake copy (the session's ``iwildcam_tiny_run``), through
    the real loader, the tiny random SDXL img2img and FLYP-CLIP: discl_adaptive starts on a level, then real data
    only; WiSE-FT's metrics are logged; the logged F1 and accuracy equal what wilds' evaluator gives on the logged
    predictions, in and out of distribution."""
    from mlflow.tracking import MlflowClient

    from harness.core.io import read_json

    root, workdir = iwildcam_tiny_run
    (pool,) = (workdir / "cache" / "pool").iterdir()
    assert read_json(pool / "complete.json")["generator"]["size"] == [32, 32]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("iwildcam_discl_tiny").experiment_id],
        filter_string="tags.method = 'discl_adaptive'",
    )
    history = client.get_metric_history(run.info.run_id, "curriculum/lambda")
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert values[0] in (0.5, 0.7, 0.9) and values[1:] == [1.0]  # an adaptive stage, then real data only
    metrics = run.data.metrics  # WiSE-FT from CLIP's zero-shot weights, α chosen on validation; no τ-norm for CLIP
    assert 0 <= metrics["wise/alpha"] <= 1 and "wise/val/f1_macro" in metrics
    assert {"wise/test_id/f1_macro", "wise/test_ood/f1_macro", "wise/test_ood/acc"} <= set(metrics)
    assert not any(k.startswith("taunorm/") for k in metrics)
    evaluator = import_wilds().get_dataset("iwildcam", root_dir=str(root), download=False)
    for name, split in (("test_id", "id_test"), ("test_ood", "test")):
        path = client.download_artifacts(run.info.run_id, f"predictions/{split}.csv", str(tmp_path / name))
        logged = pd.read_csv(path)
        assert len(logged) == 8 and {"location", "sequence"} <= set(logged.columns)
        expected, _ = evaluator.eval(
            torch.tensor(logged.y_pred.to_numpy()), torch.tensor(logged.y_true.to_numpy()), None
        )
        assert run.data.metrics[f"{name}/f1_macro"] == pytest.approx(expected["F1-macro_all"], abs=1e-6)
        assert run.data.metrics[f"{name}/acc"] == pytest.approx(expected["acc_avg"], abs=1e-6)
