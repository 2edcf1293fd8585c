"""Reports rebuilt from MLflow: tables (Markdown, LaTeX, CSV), figures (PNG) and one offline ``index.html``.

``build_report`` collects an experiment's finished method runs, writes everything under ``out`` and logs the
whole folder as the artifacts of a ``report`` run (tag ``report=true``, no ``method`` tag, so neither the
collector nor ``harness run``'s finished-run lookup mistakes it for a method run).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("harness")


def build_report(
    experiment: str,
    workdir: Path,
    out: Path | None = None,
    paper: bool = False,
    log_to_mlflow: bool = True,
    contrasts: list[tuple[str, str]] | None = None,
) -> Path:
    """Write the report of ``experiment`` to ``out`` (default WORKDIR/reports/EXPERIMENT); returns index.html.

    Raises ``reports.collect.NoRunsError`` when the experiment has no finished method runs.
    """
    from reports import figures, page, tables
    from reports.collect import collect

    workdir = Path(workdir)
    out = Path(out) if out is not None else workdir / "reports" / experiment
    with tempfile.TemporaryDirectory(prefix="harness-report-") as downloads:
        rs = collect(experiment, workdir, Path(downloads))
        made = report_tables(rs, paper, contrasts)  # before removing anything: a bad --contrast keeps the old report
        for sub in ("tables", "figures"):  # only what this build writes; stale files would mislead
            shutil.rmtree(out / sub, ignore_errors=True)
        written = [(t, tables.write_table(t, out / "tables")) for t in made]
        figs = figures.build_figures(rs, out / "figures")
        index = page.write_page(out, experiment, summary_lines(rs, paper), written, figs)
    if log_to_mlflow:
        log_report_run(workdir, experiment, out, rs)
    return index


def report_tables(rs, paper: bool, contrasts: list[tuple[str, str]] | None = None) -> list:
    from reports import paired, tables
    from reports import paper as paper_numbers
    from reports.post_hoc import with_post_hoc_rows

    dataset = ",".join(rs.tags.get("dataset", []).dropna().unique()) if "dataset" in rs.tags else ""
    runs, order = with_post_hoc_rows(rs.runs, rs.methods)  # "+ WiSE-FT", "+ τ-norm" beside each method that has them
    made = [tables.results_table(runs, order, paper=paper, dataset=dataset)]
    made += [t for b in tables.BASELINES if (t := tables.difference_table(runs, b, order)) is not None]
    if (named := tables.contrast_table(rs.runs, contrasts or [])) is not None:
        made.append(named)
        made += paired.image_paired_tables(rs.runs, rs.artifact, contrasts)
    if paper:
        ref = paper_numbers.table_for(dataset, tables.table_metrics(rs.runs))
        if ref is not None:
            frame = paper_numbers.as_frame(ref)
            made.append(
                tables.Table(
                    "paper",
                    ref.title,
                    frame,
                    frame,
                    notes=["The paper's numbers as published, not ours (DISCL.md §6)."],
                )
            )
    return made


def summary_lines(rs, paper: bool) -> list[str]:
    import pandas as pd

    runs = rs.runs
    seeds = runs.groupby("label").seed.nunique()
    lines = [
        f"{len(runs)} finished runs: {len(seeds)} methods, seeds per method "
        f"{seeds.min()}–{seeds.max()} (seeds {', '.join(map(str, sorted(runs.seed.unique())))})."
    ]
    if "dataset" in rs.tags:
        lines.append("dataset: " + ", ".join(rs.tags.dataset.dropna().unique()))
    if "recipe" in rs.tags:  # which column of `harness recipe` the runs followed: the paper's text or the released code
        lines.append("recipe followed: " + ", ".join(rs.tags.recipe.dropna().unique()))
    if "git_commit" in rs.tags:
        commits = rs.tags.git_commit.dropna().unique()
        lines.append(f"code: {len(commits)} git commit(s): " + ", ".join(c[:10] for c in commits))
    hashes = rs.tags.get("config_hash", pd.Series(dtype=str)).groupby(runs.set_index("run_id").label).nunique()
    for label, n in hashes[hashes > 1].items():
        lines.append(f"warning: the runs of {label} come from {n} different configs (config_hash).")
    differing = differing_settings(rs)
    if differing:
        lines.append(
            "warning: the runs differ in settings other than method and seed: "
            + ", ".join(differing[:8])
            + (" …" if len(differing) > 8 else "")
        )
    if rs.superseded:
        lines.append(f"{rs.superseded} older run(s) of the same method and seed were superseded by newer ones.")
    if not rs.sweep_runs.empty:
        lines.append(f"{len(rs.sweep_runs)} sweep run(s) shown in their own figures, not in the tables.")
    if paper:
        lines.append("columns and tables marked 'paper' hold the paper's published numbers, not ours.")
    return lines


RUN_IDENTITY = ("method", "seed", "methods", "seeds", "name", "description")


def differing_settings(rs) -> list[str]:
    """Config keys whose logged value is not the same in every run (besides what names the run); a loss that
    differs is expected (it splits the rows) and not listed."""
    params = rs.params.drop(
        columns=[
            c
            for c in rs.params.columns
            if c in RUN_IDENTITY or c.startswith(("method_params.", "tracking.", "launcher.")) or c == "train.loss"
        ]
    )
    varying = params.nunique(dropna=False)
    return sorted(varying[varying > 1].index)


def log_report_run(workdir: Path, experiment: str, out: Path, rs) -> str:
    from harness.runs.tracking import Run
    from reports import page

    run = Run(
        workdir,
        experiment,
        "report",
        tags={"report": "true", "experiment": experiment, "report_runs": str(len(rs.runs))},
    )
    try:
        for sub in ("tables", "figures"):  # only what the build wrote, whatever else lives in ``out``
            if (out / sub).is_dir():
                run.c.log_artifacts(run.id, str(out / sub), sub)
        run.log_text(page.self_contained(out / "index.html"), "index.html")  # figures inline for MLflow's viewer
        run.describe(
            f"Report of {experiment} over {len(rs.runs)} finished runs: open index.html under Artifacts "
            "(tables, figures); the same files are in tables/ and figures/."
        )
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
    log.info("report logged as MLflow run %s", run.id)
    return run.id
