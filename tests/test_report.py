"""`harness report`: tables recomputed from the MLflow runs, figures drawn, page complete, CIs right."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

# the tiny experiment made tinier still: the report is under test here, not the method
OVERRIDES = [
    "model.params.width=8",
    "generator.params.channels=[8,8,16]",
    "generator.params.batch_size=16",
    "generator.params.train_steps=4",
    "spectrum.steps=4",
    "spectrum.seeds=1",
    "spectrum.levels=[0.0,0.5,0.9]",
    "curriculum.levels=[0.0,0.5]",
    "curriculum.adaptive_levels=[0.5,0.9]",
    "scorer.params.epochs=1",
    "base.epochs=1",
    "filter.threshold=0.1",
    "train.epochs=3",
    "train.curriculum_epochs=2",
    "data.params.max_per_class=30",
    "data.params.pool_per_class=15",
    "data.params.test_per_class=10",
    "data.params.val_per_class=5",
    "data.shot_groups.many=15",
    "data.shot_groups.few=5",
]
FIGURES = [
    "final_metrics",
    "per_class",
    "lambda_schedule",
    "adaptive_picks",
    "training_curves",
    "spectrum_grid",
    "acceptance",
    "score_distributions",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Tiny end-to-end runs: plain and diverse→specific × 2 seeds, adaptive and plain_rebalanced × 1 seed,
    plus a fake sweep (parent and two trials) that the tables must leave out."""
    from harness.config import load_config
    from harness.runs.runner import run_experiment

    workdir = tmp_path_factory.mktemp("report_wd")
    cfg = load_config("digits_lt_tiny", OVERRIDES)
    run_experiment(cfg, workdir, ["plain", "discl_diverse_to_specific"], [0, 1], progress=False)
    run_experiment(cfg, workdir, ["discl_adaptive", "plain_rebalanced"], [0], progress=False)
    fake_sweep(workdir, cfg.name)
    return workdir, cfg


def fake_sweep(workdir, experiment):
    from harness.runs.tracking import Run

    parent = Run(workdir, experiment, "sweep-s", tags={"sweep": "true", "objective": "val/acc"})
    for trial, (lr, value) in enumerate([(0.001, 0.5), (0.01, 0.7)]):
        child = Run(
            workdir,
            experiment,
            f"s-trial{trial}",
            parent_run_id=parent.id,
            tags={"sweep": "s", "sweep_trial": str(trial), "seed": "0"},
        )
        child.log_params({"lr": lr})
        child.log_metrics({"objective/0": value, "test/acc": 0.99})
        child.end()
    parent.end()


@pytest.fixture(scope="module")
def report(store):
    from reports import build_report

    workdir, cfg = store
    out = workdir / "report"
    index = build_report(cfg.name, workdir, out, paper=True)
    return index, out


def method_runs_from_mlflow(workdir, experiment) -> pd.DataFrame:
    """Independently of reports.collect: the finished runs tagged with a method, one row each."""
    from mlflow.tracking import MlflowClient

    from harness.core.workdir import tracking_uri

    c = MlflowClient(tracking_uri(workdir))
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'")
    rows = [
        {"method": r.data.tags["method"], "seed": int(r.data.tags["seed"]), **r.data.metrics}
        for r in runs
        if "method" in r.data.tags and r.data.tags.get("report") != "true"
    ]
    return pd.DataFrame(rows)


def markdown_row(markdown: str, label: str) -> str:
    """The Markdown table's row of ``label`` (cells are padded to the column's width)."""
    return next(line for line in markdown.splitlines() if line.startswith("|") and line.split("|")[1].strip() == label)


