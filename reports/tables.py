"""Tables from the runs: mean (std) over seeds per method, and paired differences against the baselines.

A ``Table`` holds display strings, which cells to bold and a numeric frame for CSV; the writers render the
same table as Markdown, LaTeX, HTML and CSV, so the formats cannot disagree.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from harness.core.errors import HarnessError
from reports import paper as paper_numbers

# our final metric → column name, in the paper's order; long-tail first, then iWildCam
KNOWN_METRICS = {
    "test/acc_many": "Many",
    "test/acc_medium": "Medium",
    "test/acc_few": "Few",
    "test/acc": "Overall",
    "test_ood/f1_macro": "OOD F1",
    "test_id/f1_macro": "ID F1",
    "test_ood/acc": "OOD acc",
    "test_id/acc": "ID acc",
}
BASELINES = ("plain", "plain_rebalanced")


@dataclass
class Table:
    name: str  # file stem
    title: str
    cells: pd.DataFrame  # display strings; index = row labels
    numeric: pd.DataFrame  # what the CSV holds
    bold: pd.DataFrame | None = None  # same shape as cells
    notes: list[str] = field(default_factory=list)

    def is_bold(self, row, col) -> bool:
        return self.bold is not None and col in self.bold.columns and bool(self.bold.loc[row, col])


def table_metrics(runs: pd.DataFrame) -> list[str]:
    """The final test metrics the runs logged: known ones in the paper's order, then any other ``test*``."""
    logged = [c for c in runs.columns if c.split("/")[0].startswith("test") and runs[c].notna().any()]
    return [m for m in KNOWN_METRICS if m in logged] + sorted(m for m in logged if m not in KNOWN_METRICS)


def column_name(metric: str) -> str:
    return KNOWN_METRICS.get(metric, metric)


