"""The paper's experiments, shrunk: imagenet_lt_discl_tiny and iwildcam_discl_tiny run end to end on the fake
datasets through the real loaders, with tiny random SDXL-img2img, CLIP filter and models; the logged metrics
recompute from the logged predictions. Without data, the full experiments fail with one line."""

import numpy as np
import pandas as pd
import pytest
from fakes import write_fake_imagenet_lt, write_fake_iwildcam
from sklearn.metrics import f1_score

from harness.cli import main
from harness.config import load_config
from harness.core.io import read_json
from harness.phases.spectrum import read_manifest
from harness.runs.runner import run_experiment
from harness.runs.tracking import client

COUNTS = (25, 22, 12, 10, 6, 3)  # many > 20, medium 8–20, few < 8 (the shot groups set below)
QUICK = ["base.epochs=1", "train.epochs=2", "train.curriculum_epochs=2", "spectrum.seeds=1", "spectrum.steps=4"]


def logged_predictions(workdir, run_id, split, tmp_path):
    path = client(workdir).download_artifacts(run_id, f"predictions/{split}.csv", str(tmp_path))
    return pd.read_csv(path)


def the_pool(workdir):
    (pool,) = (workdir / "cache" / "pool").iterdir()
    return pool


def test_imagenet_lt_tiny_end_to_end(tmp_path):
    root = write_fake_imagenet_lt(tmp_path / "imagenet", counts=COUNTS, image_size=32)
    cfg = load_config("imagenet_lt_discl_tiny", [f"data.root={root}", "data.shot_groups={many: 20, few: 8}", *QUICK])
    workdir = tmp_path / "wd"
    results = run_experiment(cfg, workdir, ["discl_diverse_to_specific"], progress=False)
    assert list(results.method) == ["discl_diverse_to_specific"]

    pool = the_pool(workdir)
    settings = read_json(pool / "complete.json")["generator"]
    assert settings["pipeline"] == "StableDiffusionXLImg2ImgPipeline" and settings["scheduler"] == "DDIMScheduler"
    manifest = read_manifest(pool)
    assert len(manifest) == (6 + 3) * 4 * 1  # few-shot images × levels × seeds
    (scores_file,) = pool.glob("scores-*.jsonl")
    scores = pd.read_json(scores_file, lines=True)
    # every image is scored; with spectrum.max_tries > 1 the retried tries are scored too
    assert set(manifest.key) <= set(scores.key) and scores.text_score.between(-1, 1).all()

    few = np.isin  # an independent count of the few-shot accuracy from the logged predictions
    for _, row in results.iterrows():
        preds = logged_predictions(workdir, row.run_id, "test", tmp_path / row.method)
        correct = preds.y_pred == preds.y_true
        assert row["test/acc_few"] == pytest.approx(correct[few(preds.y_true, [4, 5])].mean())
        assert row["test/acc_many"] == pytest.approx(correct[few(preds.y_true, [0, 1])].mean())
        assert row["test/acc"] == pytest.approx(correct.mean())


def test_iwildcam_tiny_end_to_end(tmp_path):
    root = write_fake_iwildcam(tmp_path / "wilds")
    cfg = load_config("iwildcam_discl_tiny", [f"data.root={root}", *QUICK, "train.curriculum_epochs=1"])
    workdir = tmp_path / "wd"
    results = run_experiment(cfg, workdir, ["discl_adaptive"], progress=False).set_index("method")
    assert list(results.index) == ["discl_adaptive"]
    assert read_json(the_pool(workdir) / "complete.json")["generator"]["size"] == [32, 32]

    adaptive = results.loc["discl_adaptive"]
    history = client(workdir).get_metric_history(adaptive.run_id, "curriculum/lambda")
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert values[0] in (0.5, 0.7, 0.9) and values[1:] == [1.0]  # an adaptive stage, then real data only
    preds = logged_predictions(workdir, adaptive.run_id, "test", tmp_path)
    y, p = preds.y_true.to_numpy(), preds.y_pred.to_numpy()
    assert adaptive["test_ood/f1_macro"] == pytest.approx(f1_score(y, p, average="macro", labels=np.unique(y)))


@pytest.mark.parametrize("experiment", ["imagenet_lt_discl", "iwildcam_discl"])
def test_full_experiment_without_data_is_one_line(experiment, tmp_path, capsys):
    assert main(["run", "--experiment", experiment, "--workdir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error:") and "\n" not in err and "data.root" in err