@pytest.mark.slow
def test_table_cells_match_the_runs(store, report):
    workdir, cfg = store
    _, out = report
    runs = method_runs_from_mlflow(workdir, cfg.name)
    assert sorted(runs.groupby("method").seed.count()) == [1, 1, 2, 2]
    table = pd.read_csv(out / "tables" / "results.csv", index_col="method")
    markdown = (out / "tables" / "results.md").read_text()
    for method, group in runs.groupby("method"):
        row = markdown_row(markdown, method)
        for metric in ["test/acc", "test/acc_many", "test/acc_medium", "test/acc_few"]:
            values = group[metric].dropna() * 100
            assert table.loc[method, f"{metric}:mean"] == pytest.approx(values.mean())
            assert table.loc[method, f"{metric}:n"] == len(values)
            cell = f"{values.mean():.2f}" + (f" ({values.std(ddof=1):.2f})" if len(values) > 1 else "")
            assert cell in row
        assert table.loc[method, "seeds"] == group.seed.nunique()


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_best_mean_is_bold_and_paper_columns_are_labelled(report):
    _, out = report
    table = pd.read_csv(out / "tables" / "results.csv", index_col="method")
    markdown = (out / "tables" / "results.md").read_text()
    best = table["test/acc:mean"].idxmax()
    row = markdown_row(markdown, best)
    assert f"**{table.loc[best, 'test/acc:mean']:.2f}" in row
    assert "All (paper)" in markdown and "not ours" in markdown
    from reports.paper import paper_row, table_for

    # the paper's row that matches plain (CE) beside our plain fine-tune, each of its values in its column
    metrics = [m for m in ("test/acc", "test/acc_many", "test/acc_medium", "test/acc_few") if f"{m}:mean" in table]
    ref = table_for("digits_lt", metrics)
    row = paper_row(ref, "plain", "ce")
    plain = markdown_row(markdown, "plain")
    assert row and row in [c.strip() for c in plain.split("|")]
    assert all(ref.rows[row][ref.metrics[m]] in plain for m in metrics)
    assert "\\textbf{" in (out / "tables" / "results.tex").read_text()


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_paired_differences_per_seed(store, report):
    workdir, cfg = store
    _, out = report
    runs = method_runs_from_mlflow(workdir, cfg.name)
    diffs = pd.read_csv(out / "tables" / "vs_plain.csv")
    row = diffs[(diffs.label == "discl_diverse_to_specific") & (diffs.metric == "test/acc")].iloc[0]
    ours = runs[runs.method == "discl_diverse_to_specific"].set_index("seed")["test/acc"]
    base = runs[runs.method == "plain"].set_index("seed")["test/acc"]
    assert row.n == 2
    assert row.mean_diff == pytest.approx(((ours - base) * 100).mean())
    single = diffs[diffs.label == "discl_adaptive"]
    assert (single.n == 1).all() and single.ci_low.isna().all()  # one paired seed: no interval
    assert "n=1, no CI" in (out / "tables" / "vs_plain.md").read_text()
    assert (out / "tables" / "vs_plain_rebalanced.md").exists()


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_figures_exist_and_are_not_blank(report):
    from harness.runs.plots import is_blank

    _, out = report
    for name in FIGURES + ["sweep_sweep-s", "sweep_sweep-s_params"]:
        path = out / "figures" / f"{name}.png"
        assert path.exists(), name
        assert not is_blank(path), name


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_page_references_every_table_and_figure(report):
    index, out = report
    page = index.read_text()
    refs = set(re.findall(r"(?:src|href)='([^']+)'", page))
    files = {p.relative_to(out).as_posix() for p in out.glob("tables/*")} | {
        p.relative_to(out).as_posix() for p in out.glob("figures/*.png")
    }
    assert files <= refs
    for ref in refs:
        assert not ref.startswith(("http:", "https:", "/")), ref  # offline, relative
        assert (out / ref).exists(), ref
    assert "<script" not in page and "stylesheet" not in page


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_report_run_is_logged_and_never_taken_for_a_method_run(store, report):
    from mlflow.tracking import MlflowClient

    from harness.core.workdir import tracking_uri
    from harness.runs.finished import finished_run
    from harness.runs.paths import run_config_hash
    from reports import build_report
    from reports.collect import collect

    workdir, cfg = store
    build_report(cfg.name, workdir, workdir / "report2")  # a second report run
    c = MlflowClient(tracking_uri(workdir))
    exp = c.get_experiment_by_name(cfg.name)
    reports = c.search_runs([exp.experiment_id], filter_string="tags.report = 'true'")
    assert len(reports) == 2
    logged = {f.path for f in c.list_artifacts(reports[0].info.run_id)}
    assert {"index.html", "tables", "figures"} <= logged
    found = finished_run(workdir, cfg, "plain", 0, run_config_hash(cfg, "plain"))
    assert found is not None and "report" not in found.data.tags
    rs = collect(cfg.name, workdir, workdir / "dl")
    assert len(rs.runs) == 6 and set(rs.runs.method) == {
        "plain",
        "discl_diverse_to_specific",
        "discl_adaptive",
        "plain_rebalanced",
    }
    assert len(rs.sweep_runs) == 3


