"""Paired tests over (seed, test image) from the predictions every run logs: a two-level bootstrap interval and the
per-seed exact McNemar test, for a named comparison A − B.

Seed-paired t-intervals over a handful of seeds are wide; both models were scored on the same test images, so the
images carry most of the evidence. The bootstrap resamples seeds with replacement and, inside each drawn seed, the
test images with replacement, the same images for A and B; its statistic is the mean over the drawn seeds of
metric(A) − metric(B), the quantity the seed-paired t-interval is about. A metric depends on the images only through
how many of each (true label, A's prediction, B's prediction) triple there are, so one image resample is one
multinomial draw over a seed's distinct triples: exact, and fast on 50 000 test images.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse, stats

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # with each row's name, the RNG seed of its bootstrap: a report is the same every time it is built
CHUNK = 500  # image resamples drawn at once (bounds the (resamples × distinct triples) weight matrix)
# a metric's prefix (the reported test split) → the predictions file its run logged (predictions/<split>.csv)
SPLIT_FILES = {"test": "test", "test_id": "id_test", "test_ood": "test"}
SHOT_GROUPS = ("many", "medium", "few")
Triples = tuple[np.ndarray, np.ndarray, np.ndarray]  # one seed's (true label, A's prediction, B's prediction)


# --------------------------------------------------------------------------- the statistics


def metric_of(kind: str, weights: np.ndarray, triples: np.ndarray, column: int) -> np.ndarray:
    """Per row of ``weights`` (resamples × distinct triples): the metric ``kind`` ('acc' or 'f1_macro') of the
    predictions in ``column`` (1: A, 2: B) of ``triples`` weighted by that row."""
    y, pred = triples[:, 0], triples[:, column]
    n = weights.sum(1)
    if kind == "acc":
        return weights @ (y == pred) / np.maximum(n, 1)
    classes = np.unique(np.concatenate([y, pred]))
    truth, said = indicator(y, classes), indicator(pred, classes)
    true_c, said_c, hit_c = (np.asarray((m.T @ weights.T).T) for m in (truth, said, truth.multiply(said)))
    present = true_c > 0  # macro F1 over the labels present in the (resampled) truth, as wilds scores it
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(present, 2 * hit_c / (true_c + said_c), 0.0)
    return f1.sum(1) / np.maximum(present.sum(1), 1)


def indicator(values: np.ndarray, classes: np.ndarray) -> sparse.csr_matrix:
    """Sparse one-hot (rows × classes): a weighted count per class costs one product per row, not per class."""
    rows = np.arange(len(values))
    return sparse.csr_matrix(
        (np.ones(len(values)), (rows, np.searchsorted(classes, values))), (len(values), len(classes))
    )


def distinct(kind: str, seed: Triples) -> tuple[np.ndarray, np.ndarray]:
    """A seed's distinct (y, a, b) triples and how many images each holds; for accuracy only whether A and B are
    right matters, so at most four (0, A wrong, B wrong) triples."""
    y, a, b = (np.asarray(v) for v in seed)
    if kind == "acc":
        y, a, b = np.zeros_like(y), (a != y).astype(y.dtype), (b != y).astype(y.dtype)
    return np.unique(np.stack([y, a, b], axis=1), axis=0, return_counts=True)


def seed_difference(kind: str, seed: Triples) -> float:
    triples, counts = distinct(kind, seed)
    w = counts[None, :].astype(float)
    return float(metric_of(kind, w, triples, 1)[0] - metric_of(kind, w, triples, 2)[0])


def resampled_differences(kind: str, seed: Triples, m: int, rng: np.random.Generator) -> np.ndarray:
    """metric(A) − metric(B) on ``m`` resamples of the seed's images (with replacement, the same images for both)."""
    triples, counts = distinct(kind, seed)
    n = int(counts.sum())
    out = []
    for start in range(0, m, CHUNK):
        w = rng.multinomial(n, counts / n, size=min(CHUNK, m - start)).astype(float)
        out.append(metric_of(kind, w, triples, 1) - metric_of(kind, w, triples, 2))
    return np.concatenate(out) if out else np.zeros(0)


def paired_bootstrap(
    seeds: list[Triples],
    kind: str = "acc",
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    rng: np.random.Generator | int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """Mean over seeds of metric(A) − metric(B) and its percentile interval from a bootstrap that draws seeds, then
    each drawn seed's images, with replacement; a seed drawn twice gets two independent image resamples.
    (nan, nan, nan) without seeds; seeds without images are left out."""
    seeds = [s for s in seeds if len(s[0])]
    if not seeds:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(rng)
    point = float(np.mean([seed_difference(kind, s) for s in seeds]))
    k = len(seeds)
    drawn = rng.integers(0, k, size=(resamples, k))
    diffs = np.empty((resamples, k))
    for i, seed in enumerate(seeds):
        where = drawn == i
        diffs[where] = resampled_differences(kind, seed, int(where.sum()), rng)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs.mean(1), [tail, 100 - tail])
    return point, float(low), float(high)


