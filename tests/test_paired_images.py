"""Paired tests over (seed, test image): the bootstrap interval and the McNemar p-value on arrays whose answer is
known, the rows built from logged predictions, and the tables a report with a --contrast writes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from reports.paired import (
    image_paired_rows,
    image_paired_tables,
    mcnemar_p,
    metric_of,
    paired_bootstrap,
    parse_metric,
    seed_difference,
)


def seed_arrays(rng, n=400, classes=5, right_a=0.8, right_b=0.6):
    y = rng.integers(0, classes, n)
    a = np.where(rng.random(n) < right_a, y, (y + 1) % classes)
    b = np.where(rng.random(n) < right_b, y, (y + 2) % classes)
    return y, a, b


def test_identical_predictions_give_a_zero_interval_and_p_one():
    rng = np.random.default_rng(1)
    seeds = []
    for _ in range(3):
        y, a, _ = seed_arrays(rng)
        seeds.append((y, a, a.copy()))
    for kind in ("acc", "f1_macro"):
        assert paired_bootstrap(seeds, kind, resamples=200) == (0.0, 0.0, 0.0)
    assert all(mcnemar_p(s) == 1.0 for s in seeds)


def test_one_model_right_wherever_the_other_is_wrong_has_a_tiny_p_and_a_positive_interval():
    y = np.arange(200) % 4
    wrong = (y + 1) % 4
    seed = (y, y.copy(), wrong)  # A right on every image, B wrong on every image
    assert mcnemar_p(seed) < 1e-50
    mean, low, high = paired_bootstrap([seed, seed], "acc", resamples=200)
    assert (mean, low, high) == (1.0, 1.0, 1.0)


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_images():
    y = np.zeros(30, dtype=int)
    a = np.array([0] * 10 + [1] * 2 + [0] * 18)  # A alone right on 2 of the first 12; both right on the rest
    b = np.array([1] * 10 + [0] * 2 + [0] * 18)  # B alone right on 2; A alone right on 10
    # 12 discordant images, 10 for A: two-sided exact p = P(X ≤ 2) + P(X ≥ 10), X ~ Bin(12, ½)
    expected = 2 * sum(math.comb(12, k) for k in range(0, 3)) / 2**12
    assert mcnemar_p((y, a, b)) == pytest.approx(expected)


def test_point_estimates_are_the_metrics_of_the_predictions():
    rng = np.random.default_rng(2)
    y, a, b = seed_arrays(rng, classes=7)
    assert seed_difference("acc", (y, a, b)) == pytest.approx(np.mean(a == y) - np.mean(b == y))
    f1 = lambda p: f1_score(y, p, average="macro", labels=np.unique(y))  # noqa: E731 - wilds' macro F1
    assert seed_difference("f1_macro", (y, a, b)) == pytest.approx(f1(a) - f1(b))
    triples = np.stack([y, a, b], 1)
    assert metric_of("f1_macro", np.ones((1, len(y))), triples, 1)[0] == pytest.approx(f1(a))


def test_bootstrap_is_reproducible_covers_the_truth_and_is_narrower_than_the_seed_spread():
    rng = np.random.default_rng(3)
    seeds = [seed_arrays(rng, n=2000) for _ in range(3)]  # true accuracy difference: 0.2
    first = paired_bootstrap(seeds, "acc", resamples=500, rng=7)
    assert first == paired_bootstrap(seeds, "acc", resamples=500, rng=7)
    mean, low, high = first
    assert low < 0.2 < high and low < mean < high
    assert high - low < 0.06  # 6000 paired images: a couple of points wide
    assert all(math.isnan(v) for v in paired_bootstrap([], "acc"))  # no seeds, no interval


def test_metric_names_map_to_a_split_kind_and_group():
    assert parse_metric("test/acc_few") == ("test", "acc", "few")
    assert parse_metric("test_ood/f1_macro") == ("test_ood", "f1_macro", "overall")
    assert parse_metric("test/loss") is None


def fake_runs(tmp_path, locations=False):
    """Two labels on two seeds, each with predictions/test.csv and data/class_counts.csv on disk."""
    rng = np.random.default_rng(4)
    rows, files = [], {}
    counts = pd.DataFrame({"class": range(4), "train_count": [50, 50, 3, 3], "shot_group": ["many"] * 2 + ["few"] * 2})
    for seed in (0, 1):
        y, a, b = seed_arrays(rng, n=300, classes=4)
        for label, pred in (("a", a), ("b", b)):
            run_id = f"{label}{seed}"
            frame = pd.DataFrame({"index": range(300), "id": range(300), "y_true": y, "y_pred": pred})
            if locations:
                frame["location"] = np.arange(300) % 3
            (tmp_path / run_id).mkdir()
            frame.to_csv(tmp_path / run_id / "test.csv", index=False)
            counts.to_csv(tmp_path / run_id / "counts.csv", index=False)
            files[(run_id, "predictions/test.csv")] = tmp_path / run_id / "test.csv"
            files[(run_id, "data/class_counts.csv")] = tmp_path / run_id / "counts.csv"
            metrics = {"test/acc": np.mean(pred == y), "test/acc_few": np.mean((pred == y)[y >= 2])}
            if locations:  # iWildCam's: macro F1 of the OOD test split, whose predictions are predictions/test.csv
                metrics = {"test_ood/f1_macro": f1_score(y, pred, average="macro", labels=np.unique(y))}
            rows.append({"run_id": run_id, "label": label, "method": label, "loss": "ce", "seed": seed, **metrics})
    return pd.DataFrame(rows), lambda run_id, path: files.get((run_id, path))


def test_rows_from_predictions_match_the_logged_metrics_and_group_by_shot(tmp_path):
    runs, artifact = fake_runs(tmp_path)
    rows = image_paired_rows(runs, artifact, [("a", "b")], ["test/acc", "test/acc_few"]).set_index("metric")
    for metric in ("test/acc", "test/acc_few"):
        logged = runs.pivot(index="seed", columns="label", values=metric)
        assert rows.loc[metric, "mean_diff"] == pytest.approx((logged.a - logged.b).mean() * 100)
        assert rows.loc[metric, "seeds"] == 2
    assert rows.loc["test/acc", "images"] == 600 > rows.loc["test/acc_few", "images"]
    assert rows.loc["test/acc", "mcnemar_p"].startswith("0:")


def test_locations_get_their_own_table(tmp_path):
    runs, artifact = fake_runs(tmp_path, locations=True)
    tables = image_paired_tables(runs, artifact, [("a", "b")])
    assert [t.name for t in tables] == ["contrasts_images", "contrasts_locations"]
    assert len(tables[1].cells) == 3 and all("@" in label for label in tables[1].cells.index)
    logged = runs.pivot(index="seed", columns="label", values="test_ood/f1_macro")
    (overall,) = tables[0].numeric.itertuples()
    assert overall.metric == "test_ood/f1_macro" and overall.kind == "f1_macro"
    assert overall.mean_diff == pytest.approx((logged.a - logged.b).mean() * 100)
    assert (tables[1].numeric.images == 200).all()  # 100 images per location and seed
    assert any("bootstrap" in n for n in tables[0].notes) and any("t-interval" in n for n in tables[0].notes)


def test_runs_without_predictions_add_no_table(tmp_path):
    runs, _ = fake_runs(tmp_path)
    assert image_paired_tables(runs, lambda run_id, path: None, [("a", "b")]) == []


@pytest.mark.slow
def test_a_report_contrast_on_finished_runs_writes_the_image_paired_table(tiny_runs, tmp_path):
    from workdirs import copy_workdir

    from harness.cli import main

    wd = copy_workdir(tiny_runs, tmp_path / "wd")  # the report logs a run: a copy, tiny_runs stays as it is
    out = tmp_path / "report"
    args = ["report", "-e", "digits_lt_tiny", "--workdir", str(wd), "--out", str(out)]
    assert main([*args, "--contrast", "discl_diverse_to_specific:plain"]) == 0
    table = pd.read_csv(out / "tables" / "contrasts_images.csv").set_index("metric")
    assert set(table.index) >= {"test/acc", "test/acc_many", "test/acc_few"}
    assert (table.seeds == 2).all() and (table.boot_low <= table.mean_diff).all()
    assert (table.mean_diff <= table.boot_high).all()
    named = pd.read_csv(out / "tables" / "contrasts.csv").set_index("metric")
    assert table.loc["test/acc", "mean_diff"] == pytest.approx(named.loc["test/acc", "mean_diff"], abs=1e-6)
    markdown = (out / "tables" / "contrasts_images.md").read_text()
    assert "95% bootstrap, seeds × images" in markdown and "95% t-interval, seeds" in markdown
    assert "‡" in markdown or not table.boot_excludes_zero.any()
