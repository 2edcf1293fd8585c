"""`harness recipe`'s two columns: every "authors" cell cited path:line at the commit read (and, with the mirrors
here, every cited line there), the status judged against the column an experiment follows (`recipe: paper | code`),
`cannot reproduce` where no setting can follow it, probes that read the config, and the recipe logged and reported."""

import pytest


def row(table, setting):
    return table.set_index("setting").loc[setting]


# rows whose code value is a setting or method of a branch not merged yet, though their keys exist here


def all_rows():
    from harness.plan.recipe import recipe_facts

    return [(family, row) for family, rows in recipe_facts().items() for row in rows]


def test_every_authors_cell_cites_path_and_line():
    from harness.plan.recipe import citations

    uncited = [f"{family}: {row['setting']}" for family, row in all_rows() if not citations(row["authors"])]
    assert uncited == []
    assert citations("x (a/b.py:12, 40-41; FLYP/src/c.py:3)") == [
        ("a/b.py", 12, 12),
        ("a/b.py", 40, 41),
        ("FLYP/src/c.py", 3, 3),
    ]


def test_every_cited_line_exists_at_the_commit_read():
    import subprocess
    from functools import cache
    from pathlib import Path

    from harness.plan.recipe import citations, recipe_sources

    sources = {s["cite_as"]: s for s in recipe_sources()}
    mirrors = {k: Path("/work/.mirror") / s["repo"].replace("/", "+") / "repo" for k, s in sources.items()}
    if not all(m.is_dir() for m in mirrors.values()):
        pytest.skip("the authors' repositories are not mirrored on this machine")

    @cache
    def line_count(prefix: str, path: str) -> int | None:
        shown = subprocess.run(
            ["git", "-C", str(mirrors[prefix]), "show", f"{sources[prefix]['commit']}:{path}"], capture_output=True
        )
        return shown.stdout.count(b"\n") + (not shown.stdout.endswith(b"\n")) if shown.returncode == 0 else None

    wrong = []
    for family, row in all_rows():
        for cited, first, last in citations(row["authors"]):
            prefix = "FLYP/" if cited.startswith("FLYP/") else ""
            n = line_count(prefix, cited.removeprefix(prefix))
            if n is None or not 1 <= first <= last <= n:
                wrong.append(f"{family}: {row['setting']}: {cited}:{first}-{last} ({n} lines)")
    assert wrong == []


def test_harness_recipe_prints_the_commits_read(capsys):
    from harness.cli import main
    from harness.plan.recipe import recipe_sources

    assert main(["recipe", "-e", "imagenet_lt_suite_code"]) == 0
    printed = capsys.readouterr().out
    commits = [s["commit"] for s in recipe_sources()]
    assert len(commits) == 2 and all(len(c) == 40 and c in printed for c in commits)
    assert "follows the code column" in printed


def test_status_is_judged_against_the_column_the_experiment_follows():
    from harness.plan.recipe import recipe

    paper = row(recipe("imagenet_lt_suite"), "scheduler")
    assert paper.status == "same" and paper.authors.startswith("default (")  # the text's DDIM; the code's default
    assert row(recipe("imagenet_lt_suite", ["recipe=code"]), "scheduler").status == "deviation"
    assert row(recipe("imagenet_lt_suite_code"), "scheduler").status == "same"
    levels = row(recipe("iwildcam_suite_code"), "image guidance levels")
    assert levels.status == "same" and levels.ours == "curriculum.levels = [0.5, 0.6, 0.7, 0.8, 0.9]"
    assert row(recipe("iwildcam_suite"), "image guidance levels").status == "same"
    assert row(recipe("iwildcam_suite_code"), "fixed guidance λ").status == "same"  # the --curriculum run's λ 0.5