def test_paired_ci_on_a_hand_made_example():
    from reports.tables import excludes_zero, paired_ci, paired_differences

    mean, low, high = paired_ci([1.0, 2.0, 3.0])  # sd 1, sem 1/√3, t(0.975, 2) = 4.3027
    assert mean == 2.0
    assert low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert high == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
    assert not excludes_zero(low, high)
    mean, low, high = paired_ci([1.0, 1.5, 2.0])
    assert low == pytest.approx(1.5 - 4.302653 * 0.5 / math.sqrt(3), abs=1e-5) and excludes_zero(low, high)
    mean, low, high = paired_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)

    runs = pd.DataFrame(
        {
            "label": ["plain"] * 3 + ["x"] * 2,
            "method": ["plain"] * 3 + ["x"] * 2,
            "loss": "ce",
            "seed": [0, 1, 2, 0, 2],
            "test/acc": [0.5, 0.6, 0.7, 0.52, 0.75],
        }
    )
    diffs = paired_differences(runs, "plain", ["test/acc"])
    (row,) = diffs.itertuples()
    assert row.n == 2 and row.seeds == "0 2"  # seed 1 has no partner: not paired
    assert row.mean_diff == pytest.approx(np.mean([2.0, 5.0]))


def test_cli_without_runs_says_to_run_first(tmp_path, capsys):
    from harness.cli import main

    assert main(["report", "--experiment", "nothing_here", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "harness run" in err


def test_iwildcam_table_gets_the_paper_iwildcam_columns():
    from reports import tables

    runs = pd.DataFrame(
        {
            "label": ["plain"] * 3 + ["discl_adaptive"] * 3,
            "method": ["plain"] * 3 + ["discl_adaptive"] * 3,
            "loss": "ce",
            "seed": [0, 1, 2] * 2,
            "test_ood/f1_macro": [0.30, 0.31, 0.32, 0.35, 0.36, 0.37],
            "test_id/f1_macro": [0.5] * 3 + [0.53] * 3,
        }
    )
    t = tables.results_table(runs, ["plain", "discl_adaptive"], paper=True, dataset="iwildcam")
    assert list(t.cells.columns) == ["OOD F1", "OOD (paper)", "ID F1", "ID (paper)", "seeds", "paper row"]
    assert t.cells.loc["discl_adaptive", "OOD (paper)"] == "38.2 (0.5)"
    assert t.cells.loc["plain", "OOD F1"] == "31.00 (1.00)" and t.bold.loc["discl_adaptive", "OOD F1"]
    assert not t.bold.loc["plain", "OOD F1"]


def test_writers_render_bold_best_and_mean_std_in_every_format():
    """The Markdown (tabulate), LaTeX and HTML (pandas Styler) renderings of one table: the same mean (std)
    cells, the best mean bold in each format's way, special characters escaped."""
    from reports import tables

    runs = pd.DataFrame(
        {
            "label": ["plain"] * 2 + ["discl_λ→1"] * 2,
            "method": ["plain"] * 2 + ["discl_λ→1"] * 2,
            "loss": "ce",
            "seed": [0, 1] * 2,
            "test/acc": [0.30, 0.32, 0.35, 0.39],
        }
    )
    t = tables.results_table(runs, ["plain", "discl_λ→1"])
    markdown, latex, page = tables.to_markdown(t), tables.to_latex(t), tables.to_html(t)
    assert "31.00 (1.41)" in markdown_row(markdown, "plain") and "**" not in markdown_row(markdown, "plain")
    assert "**37.00 (2.83)**" in markdown_row(markdown, "discl_λ→1")
    assert r"discl\_$\lambda$$\to$1 & \textbf{37.00 (2.83)} & 2 \\" in latex
    assert r"plain & 31.00 (1.41) & 2 \\" in latex and r"\toprule" in latex and r"mean (std)" in latex
    assert re.search(r"#T_results_row1_col0 \{\s*font-weight: bold;\s*\}", page)  # the second row's Overall cell
    assert re.search(r'id="T_results_row1_col0"[^>]*>37.00 \(2.83\)</td>', page)
    assert not re.search(r"#T_results_row0_col\d \{\s*font-weight", page)


def test_the_page_escapes_text_and_keeps_the_tables_html(tmp_path):
    from reports import page, tables
    from reports.figures import Figure

    runs = pd.DataFrame({"label": ["plain"] * 2, "method": ["plain"] * 2, "loss": "ce", "seed": [0, 1]})
    t = tables.results_table(runs.assign(**{"test/acc": [0.3, 0.32]}), ["plain"])
    files = tables.write_table(t, tmp_path / "tables")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "f.png").write_bytes(b"png")
    fig = Figure("f", "A <b>title</b>", "caption & more", tmp_path / "figures" / "f.png")
    index = page.write_page(tmp_path, "exp<script>", ["a <i>line</i>"], [(t, files)], [fig])
    text = index.read_text()
    assert "<script>" not in text and "exp&lt;script&gt;" in text
    assert "a &lt;i&gt;line&lt;/i&gt;" in text and "A &lt;b&gt;title&lt;/b&gt;" in text and "caption &amp; more" in text
    assert '<table id="T_results">' in text  # the table's own HTML, not escaped
    assert "<img src='figures/f.png'" in text and "<a href='tables/results.csv'>csv</a>" in text


def test_sweep_figures_are_optunas_plots_of_the_trial_runs(tmp_path):
    import types

    import matplotlib

    from reports.figures.sweep import save_sweep_figures, study_from_runs

    parent = {"run_id": "p", "status": "FINISHED", "start_time": 0, "tags.mlflow.runName": "sweep-s"}
    parent["tags.objective"] = "val/acc"
    trials = [
        {
            "run_id": f"t{i}",
            "status": "FINISHED",
            "start_time": i + 1,
            "tags.mlflow.parentRunId": "p",
            "params.lr": str(lr),
            "params.method": method,
            "params.config.x": "1",
            "metrics.objective/0": value,
        }
        for i, (lr, method, value) in enumerate([(0.1, "a", 0.5), (0.01, "b", float("nan")), (0.001, "b", 0.7)])
    ]
    frame = pd.DataFrame([parent, *trials])
    study = study_from_runs(frame[frame.run_id != "p"], "objective/0")
    assert [t.value for t in study.trials] == [0.5, 0.7]  # the trial without its objective is left out
    assert study.trials[1].params == {"lr": 0.001, "method": "b"} and study.best_value == 0.7
    style = dict(matplotlib.rcParams)
    made = save_sweep_figures(types.SimpleNamespace(sweep_runs=frame), tmp_path)
    assert [f.name for f in made] == ["sweep_sweep-s", "sweep_sweep-s_params", "sweep_sweep-s_importances"]
    assert all(f.path.is_file() for f in made)
    assert dict(matplotlib.rcParams) == style  # Optuna's ggplot style does not leak into the other figures
