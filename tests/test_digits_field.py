"""``digits_field``: the gap dial, per-image seeding, the clean pool and its shared caches, ``spectrum/domain.csv``
and its report figure."""

import numpy as np
import pandas as pd
import pytest
import torch
from quick import DIGITS, as_sets

from harness.config import ConfigError, load_config
from harness.data import load_dataset
from harness.data.digits_field import draw, field_rng, render_field
from harness.generators.tiny_ddpm import pool_identity


def field(gap, *more):
    return load_dataset(load_config("digits_field_tiny", [f"data.params.gap={gap}", *more]))


@pytest.fixture(scope="module")
def clean():
    return load_dataset(load_config("digits_lt_tiny"))


@pytest.fixture(scope="module")
def by_gap():
    return {g: field(g) for g in (0.0, 0.25, 0.5, 1.0)}


def test_gap_zero_is_digits_lt(clean, by_gap):
    zero = by_gap[0.0]
    assert zero.name == "digits_field" and set(zero.splits) == set(clean.splits)
    for name, split in clean.splits.items():
        assert torch.equal(zero.splits[name].images, split.images), name
        assert np.array_equal(zero.splits[name].labels, split.labels) and zero.splits[name].ids == split.ids


def test_gap_degrades_train_val_test_more_as_it_grows_and_leaves_the_pool_clean(clean, by_gap):
    for name in ("train", "val", "test"):
        ref = clean.splits[name].images
        dist = [float((by_gap[g].splits[name].images - ref).abs().mean()) for g in (0.25, 0.5, 1.0)]
        assert 0 < dist[0] < dist[1] < dist[2], (name, dist)
        assert by_gap[1.0].splits[name].images.min() >= 0 and by_gap[1.0].splits[name].images.max() <= 1
        # same ids, labels and split sizes: only the pixels move
        assert by_gap[1.0].splits[name].ids == clean.splits[name].ids
    for g, data in by_gap.items():
        assert torch.equal(data.splits["pool"].images, clean.splits["pool"].images), g
    assert np.array_equal(by_gap[1.0].train_counts, clean.train_counts)


def test_degradations_lower_contrast_and_add_clutter(clean, by_gap):
    ref, far = clean.splits["test"].images, by_gap[1.0].splits["test"].images
    # contrast: the spread between the brightest and darkest pixels of an image shrinks
    spread = lambda x: (x.flatten(1).quantile(0.95, 1) - x.flatten(1).quantile(0.05, 1)).mean()  # noqa: E731
    assert spread(far) < 0.8 * spread(ref)
    # clutter and noise: the clean background (dark pixels) is no longer dark
    background = ref < 0.05
    assert far[background].mean() > ref[background].mean() + 0.05


def test_each_image_is_seeded_by_itself_not_by_its_batch(clean):
    images = clean.splits["test"].images[:12]
    indices = [int(i.rsplit("-", 1)[1]) for i in clean.splits["test"].ids[:12]]
    draws = [draw(field_rng(0, i), 16) for i in indices]
    whole = render_field(images, 0.8, draws)
    alone = torch.cat([render_field(images[k : k + 1], 0.8, draws[k : k + 1]) for k in (0, 5, 11)])
    assert torch.allclose(whole[[0, 5, 11]], alone, atol=1e-6)
    again = render_field(images, 0.8, [draw(field_rng(0, i), 16) for i in indices])
    assert torch.equal(whole, again)
    other = render_field(images, 0.8, [draw(field_rng(1, i), 16) for i in indices])  # another split_seed
    assert not torch.allclose(whole, other)


def test_an_image_renders_alike_in_any_subset(by_gap):
    full = by_gap[1.0].splits["train"]
    part = field(1.0, "data.max_train=20").splits["train"]
    assert part.ids == full.ids[:20] and torch.equal(part.images, full.images[:20])


def test_bad_gap_and_unknown_params_are_config_errors():
    with pytest.raises(ConfigError, match="gap"):
        field(1.5)
    with pytest.raises(ConfigError, match="data.params.gapp"):
        load_dataset(load_config("digits_field_tiny", ["data.params={gapp: 1}"]))