def summary_stats(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Long form: label, metric, mean, std, n — in percent, std with ddof=1 (NaN for one seed)."""
    long = runs.melt(id_vars=["label"], value_vars=metrics, var_name="metric").dropna(subset=["value"])
    long["value"] *= 100
    grouped = long.groupby(["label", "metric"], sort=False).value
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    return out


def best_mask(means: pd.DataFrame, decimals: int) -> pd.DataFrame:
    """True where a row's mean is the column's best as displayed (ties all bold); higher is better."""
    rounded = means.round(decimals)
    return rounded.eq(rounded.max(axis=0), axis=1) & rounded.notna()


def results_table(
    runs: pd.DataFrame, order: list[str], decimals: int = 2, paper: bool = False, dataset: str = ""
) -> Table:
    metrics = table_metrics(runs)
    st = summary_stats(runs, metrics)
    mean = st.pivot(index="label", columns="metric", values="mean").reindex(index=order, columns=metrics)
    std = st.pivot(index="label", columns="metric", values="std").reindex(index=order, columns=metrics)
    n = st.pivot(index="label", columns="metric", values="n").reindex(index=order, columns=metrics)
    seeds = runs.groupby("label").seed.nunique().reindex(order)
    cells = pd.DataFrame(index=order)
    for m in metrics:
        cells[column_name(m)] = [
            format_mean_std(a, b, k, s, decimals) for a, b, k, s in zip(mean[m], std[m], n[m], seeds)
        ]
    cells["seeds"] = seeds.astype(str)
    bold = best_mask(mean, decimals).set_axis([column_name(m) for m in metrics], axis=1)
    numeric = pd.concat({"mean": mean, "std": std, "n": n}, axis=1)
    numeric.columns = [f"{m}:{stat}" for stat, m in numeric.columns]
    numeric.insert(0, "seeds", seeds)
    notes = ["mean (std) over seeds of the final test metric, in %; std with ddof = 1; best mean in bold."]
    table = Table("results", "Test metrics per method", cells, numeric.rename_axis("method"), bold, notes)
    if paper:
        add_paper_columns(table, runs, metrics, dataset)
    return table


def format_mean_std(mean: float, std: float, n: float, seeds: int, decimals: int) -> str:
    if mean != mean:
        return "—"
    text = f"{mean:.{decimals}f}" if n < 2 else f"{mean:.{decimals}f} ({std:.{decimals}f})"
    return text if n == seeds else f"{text} [n={int(n)}]"


def add_paper_columns(table: Table, runs: pd.DataFrame, metrics: list[str], dataset: str) -> None:
    """Beside each of our columns with a counterpart in the paper, the paper's value for the matching row."""
    ref = paper_numbers.table_for(dataset, metrics)
    if ref is None:
        table.notes.append("no paper table matches these metrics.")
        return
    identity = runs.drop_duplicates("label").set_index("label")
    rows = {
        label: paper_numbers.paper_row(ref, identity.loc[label, "method"], identity.loc[label, "loss"])
        for label in table.cells.index
    }
    cols: list[str] = []
    for m in metrics:
        ours = column_name(m)
        cols.append(ours)
        if m in ref.metrics:
            col = f"{ref.metrics[m]} (paper)"
            table.cells[col] = [ref.rows[r][ref.metrics[m]] if r else "—" for r in rows.values()]
            table.numeric[f"paper:{ref.metrics[m]}"] = [
                ref.rows[r][ref.metrics[m]] if r else None for r in rows.values()
            ]
            cols.append(col)
    table.cells["paper row"] = [r or "—" for r in rows.values()]
    table.numeric["paper row"] = list(rows.values())
    table.cells = table.cells[cols + ["seeds", "paper row"]]
    table.notes.append(f"columns marked (paper) are the paper's numbers, not ours — {ref.title}.")


# --------------------------------------------------------------------------- paired differences


def paired_ci(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the per-seed differences and its t-interval; (mean, nan, nan) when n < 2 or when the differences do
    not vary (the t-interval needs a variance estimate: two seeds with the same difference prove nothing)."""
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(d.mean())
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    sem = float(stats.sem(d))
    if sem <= 1e-9 * max(1.0, abs(mean)):  # zero up to rounding (differences of float accuracies)
        return mean, float("nan"), float("nan")
    low, high = stats.t.interval(level, len(d) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def excludes_zero(low: float, high: float) -> bool:
    return (low > 0 or high < 0) if low == low and high == high else False


def diff_rows(one: pd.DataFrame, other: pd.DataFrame, metrics: list[str], level: float = 0.95, **ids) -> list[dict]:
    """Per metric: ``one`` − ``other`` (runs indexed by seed, the seeds both have) in %, its mean and t-interval;
    ``ids`` name the row (label, baseline, …)."""
    paired = one[metrics].join(other[metrics], rsuffix=":b", how="inner")
    rows = []
    for m in metrics:
        d = (paired[m] - paired[f"{m}:b"]).dropna() * 100
        mean, low, high = paired_ci(d.to_numpy(), level)
        rows.append(
            {
                **ids,
                "metric": m,
                "n": len(d),
                "mean_diff": mean,
                "ci_low": low,
                "ci_high": high,
                "excludes_zero": excludes_zero(low, high),
                "seeds": " ".join(str(s) for s in d.index),
            }
        )
    return rows


def diff_cells(diffs: pd.DataFrame, labels: list[str], metrics: list[str], decimals: int):
    """Display strings and bold marks of a difference table: one row per label, one column per metric."""
    cells = pd.DataFrame(index=labels)
    bold = pd.DataFrame(False, index=labels, columns=[column_name(m) for m in metrics])
    for m in metrics:
        sub = diffs[diffs.metric == m].set_index("label").reindex(labels)
        cells[column_name(m)] = [format_diff(r, decimals) for r in sub.itertuples()]
        bold[column_name(m)] = sub.excludes_zero.fillna(False).astype(bool).to_numpy()
    cells["paired seeds"] = [str(int(diffs[diffs.label == lab].n.max())) for lab in labels]
    return cells, bold


def paired_differences(runs: pd.DataFrame, baseline: str, metrics: list[str], level: float = 0.95) -> pd.DataFrame:
    """Per label (against the baseline with the same loss) and metric: n, mean diff, CI, excludes_zero, in %."""
    rows = []
    for label, group in runs.groupby("label", sort=False):
        method, loss = group.method.iloc[0], group.loss.iloc[0]
        base = runs[(runs.method == baseline) & (runs.loss == loss)]
        if method == baseline or base.empty:
            continue
        ids = {"label": label, "baseline": baseline}
        rows += diff_rows(group.set_index("seed"), base.set_index("seed"), metrics, level, **ids)
    return pd.DataFrame(
        rows, columns=["label", "baseline", "metric", "n", "mean_diff", "ci_low", "ci_high", "excludes_zero", "seeds"]
    )


def difference_table(runs: pd.DataFrame, baseline: str, order: list[str], decimals: int = 2) -> Table | None:
    if baseline not in set(runs.method):
        return None
    metrics = table_metrics(runs)
    diffs = paired_differences(runs, baseline, metrics)
    if diffs.empty:
        return None
    labels = [lab for lab in order if lab in set(diffs.label)]
    cells, bold = diff_cells(diffs, labels, metrics, decimals)
    notes = [
        f"difference to {baseline} (same loss), paired by seed, in percentage points: mean "
        f"[95% t-interval over seeds]; bold and † where the interval excludes zero."
    ]
    if ((diffs.n >= 2) & (diffs.ci_low == diffs.ci_high)).any():
        notes.append("an interval of zero width means every paired seed gave the same difference.")
    if (diffs.n < 2).any():
        notes.append("n < 2 paired seeds: no interval can be computed (shown as 'n=1, no CI').")
    return Table(f"vs_{baseline}", f"Paired difference vs {baseline}", cells, diffs, bold, notes)


def parse_contrast(text: str) -> tuple[str, str]:
    """``A:B`` → (A, B); a colon, since method names hold ``_`` and may hold ``-``."""
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise ContrastError(f"--contrast {text!r}: expected METHOD_A:METHOD_B (A − B, paired by seed)")
    return a.strip(), b.strip()


class ContrastError(HarnessError, ValueError):
    pass


def contrast_table(runs: pd.DataFrame, pairs: list[tuple[str, str]], decimals: int = 2) -> Table | None:
    """Named comparisons (e.g. a pre-registered A vs B): per pair, A − B in percentage points, paired by seed, with
    its 95% t-interval, for every final metric. A label missing from the runs is an error, not an empty row."""
    if not pairs:
        return None
    known = list(dict.fromkeys(runs.label))
    missing = sorted({x for pair in pairs for x in pair if x not in known})
    if missing:
        names, have = ", ".join(missing), ", ".join(known)
        raise ContrastError(f"--contrast names {names}, which has no finished runs; known: {have}")
    metrics = table_metrics(runs)
    rows = []
    for a, b in pairs:
        one, other = (runs[runs.label == x].set_index("seed") for x in (a, b))
        rows += diff_rows(one, other, metrics, label=f"{a} − {b}", a=a, b=b)
    diffs = pd.DataFrame(rows)
    labels = list(dict.fromkeys(diffs.label))
    cells, bold = diff_cells(diffs, labels, metrics, decimals)
    notes = [
        "A − B in percentage points, paired by seed: mean [95% t-interval over seeds]; bold and † where the "
        "interval excludes zero. Each row is one named comparison; no correction for multiple comparisons."
    ]
    return Table("contrasts", "Named comparisons (A − B)", cells, diffs, bold, notes)


def format_diff(row, decimals: int) -> str:
    if row.n != row.n or row.n == 0:
        return "—"
    if row.n < 2:
        return f"{row.mean_diff:+.{decimals}f} (n=1, no CI)"
    mark = " †" if row.excludes_zero else ""
    return f"{row.mean_diff:+.{decimals}f} [{row.ci_low:+.{decimals}f}, {row.ci_high:+.{decimals}f}]{mark}"


# --------------------------------------------------------------------------- writers


def bold_cells(t: Table) -> pd.DataFrame:
    """True for each cell of ``t.cells`` shown in bold."""
    bold = t.bold if t.bold is not None else pd.DataFrame(index=t.cells.index)
    return bold.reindex(index=t.cells.index, columns=t.cells.columns).fillna(False).astype(bool)


def styler(t: Table, bold_css: str, escape: str | None, formatter=None):
    """``t.cells`` as a pandas ``Styler``: cells, row and column labels escaped by pandas for ``escape`` and/or
    by ``formatter``, bold cells styled with ``bold_css``, the row labels' header named as the index (``method``)."""
    frame = t.cells.rename_axis(index=None, columns=t.cells.index.name or "method")
    return (
        frame.style.set_uuid(t.name)
        .apply(lambda _: bold_cells(t).map(lambda b: bold_css if b else ""), axis=None)
        .format(formatter, escape=escape)
        .format_index(formatter, escape=escape, axis=0)
        .format_index(formatter, escape=escape, axis=1)
    )


def to_markdown(t: Table) -> str:
    frame = t.cells.where(~bold_cells(t), "**" + t.cells.astype(str) + "**")
    text = frame.rename_axis(t.cells.index.name or "method").to_markdown(tablefmt="pipe", disable_numparse=True)
    return "\n".join([text, ""] + [f"_{n}_" for n in t.notes]) + "\n"


LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "λ": r"$\lambda$",
    "→": r"$\to$",
    "—": "--",
}


def latex_escape(text: str) -> str:
    """LaTeX's special characters escaped, and the symbols pdflatex has no glyph for as math or dashes."""
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(t: Table) -> str:
    body = styler(t, "textbf:--rwrap;", None, latex_escape).to_latex(
        caption=latex_escape(t.title),
        hrules=True,  # booktabs rules
        position="t",
        position_float="centering",
        column_format="l" + "r" * len(t.cells.columns),
    )
    notes = "".join(rf"\par\footnotesize {latex_escape(n)}" + "\n" for n in t.notes)
    body = body.replace("\\end{table}", notes + "\\end{table}")
    return r"% generated by `harness report` from MLflow runs; needs \usepackage{booktabs}" + "\n" + body


def to_html(t: Table) -> str:
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in t.notes)
    return styler(t, "font-weight: bold", "html").to_html() + notes


def write_table(t: Table, folder: Path) -> dict[str, Path]:
    """``NAME.md``, ``NAME.tex`` and ``NAME.csv`` in ``folder``; returns them by format."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"md": folder / f"{t.name}.md", "tex": folder / f"{t.name}.tex", "csv": folder / f"{t.name}.csv"}
    paths["md"].write_text(f"### {t.title}\n\n" + to_markdown(t))
    paths["tex"].write_text(to_latex(t))
    t.numeric.to_csv(paths["csv"], index=t.numeric.index.name is not None)
    return paths