def mcnemar_p(seed: Triples) -> float:
    """Exact McNemar test of one seed: a binomial test (p = ½) on the images exactly one of A and B gets right;
    1.0 when there are none."""
    y, a, b = (np.asarray(v) for v in seed)
    only_a = int(np.sum((a == y) & (b != y)))
    only_b = int(np.sum((a != y) & (b == y)))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


# --------------------------------------------------------------------------- from the logged predictions


def parse_metric(metric: str) -> tuple[str, str, str] | None:
    """``test/acc_many`` → (test split prefix, metric kind, group): ('test', 'acc', 'many'); None when the metric
    is not one this module can recompute from predictions."""
    prefix, _, name = metric.partition("/")
    if name in ("acc", "f1_macro"):
        return prefix, name, "overall"
    if name.startswith("acc_") and name[4:] in SHOT_GROUPS:
        return prefix, "acc", name[4:]
    return None


def predictions(artifact: Callable[[str, str], Path | None], run_id: str, prefix: str) -> pd.DataFrame | None:
    local = artifact(run_id, f"predictions/{SPLIT_FILES.get(prefix, prefix)}.csv")
    return pd.read_csv(local) if local is not None else None


def shot_groups(artifact: Callable[[str, str], Path | None], run_id: str) -> np.ndarray | None:
    """Per class, its shot group, from the run's logged ``data/class_counts.csv``."""
    local = artifact(run_id, "data/class_counts.csv")
    if local is None:
        return None
    counts = pd.read_csv(local).sort_values("class")
    return counts.shot_group.to_numpy()


def joined_predictions(runs: pd.DataFrame, artifact: Callable, a: str, b: str, prefix: str) -> dict[int, pd.DataFrame]:
    """Per seed both labels ran: one row per test image with y_true, pred_a, pred_b (and the image's metadata, e.g.
    its location, and its shot group when the run logged class counts)."""
    one, other = (runs[runs.label == x].set_index("seed").run_id for x in (a, b))
    out = {}
    for seed in sorted(set(one.index) & set(other.index)):
        pa, pb = predictions(artifact, one[seed], prefix), predictions(artifact, other[seed], prefix)
        if pa is None or pb is None:
            continue
        frame = pa.rename(columns={"y_pred": "pred_a"}).merge(
            pb[["index", "id", "y_true", "y_pred"]].rename(columns={"y_pred": "pred_b"}), on=["index", "id", "y_true"]
        )
        groups = shot_groups(artifact, one[seed])
        if groups is not None:
            frame["shot_group"] = groups[frame.y_true.to_numpy()]
        out[int(seed)] = frame
    return out


def row_rng(name: str) -> np.random.Generator:
    return np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(name.encode())])


def triples_of(frame: pd.DataFrame) -> Triples:
    return frame.y_true.to_numpy(), frame.pred_a.to_numpy(), frame.pred_b.to_numpy()


def comparison_row(name: str, kind: str, by_seed: dict[int, pd.DataFrame], level: float = 0.95) -> dict:
    """One row of the table: A − B in percentage points by the bootstrap and by the seed t-interval (both from the
    predictions), the per-seed McNemar p-values, the seeds and images behind them."""
    from reports.tables import excludes_zero, paired_ci

    kept = {s: f for s, f in by_seed.items() if len(f)}
    seeds = [triples_of(f) for f in kept.values()]
    mean, low, high = paired_bootstrap(seeds, kind, level=level, rng=row_rng(name))
    per_seed = [seed_difference(kind, s) * 100 for s in seeds]
    _, t_low, t_high = paired_ci(per_seed, level)
    return {
        "comparison": name,
        "kind": kind,
        "mean_diff": mean * 100,
        "boot_low": low * 100,
        "boot_high": high * 100,
        "boot_excludes_zero": excludes_zero(low, high),
        "t_low": t_low,
        "t_high": t_high,
        "mcnemar_p": " ".join(f"{s}:{mcnemar_p(t):.3g}" for s, t in zip(kept, seeds)),
        "seeds": len(kept),
        "images": int(sum(len(f) for f in kept.values())),
    }