def test_generator_and_judge_caches_ignore_the_gap_but_not_the_pool(by_gap):
    cfg = load_config("digits_field_tiny")
    keys = {g: pool_identity(cfg, d.splits["pool"]) for g, d in by_gap.items()}
    assert len({str(k) for k in keys.values()}) == 1
    lt_cfg = load_config("digits_lt_tiny")
    assert pool_identity(lt_cfg, load_dataset(lt_cfg).splits["pool"]) == keys[1.0]
    smaller = field(1.0, "data.params.pool_per_class=40")
    assert pool_identity(cfg, smaller.splits["pool"]) != keys[1.0]


@pytest.mark.slow
def test_run_logs_the_domain_table_and_the_report_draws_it(tmp_path):
    from mlflow.tracking import MlflowClient

    from harness.cli import main
    from reports import build_report

    workdir = tmp_path / "wd"
    argv = ["run", "-e", "digits_field_tiny", "-m", "plain", "-m", "all_levels", "--workdir", str(workdir)]
    assert main([*argv, *as_sets(DIGITS), "--quiet"]) == 0
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits_field_tiny")
    runs = {r.data.tags["method"]: r for r in client.search_runs([exp.experiment_id], "tags.method != ''")}
    assert {a.path for a in client.list_artifacts(runs["plain"].info.run_id, "spectrum")} == set()
    local = client.download_artifacts(runs["all_levels"].info.run_id, "spectrum/domain.csv", str(tmp_path))
    frame = pd.read_csv(local)
    cfg = load_config("digits_field_tiny", list(DIGITS))
    synthetic = frame[frame.source == "synthetic"]
    assert synthetic.lam.tolist() == sorted(cfg.spectrum.levels)
    assert set(frame.source) == {"synthetic", "real val", "clean pool"}
    probs = frame[["judge_p_true", "field_p_true", "field_acc"]].to_numpy()
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    # the judge column is the pool's score: the same numbers the filter saw
    scores = client.download_artifacts(runs["all_levels"].info.run_id, "spectrum/scores.csv", str(tmp_path))
    per_level = pd.read_csv(scores).groupby("lam").text_score.mean()
    assert np.allclose(synthetic.judge_p_true.to_numpy(), per_level.to_numpy())
    from harness.phases.hard_samples import select_hard

    hard_sources = len(select_hard(cfg.hard, load_dataset(cfg), None))  # few_shot: from the training counts
    assert (synthetic.images == hard_sources * cfg.spectrum.seeds).all()
    assert (synthetic.kept <= synthetic.images).all()
    # the judge's feature cosine to the source, per λ: the scores' image_score mean, rising with λ
    image_scores = pd.read_csv(scores).groupby("lam").image_score.mean()
    assert np.allclose(synthetic.source_similarity.to_numpy(), image_scores.to_numpy())
    # (a short spectrum can leave the highest levels at the source: all ≈ 1, equal up to float noise)
    assert (np.diff(synthetic.source_similarity.to_numpy()) >= -1e-3).all(), synthetic.source_similarity.tolist()
    assert frame[frame.source != "synthetic"].source_similarity.isna().all()
    # references: the hard (few-shot) classes only, 10 val and 45 pool images each
    hard_classes = pd.read_csv(scores).label.nunique()
    assert frame.set_index("source").loc[["real val", "clean pool"], "images"].tolist() == [
        10 * hard_classes,
        45 * hard_classes,
    ]
    index = build_report("digits_field_tiny", workdir, tmp_path / "report", log_to_mlflow=False)
    assert (index.parent / "figures" / "domain_gap.png").is_file()
    assert "Domain per λ" in index.read_text()


def test_the_domain_figure_draws_source_similarity(tmp_path, monkeypatch):
    import pandas as pd

    from reports.figures import spectrum as figures

    table = pd.DataFrame(
        {
            "source": ["synthetic"] * 3 + ["real val", "clean pool"],
            "lam": [0.0, 0.5, 0.9, 1.0, 1.0],
            "judge_p_true": [0.9, 0.8, 0.7, 0.6, 0.9],
            "field_p_true": [0.5, 0.55, 0.7, 0.3, 0.4],
            "source_similarity": [0.88, 0.95, 0.99, None, None],
        }
    )
    table.to_csv(tmp_path / "domain.csv", index=False)
    monkeypatch.setattr(figures, "first_artifact", lambda rs, path: ("run", tmp_path / "domain.csv"))
    fig = figures.domain_gap(None)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any(label.startswith("source similarity") for label in labels)
    (similarity,) = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("source similarity")]
    assert list(similarity.get_ydata()) == [0.88, 0.95, 0.99]
