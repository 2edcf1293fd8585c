"""``spectrum.max_tries``: regenerate a sample whose text score is at or under the filter threshold (next
description, own seed), in rounds, and keep each sample's best try (``selected.json``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from harness.config import SpectrumConfig
from harness.core.io import write_json
from harness.data.base import DatasetBundle
from harness.engine.seeding import sample_seed
from harness.generators.base import Generator
from harness.phases.spectrum.generate import generate_spectrum
from harness.phases.spectrum.manifest import RETRIES, SELECTED, read_all_tries
from harness.phases.spectrum.plan import PlannedImage, slot_key
from harness.phases.spectrum.prompts import class_prompts

log = logging.getLogger("harness")


def retry_item(p: PlannedImage, t: int, options: list[str]) -> PlannedImage:
    """Try ``t`` of a sample: the next description after the one try 0 used, and its own seed."""
    return PlannedImage(
        key=f"{p.key}|t{t}",
        source_index=p.source_index,
        source_id=p.source_id,
        label=p.label,
        lam=p.lam,
        seed_index=p.seed_index,
        seed=sample_seed(p.source_id, p.lam, p.seed_index, t),
        prompt=options[(p.seed_index + t) % len(options)],
        file=p.file.removesuffix(".png") + f"_t{t}.png",
        try_index=t,
    )


def retry_low_scores(
    generator: Generator,
    data: DatasetBundle,
    plan: list[PlannedImage],
    pool_dir: Path,
    spec: SpectrumConfig,
    threshold: float,
    text_scores,
    batch_size: int,
    store: Path | None = None,
    progress: bool = True,
) -> int:
    """The authors' ImageNet-LT regeneration, in rounds: score every try so far (``text_scores(frame)`` → {key:
    text score}, scoring only what is not cached), regenerate each sample whose tries all score ≤ ``threshold``
    with its next try, up to ``spec.max_tries``; then keep each sample's best try (``selected.json``). Resumable:
    tries are in ``retries.jsonl``, and generation and scores skip what exists. Returns how many retries exist."""
    labels = sorted({p.label for p in plan})
    prompts = class_prompts(spec, data.class_names, labels)
    for t in range(1, spec.max_tries):
        tries = read_all_tries(pool_dir)
        scores = text_scores(tries)
        tries = tries.assign(text_score=[scores[k] for k in tries.key], slot=slot_column(tries))
        best = tries[tries["try"] < t].groupby("slot").text_score.max()
        failing = [p for p in plan if best.get(p.slot, float("inf")) <= threshold]
        if not failing:
            break
        log.info("spectrum: try %d of %d for %d samples scoring ≤ %g", t + 1, spec.max_tries, len(failing), threshold)
        retries = [retry_item(p, t, prompts[p.label]) for p in failing]
        generate_spectrum(
            generator, data, retries, pool_dir, batch_size, progress=progress, store=store, manifest_name=RETRIES
        )
    tries = read_all_tries(pool_dir)
    scores = text_scores(tries)
    tries = tries.assign(text_score=[scores[k] for k in tries.key], slot=slot_column(tries))
    # the best try of each sample; among equal scores the earliest
    kept = tries.sort_values(["slot", "text_score", "try"], ascending=[True, False, True]).drop_duplicates("slot")
    write_json(pool_dir / SELECTED, {"keys": sorted(kept.key), "max_tries": spec.max_tries, "threshold": threshold})
    return int((tries["try"] > 0).sum())


def slot_column(frame: pd.DataFrame) -> list[str]:
    return [slot_key(*r) for r in zip(frame.source_id, frame.lam, frame.seed_index)]