def metric_rows(name: str, metric: str, by_seed: dict[int, pd.DataFrame]) -> list[dict]:
    """The rows of one reported metric: overall or its shot group, and per location where the images have one."""
    prefix, kind, group = parse_metric(metric)
    if group != "overall":
        if not all("shot_group" in f for f in by_seed.values()):
            return []
        by_seed = {s: f[f.shot_group == group] for s, f in by_seed.items()}
    rows = [{"metric": metric, "location": "", **comparison_row(name, kind, by_seed)}]
    if group == "overall" and by_seed and all("location" in f for f in by_seed.values()):
        places = sorted(set().union(*(f.location.unique() for f in by_seed.values())))
        for place in places:
            at = {s: f[f.location == place] for s, f in by_seed.items()}
            rows.append({"metric": metric, "location": str(place), **comparison_row(f"{name} @ {place}", kind, at)})
    return rows


def image_paired_rows(runs: pd.DataFrame, artifact: Callable, pairs: list[tuple[str, str]], metrics: list[str]):
    """Every comparison's rows, for the metrics this module can recompute, from the predictions each run logged."""
    from reports.tables import column_name

    rows = []
    for a, b in pairs:
        cache: dict[str, dict[int, pd.DataFrame]] = {}
        for metric in (m for m in metrics if parse_metric(m)):
            prefix = parse_metric(metric)[0]
            if prefix not in cache:
                cache[prefix] = joined_predictions(runs, artifact, a, b, prefix)
            if cache[prefix]:
                name = f"{a} − {b} · {column_name(metric)}"
                rows += [{"a": a, "b": b, **r} for r in metric_rows(name, metric, cache[prefix])]
    return pd.DataFrame(rows)


def image_paired_tables(runs: pd.DataFrame, artifact: Callable, pairs: list[tuple[str, str]], decimals: int = 2):
    """The named comparisons paired over (seed, test image): one table for overall and shot-group rows, one per
    location where the test images have locations (iWildCam); none without logged predictions."""
    from reports.tables import table_metrics

    rows = image_paired_rows(runs, artifact, pairs, table_metrics(runs))
    if rows.empty:
        return []
    everywhere, by_place = rows[rows.location == ""], rows[rows.location != ""]
    tables = [image_table("contrasts_images", "Named comparisons paired over (seed, test image)", everywhere, decimals)]
    if not by_place.empty:
        title = "Named comparisons per test location, paired over (seed, test image)"
        tables.append(image_table("contrasts_locations", title, by_place, decimals))
    return tables


def image_table(name: str, title: str, rows: pd.DataFrame, decimals: int):
    from reports.tables import Table

    rows = rows.reset_index(drop=True)
    cells = pd.DataFrame(index=pd.Index(rows.comparison, name="comparison"))
    d = decimals
    cells["A − B"] = [f"{v:+.{d}f}" if v == v else "—" for v in rows.mean_diff]
    cells["95% bootstrap, seeds × images"] = [
        interval(lo, hi, d) + (" ‡" if x else "")
        for lo, hi, x in zip(rows.boot_low, rows.boot_high, rows.boot_excludes_zero)
    ]
    cells["95% t-interval, seeds"] = [interval(lo, hi, d) for lo, hi in zip(rows.t_low, rows.t_high)]
    cells["McNemar p per seed"] = rows.mcnemar_p.to_numpy()
    cells["seeds"] = rows.seeds.astype(str).to_numpy()
    cells["images"] = rows.images.astype(str).to_numpy()
    bold = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    bold["95% bootstrap, seeds × images"] = rows.boot_excludes_zero.to_numpy()
    notes = [
        "A − B in percentage points, recomputed from the test predictions each run logged: the mean over the "
        "paired seeds of metric(A) − metric(B).",
        f"95% bootstrap, seeds × images: percentile interval of {BOOTSTRAP_RESAMPLES} resamples that draw seeds, "
        "then each drawn seed's test images, with replacement (the same images for A and B); RNG seed "
        f"{BOOTSTRAP_SEED} and the row's name, so a rebuilt report shows the same interval. Bold and ‡ where it "
        "excludes zero.",
        "95% t-interval, seeds: the seed-paired t-interval of the contrasts table (images fixed, seeds only); "
        "blank with fewer than two seeds.",
        "McNemar p per seed (seed:p): exact two-sided binomial test on the images exactly one of A and B classifies "
        "correctly; it tests accuracy, whatever the row's metric. No correction for multiple comparisons.",
        "images: the test images of the row's group, summed over the paired seeds.",
    ]
    return Table(name, title, cells, rows.set_index("comparison"), bold, notes)


def interval(low: float, high: float, decimals: int) -> str:
    if low != low or high != high:
        return "—"
    return f"[{low:+.{decimals}f}, {high:+.{decimals}f}]"
