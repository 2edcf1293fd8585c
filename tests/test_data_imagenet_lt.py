"""ImageNet-LT from its split files, on a tiny fake ImageNet tree."""

import json
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from fakes import IMAGENET_LT_COUNTS, write_fake_imagenet_lt

from harness.config import Config, build
from harness.data import load_dataset
from harness.data.base import DataError


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return write_fake_imagenet_lt(tmp_path_factory.mktemp("imagenet"))


def config(root, many=100, few=20, **params) -> Config:
    return build(
        Config,
        {
            "data": {
                "name": "imagenet_lt",
                "root": str(root),
                "image_size": 16,
                "params": params,
                "shot_groups": {"many": many, "few": few},
            }
        },
    )


@pytest.fixture(scope="module")
def bundle(fake_root):
    return load_dataset(config(fake_root))


def read_lines(path):
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def test_splits_follow_the_split_files(bundle, fake_root):
    for split in ("train", "val", "test"):
        lines = read_lines(fake_root / f"ImageNet_LT_{split}.txt")
        images = bundle.splits[split]
        assert images.ids == [rel for rel, _ in lines]
        assert images.labels.tolist() == [int(label) for _, label in lines]
        assert all(path == fake_root / rel for path, (rel, _) in zip(images.paths, lines))
    assert bundle.num_classes == len(IMAGENET_LT_COUNTS)
    assert bundle.class_names[:2] == ["tench", "goldfish"]  # labels are ImageNet-1k ids: the curated names
    assert (bundle.val_split, bundle.test_splits) == ("val", {"test": "test"})
    x = bundle.splits["test"].load(0)
    assert x.shape == (3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_shot_groups_equal_an_independent_count(bundle, fake_root):
    counts = Counter(int(label) for _, label in read_lines(fake_root / "ImageNet_LT_train.txt"))
    expected = ["many" if counts[c] > 100 else "few" if counts[c] < 20 else "medium" for c in range(bundle.num_classes)]
    assert bundle.shot_group().tolist() == expected
    assert sorted(set(expected)) == ["few", "many", "medium"]  # the fake covers every group and both borders
    assert bundle.shot_group().tolist() == ["many", "many", "medium", "medium", "few", "few"]


def test_many_inclusive_makes_a_class_of_exactly_many_images_many_shot(fake_root):
    """The authors' get_mmf_idx counts ≥ 100 as many-shot; the fake's third class has exactly 100 images."""
    cfg = config(fake_root).model_copy(deep=True)
    cfg.data.shot_groups.many_inclusive = True
    data = load_dataset(cfg)
    assert data.shot_group().tolist() == ["many", "many", "many", "medium", "few", "few"]
    from harness.data.metadata import load_metadata

    assert load_metadata(cfg)[0].shot_group().tolist() == data.shot_group().tolist()


def test_metrics_by_shot_group(bundle):
    y_true = bundle.splits["test"].labels
    y_pred = np.where(np.arange(len(y_true)) % 3 == 0, (y_true + 1) % bundle.num_classes, y_true)
    metrics = bundle.evaluate(y_true, y_pred)
    group = bundle.shot_group()[y_true]
    for g in ("many", "medium", "few"):
        assert metrics[f"acc_{g}"] == pytest.approx(np.mean((y_true == y_pred)[group == g]))
    assert metrics["acc"] == pytest.approx(np.mean(y_true == y_pred)) and metrics["acc"] < 1


def test_params_split_dir_names_and_subsampling(tmp_path):
    root = write_fake_imagenet_lt(
        tmp_path / "root", counts=(8, 3), val_per_class=1, test_per_class=2, split_dir=tmp_path / "splits"
    )
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"0": "tench", "1": "goldfish"}))
    data = load_dataset(
        config(root, many=5, few=4, split_dir=str(tmp_path / "splits"), class_names=str(names), max_per_split=3)
    )
    assert data.class_names == ["tench", "goldfish"]
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [3, 2, 3]
    text = tmp_path / "names.txt"
    text.write_text("tench\ngoldfish\n")
    full = load_dataset(config(root, split_dir=str(tmp_path / "splits"), class_names=str(text)))
    assert full.class_names == ["tench", "goldfish"] and len(full.train) == 11
    text.write_text("tench\ngoldfish\nshark\n")
    with pytest.raises(DataError, match="3 names for 2 classes"):
        load_dataset(config(root, split_dir=str(tmp_path / "splits"), class_names=str(text), num_classes=2))
    with pytest.raises(DataError, match="ImageNet_LT_train.txt"):
        load_dataset(config(root))  # split files are not in the root


def corrupt(line: str):
    def edit(root):
        path = root / "ImageNet_LT_test.txt"
        path.write_text(path.read_text() + line + "\n")

    return edit


