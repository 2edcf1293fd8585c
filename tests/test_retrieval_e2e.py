"""``retrieved_real`` end to end on the CLIP experiments, from a folder of class sub-folders, from the
session's cold runs of each (only the retrieved_real run trains)."""

from pathlib import Path

import numpy as np
import pytest
from fakes import draw_image
from quick import as_sets
from workdirs import copy_workdir, inlt_overrides, iwildcam_overrides

from harness.cli import main


def write_reference(root, class_names, per_class=4, size=(48, 48)):
    """ROOT/<class name, spaces as underscores>/*.jpg: a few images of each class, drawn as the fakes draw it."""
    rng = np.random.default_rng(7)
    for label, name in enumerate(class_names):
        folder = root / name.replace(" ", "_")
        folder.mkdir(parents=True)
        for i in range(per_class):
            background = tuple(int(v) for v in rng.integers(40, 200, 3))
            draw_image(label, len(class_names), size, background, rng).save(folder / f"{i}.jpg", quality=90)
    return root


def class_names(experiment, overrides):
    from harness.config import load_config
    from harness.data import load_dataset

    return list(load_dataset(load_config(experiment, overrides)).class_names)


# the tiny CLIP's random weights put any two images near cosine 1: only an exact copy would pass this threshold
EXACT_COPIES = "retrieval.near_duplicate=1.0"


def retrieved_run(workdir, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id], filter_string="tags.method = 'retrieved_real'"
    )
    history = {k: [m.value for m in client.get_metric_history(run.info.run_id, k)] for k in run.data.metrics}
    return run.data.metrics, history


def retrieved_artifacts(workdir, experiment, folder):
    """The retrieved_real run's list of retrieved images (a DataFrame) and the path of its picture of them."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id], filter_string="tags.method = 'retrieved_real'"
    )
    listed = pd.read_csv(client.download_artifacts(run.info.run_id, "retrieval/retrieved.csv", str(folder)))
    return listed, Path(client.download_artifacts(run.info.run_id, "retrieval/grid.png", str(folder)))


def assert_trained_on_retrieved_images(metrics, history):
    assert metrics["retrieval/images"] > 0 and "retrieval/test_near_duplicates" in metrics
    assert any(k.startswith("spectrum/test_near_duplicates/") for k in metrics)
    assert sum(history["curriculum/retrieved"]) > 0 and set(history["curriculum/synthetic"]) == {0}


@pytest.mark.slow  # one run on ImageNet-LT's tiny CLIP and ResNet-10
def test_imagenet_lt_runs_retrieved_real_from_a_folder(imagenet_lt_tiny_runs, tmp_path):
    root, made = imagenet_lt_tiny_runs
    workdir = copy_workdir(made, tmp_path / "wd")
    pools = sorted(p.name for p in (workdir / "cache" / "pool").iterdir())
    ref = write_reference(tmp_path / "ref", class_names("imagenet_lt_discl_tiny", inlt_overrides(root)))
    sets = as_sets([*inlt_overrides(root), f"retrieval.source=folder:{ref}", EXACT_COPIES])
    argv = ["run", "-e", "imagenet_lt_discl_tiny", "-m", "retrieved_real", "-s", "0", "--workdir", str(workdir)]
    assert main([*argv, "--quiet", *sets]) == 0
    assert sorted(p.name for p in (workdir / "cache" / "pool").iterdir()) == pools  # no shared phase rebuilt
    metrics, history = retrieved_run(workdir, "imagenet_lt_discl_tiny")
    assert_trained_on_retrieved_images(metrics, history)
    listed, grid = retrieved_artifacts(workdir, "imagenet_lt_discl_tiny", tmp_path / "artifacts")
    assert len(listed) == metrics["retrieval/images"] and grid.stat().st_size > 0
    assert all(listed.retrieved_id.str.contains("/"))  # the reference folder's own names: CLASS/FILE


@pytest.mark.slow  # one run on iWildCam's tiny CLIP, from the session's cold run
def test_iwildcam_runs_retrieved_real_from_a_folder(iwildcam_tiny_run, tmp_path):
    data, made = iwildcam_tiny_run
    overrides = iwildcam_overrides(data)
    ref = write_reference(tmp_path / "ref", class_names("iwildcam_discl_tiny", overrides))
    workdir = copy_workdir(made, tmp_path / "wd")
    pools = sorted(p.name for p in (workdir / "cache" / "pool").iterdir())
    sets = as_sets([*overrides, f"retrieval.source=folder:{ref}", EXACT_COPIES])
    argv = ["run", "-e", "iwildcam_discl_tiny", "-m", "retrieved_real", "-s", "0", "--workdir", str(workdir)]
    assert main([*argv, "--quiet", *sets]) == 0
    assert sorted(p.name for p in (workdir / "cache" / "pool").iterdir()) == pools  # no shared phase rebuilt
    assert_trained_on_retrieved_images(*retrieved_run(workdir, "iwildcam_discl_tiny"))
