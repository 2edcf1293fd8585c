"""Whether an exported pool holds the experiment's planned spectrum: every mismatch (classes, generation settings,
sources, levels, seeds, labels, prompts, sample seeds, and the retries' labels, prompts and seeds) as one clause
each, so a pool that does not fit is refused in one line naming all of them. More levels or seeds than planned are
fine."""

from __future__ import annotations

import pandas as pd

from harness.config import Config
from harness.data.base import DatasetBundle
from harness.phases.spectrum import PlannedImage, class_prompts, retry_item
from harness.pool.schema import generation_identity, lookup_key, try_column


def fit_mismatches(cfg: Config, data: DatasetBundle, plan: list[PlannedImage], meta: dict, rows: pd.DataFrame) -> list:
    """Every way the pool fails to hold the experiment's planned spectrum (empty: it fits). More levels or seeds
    than planned are fine."""
    out = []
    theirs, ours = list(meta.get("class_names", [])), list(data.class_names)
    if theirs != ours:
        if len(theirs) != len(ours):
            out.append(f"classes: the pool has {len(theirs)}, the experiment {len(ours)}")
        else:
            diff = [i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b]
            i = diff[0]
            out.append(
                f"classes: {len(diff)} names differ, e.g. label {i} is {theirs[i]!r} in the pool, {ours[i]!r} here"
            )
    identity, here = meta.get("identity", {}), generation_identity(cfg)
    diff = [k for k in sorted(set(identity) | set(here)) if identity.get(k) != here.get(k)]
    if diff:
        out.append(
            "generator: "
            + ", ".join(
                f"{k} is {identity.get(k, '(unset)')!r} in the pool, {here.get(k, '(unset)')!r} here" for k in diff
            )
        )
    sources = dict.fromkeys(p.source_id for p in plan)
    have = set(rows.source_id.astype(str))
    missing = [s for s in sources if s not in have]
    if missing:
        out.append(f"hard sources: {len(missing)} of {len(sources)} not in the pool, e.g. {missing[0]!r}")
    pool_levels = sorted({round(float(x), 6) for x in rows.lam})
    lacking = [lam for lam in cfg.spectrum.levels if round(float(lam), 6) not in pool_levels]
    if lacking:
        out.append(
            f"levels: the pool lacks λ {', '.join(f'{x:g}' for x in lacking)} "
            f"(it has {', '.join(f'{x:g}' for x in pool_levels)})"
        )
    pool_seeds = int(rows.seed_index.max()) + 1 if len(rows) else 0
    if cfg.spectrum.seeds > pool_seeds:
        out.append(f"seeds: the experiment asks {cfg.spectrum.seeds} per (source, λ), the pool has {pool_seeds}")
    tries = try_column(rows)
    later = rows[tries > 0]
    rows = rows[tries == 0].reset_index(drop=True)  # the planned images are try 0; retries are checked below
    index = {lookup_key(s, lam, k): i for i, (s, lam, k) in enumerate(zip(rows.source_id, rows.lam, rows.seed_index))}
    found = [(p, index.get(lookup_key(p.source_id, p.lam, p.seed_index))) for p in plan]
    hits = [(p, i) for p, i in found if i is not None]
    labels = [(p, i) for p, i in hits if int(rows.label.iat[i]) != p.label]
    if labels:
        p, i = labels[0]
        out.append(
            f"labels: {len(labels)} images' classes differ, e.g. {p.source_id!r} is "
            f"{int(rows.label.iat[i])} in the pool, {p.label} here"
        )
    prompts = [(p, i) for p, i in hits if rows.prompt.iat[i] != p.prompt]
    if prompts:
        p, i = prompts[0]
        out.append(f"prompts: {len(prompts)} differ, e.g. {rows.prompt.iat[i]!r} in the pool, {p.prompt!r} here")
    seeds = [(p, i) for p, i in hits if int(rows.seed.iat[i]) != p.seed]
    if seeds:
        out.append(f"sample seeds: {len(seeds)} differ, e.g. {seeds[0][0].key!r}")
    if cfg.spectrum.max_tries > 1 and len(later):
        out += retry_mismatches(cfg, data, plan, later)
    absent = [p for p, i in found if i is None]
    if absent and not out:
        out.append(f"images: {len(absent)} of the {len(plan)} planned are not in the pool, e.g. {absent[0].key!r}")
    return out


def retry_mismatches(cfg: Config, data: DatasetBundle, plan: list[PlannedImage], later: pd.DataFrame) -> list:
    """The pool's later tries (``try`` > 0) of the planned samples against what a retry here would be
    (``retry_item``: the next description, its own seed); tries past this experiment's ``max_tries`` are unused."""
    planned = {lookup_key(p.source_id, p.lam, p.seed_index): p for p in plan}
    prompts = class_prompts(cfg.spectrum, data.class_names, sorted({p.label for p in plan}))
    labels, texts, seeds = [], [], []
    columns = (later.source_id, later.lam, later.seed_index, later["try"], later.label, later.prompt, later.seed)
    for sid, lam, k, t, label, prompt, seed in zip(*columns):
        p = planned.get(lookup_key(sid, lam, k))
        if p is None or int(t) >= cfg.spectrum.max_tries:
            continue
        want = retry_item(p, int(t), prompts[p.label])
        if int(label) != want.label:
            labels.append((want, int(label)))
        if prompt != want.prompt:
            texts.append((want, prompt))
        if int(seed) != want.seed:
            seeds.append((want, int(seed)))
    out = []
    if labels:
        (want, theirs), n = labels[0], len(labels)
        out.append(f"retry labels: {n} differ, e.g. {want.key!r} is {theirs} in the pool, {want.label} here")
    if texts:
        (want, theirs), n = texts[0], len(texts)
        out.append(f"retry prompts: {n} differ, e.g. {want.key!r} (try {want.try_index}) is {theirs!r} in the pool, "
                   f"{want.prompt!r} here")  # fmt: skip
    if seeds:
        (want, theirs), n = seeds[0], len(seeds)
        out.append(f"retry seeds: {n} differ, e.g. {want.key!r} (try {want.try_index}) has {theirs} in the pool, "
                   f"{want.seed} here")  # fmt: skip
    return out