BROKEN = {
    "absolute_path": (corrupt("/etc/passwd 0"), "ImageNet_LT_test.txt", "escapes"),
    "dotdot_path": (corrupt("train/../../secret.JPEG 1"), "ImageNet_LT_test.txt", "escapes"),
    "label_too_large": (corrupt(f"val/x.JPEG {len(IMAGENET_LT_COUNTS)}"), "ImageNet_LT_test.txt", "out of range"),
    "negative_label": (corrupt("val/x.JPEG -1"), "ImageNet_LT_test.txt", "negative"),
    "no_label": (corrupt("val/x.JPEG"), "ImageNet_LT_test.txt", "expected"),
    "label_not_a_number": (corrupt("val/x.JPEG cat"), "ImageNet_LT_test.txt", "expected"),
    "missing_split_file": (lambda root: (root / "ImageNet_LT_val.txt").unlink(), "ImageNet_LT_val.txt", "OLTR"),
    "missing_images": (lambda root: shutil.rmtree(root / "val"), "ILSVRC2012_val_", "image-net.org"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_split_files_are_rejected(case, fake_root, tmp_path):
    root = shutil.copytree(fake_root, tmp_path / "root")
    breakage, path_part, reason = BROKEN[case]
    breakage(root)
    with pytest.raises(DataError) as error:
        load_dataset(config(root))
    message = str(error.value)
    assert "\n" not in message and str(root) in message and path_part in message and reason in message
    if path_part == "ImageNet_LT_test.txt":
        lines = (root / path_part).read_text().splitlines()
        assert f"line {len(lines)}:" in message  # the appended bad line


@pytest.mark.parametrize("where", ["missing_root", "unset_root"])
def test_missing_root_says_what_to_stage(where, tmp_path):
    root = tmp_path / "nowhere"
    cfg = config(root)
    if where == "unset_root":
        cfg.data.root = None
    with pytest.raises(DataError) as error:
        load_dataset(cfg)
    message = str(error.value)
    assert "\n" not in message and "ImageNet_LT_train.txt" in message and "image-net.org" in message
    if where == "missing_root":
        assert str(root) in message


def test_subsampling_keeps_shot_groups_of_the_full_file(fake_root, bundle):
    small = load_dataset(
        build(
            Config,
            {
                "data": {
                    "name": "imagenet_lt",
                    "root": str(fake_root),
                    "image_size": 16,
                    "max_train": 60,
                    "params": {"max_per_split": 10},
                }
            },
        )
    )
    assert len(small.train) == 10 and len(small.splits["test"]) == 10
    assert len(set(small.train.labels.tolist())) > 1  # a random subset, not the first class of the file
    assert small.shot_group().tolist() == bundle.shot_group().tolist()
    assert small.train_counts.tolist() == list(IMAGENET_LT_COUNTS)


@pytest.mark.slow  # an end-to-end run through the tiny SDXL and CLIP
def test_tiny_experiment_end_to_end_matches_an_independent_count(imagenet_lt_tiny_runs, tmp_path):
    """The tiny ImageNet-LT experiment on a fake tree (the session's ``imagenet_lt_tiny_runs``), through the real
    loader, the tiny random SDXL img2img (DDIM) and CLIP filter: the pool holds every few-shot image × level × seed,
    every image scored; the logged accuracies overall and by shot group equal a count over the logged predictions
    with the groups counted from the split file; the prompts name the hard classes by their ImageNet-1k names."""
    from mlflow.tracking import MlflowClient

    from harness.core.io import read_json
    from harness.phases.spectrum import read_manifest

    root, workdir = imagenet_lt_tiny_runs  # workdirs.INLT_COUNTS; many > 20, medium 8–20, few < 8

    (pool,) = (workdir / "cache" / "pool").iterdir()
    settings = read_json(pool / "complete.json")["generator"]
    assert settings["pipeline"] == "StableDiffusionXLImg2ImgPipeline" and settings["scheduler"] == "DDIMScheduler"
    manifest = read_manifest(pool)
    assert len(manifest) == (6 + 3) * 4 * 1  # few-shot images × levels × seeds
    (scores_file,) = pool.glob("scores-*.jsonl")
    scores = pd.read_json(scores_file, lines=True)
    # every image is scored; with spectrum.max_tries > 1 the retried tries are scored too
    assert set(manifest.key) <= set(scores.key) and scores.text_score.between(-1, 1).all()

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("imagenet_lt_discl_tiny").experiment_id],
        filter_string="tags.method = 'discl_diverse_to_specific'",
    )
    logged = pd.read_csv(client.download_artifacts(run.info.run_id, "predictions/test.csv", str(tmp_path)))
    counts = Counter(int(label) for _, label in read_lines(root / "ImageNet_LT_train.txt"))
    group = np.array(["many" if counts[y] > 20 else "few" if counts[y] < 8 else "medium" for y in logged.y_true])
    correct = (logged.y_true == logged.y_pred).to_numpy()
    assert len(logged) == 6 * 3 and run.data.metrics["test/acc"] == pytest.approx(correct.mean())
    # ResNet-10's linear head: the τ-normalised head, its τ chosen on validation, measured on test
    assert 0 <= run.data.metrics["taunorm/tau"] <= 1 and "taunorm/test/acc_few" in run.data.metrics
    for g in ("many", "medium", "few"):
        assert run.data.metrics[f"test/acc_{g}"] == pytest.approx(correct[group == g].mean())
    prompts = pd.read_csv(client.download_artifacts(run.info.run_id, "spectrum/prompts.csv", str(tmp_path)))
    assert prompts.to_dict("records") == [
        {"label": 4, "class_name": "hammerhead shark", "prompt": "a photo of a hammerhead shark"},
        {"label": 5, "class_name": "electric ray", "prompt": "a photo of a electric ray"},
    ]


@pytest.mark.parametrize("inclusive, label", [(None, "many > 100"), ("False", "many > 100"), ("True", "many ≥ 100")])
def test_the_accuracy_by_count_figure_labels_the_many_shot_bound_as_configured(inclusive, label):
    from types import SimpleNamespace

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reports.figures.results import add_shot_group_bounds

    params = {"data.shot_groups.few": ["20"], "data.shot_groups.many": ["100"]}
    if inclusive is not None:
        params["data.shot_groups.many_inclusive"] = [inclusive]
    fig, ax = plt.subplots()
    add_shot_group_bounds(ax, SimpleNamespace(params=pd.DataFrame(params)))
    assert label in [t.get_text().strip() for t in ax.texts]
    plt.close(fig)