def test_a_row_no_setting_can_follow_is_cannot_reproduce_with_its_reason():
    from harness.plan.recipe import recipe, unexplained

    bs_code = recipe("imagenet_lt_bs_suite", ["recipe=code"])
    assert row(bs_code, "loss").status == "cannot reproduce"
    assert "no Balanced Softmax" in row(bs_code, "loss").reason
    assert row(recipe("imagenet_lt_bs_suite"), "loss").status == "same"
    seeds = row(recipe("iwildcam_suite_code"), "generator seeds")
    assert seeds.status == "cannot reproduce" and seeds.reason
    assert row(recipe("iwildcam_suite"), "generator seeds").status == "deviation"
    assert unexplained(bs_code) == []


@pytest.mark.parametrize("experiment", ["imagenet_lt_suite_code", "iwildcam_suite_code"])
def test_a_code_experiment_deviates_only_where_no_setting_can_follow(experiment):
    from harness.config import load_config
    from harness.plan.recipe import recipe

    assert load_config(experiment).recipe == "code"
    table = recipe(experiment)
    assert table[table.status == "deviation"].setting.tolist() == []
    assert (table.status == "cannot reproduce").any()


def test_the_paper_suites_follow_the_code_where_the_text_is_silent():
    from harness.config import load_config

    assert load_config("imagenet_lt_suite").spectrum.max_tries == 6  # gene_img.py: up to 6 generations
    assert load_config("imagenet_lt_suite").recipe == "paper"
    assert load_config("digits_lt_tiny").recipe == "paper"  # the default


def test_the_adaptive_comparison_probe_reads_the_config():
    from harness.plan.recipe import recipe

    setting = "adaptive rule's first comparison"
    default = row(recipe("iwildcam_suite"), setting).ours
    assert default.startswith("against an evaluation before the first stage; mean gain, 1.5×IQR outliers dropped")
    changed = row(recipe("iwildcam_suite", ["curriculum.adaptive.drop_outliers=false"]), setting).ours
    assert "no outliers dropped" in changed and changed != default
    assert "median gain" in row(recipe("iwildcam_suite", ["curriculum.adaptive.statistic=median"]), setting).ours


def test_the_balanced_softmax_probe_reads_the_config_and_the_loss_code(monkeypatch):
    import torch

    from harness.engine import train
    from harness.plan.recipe import recipe

    setting = "Balanced Softmax prior"
    assert row(recipe("imagenet_lt_suite"), setting).ours == "not used (cross-entropy)"
    assert row(recipe("imagenet_lt_bs_suite"), setting).ours == "log of the natural training counts"
    assert row(recipe("imagenet_lt_suite", ["train.loss=balanced_softmax"]), setting).status == "deviation"
    monkeypatch.setattr(train, "log_prior", lambda data: torch.zeros(len(data.train_counts)))
    assert row(recipe("imagenet_lt_bs_suite"), setting).ours == "another prior"


def test_adding_the_recipe_field_keeps_every_cache_key():
    from harness.config import load_config
    from harness.config.keys import base_key, pool_key, run_key

    cfg = load_config("imagenet_lt_suite")
    code = load_config("imagenet_lt_suite", ["recipe=code"])
    assert base_key(cfg) == base_key(code) and pool_key(cfg) == pool_key(code)
    assert run_key(cfg, "plain") == run_key(code, "plain")


def test_the_report_says_which_recipe_the_runs_followed():
    from types import SimpleNamespace

    import pandas as pd

    from reports import summary_lines

    runs = pd.DataFrame({"run_id": ["a", "b"], "label": ["plain", "plain"], "seed": [0, 1]})
    tags = pd.DataFrame({"recipe": ["code", "code"]}, index=["a", "b"])
    rs = SimpleNamespace(
        runs=runs, tags=tags, params=pd.DataFrame(index=["a", "b"]), superseded=0, sweep_runs=pd.DataFrame()
    )
    assert "recipe followed: code" in summary_lines(rs, paper=False)


@pytest.mark.slow
def test_every_run_logs_the_recipe_it_followed(tiny_runs):
    from harness.runs.tracking import client

    c = client(tiny_runs)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    tagged = [r for r in runs if "method" in r.data.tags]
    assert tagged and all(r.data.tags.get("recipe") == "paper" for r in tagged)
    assert all(r.data.params.get("recipe") == "paper" for r in tagged)
