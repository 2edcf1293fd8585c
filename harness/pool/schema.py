"""What an exported pool is made of: its files, its typed columns, the generation settings it must share with a run
that imports it, and how a row is addressed (source, λ, seed index, try). Export, fit check and import all read
these, so they agree by construction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from harness.config import Config
from harness.config.keys import GENERATION_VERSION, params_identity

FORMATS = ("parquet", "imagefolder")
META_FILE = "harness_pool.json"
# the columns the fit check and the import's image lookup read (``try`` too, when the pool has retries)
LOOKUP_COLUMNS = ["source_id", "label", "lam", "seed_index", "seed", "prompt"]


def pool_features(class_names: list[str], with_try: bool = False):
    """The typed columns of an exported pool: one row per generated image."""
    from datasets import ClassLabel, Features, Value
    from datasets import Image as ImageFeature

    columns = {
        "image": ImageFeature(),
        "label": ClassLabel(names=list(class_names)),
        "class_name": Value("string"),
        "source_id": Value("string"),
        "source_index": Value("int64"),
        "lam": Value("float64"),
        "seed_index": Value("int32"),
        "seed": Value("int64"),
        **({"try": Value("int32")} if with_try else {}),
        # ``spectrum.max_tries``: whether this try is the one its sample kept (every row, when there are no retries)
        **({"selected": Value("bool")} if with_try else {}),
        "prompt": Value("string"),
        "key": Value("string"),
        "text_score": Value("float64"),
        "image_score": Value("float64"),
        "keep": Value("bool"),
        "generator": Value("string"),
        "generator_model": Value("string"),
        "generator_params": Value("string"),  # JSON: model id and revision, weights, … as configured
        "scheduler": Value("string"),
        "steps": Value("int32"),
        "guidance_scale": Value("float64"),
        "width": Value("int32"),
        "height": Value("int32"),
    }
    return Features(columns)


def generation_identity(cfg: Config) -> dict:
    """The settings besides sources, levels, seeds and prompts that decide a pool's images (flat)."""
    g, s = cfg.generator, cfg.spectrum
    identity = {"generator.name": g.name, "generation_version": GENERATION_VERSION}
    identity |= {f"generator.params.{k}": v for k, v in params_identity("generator", g.name, g.params).items()}
    identity |= {
        "spectrum.steps": s.steps,
        "spectrum.guidance_scale": s.guidance_scale,
        "spectrum.scheduler": s.scheduler,
    }
    return json.loads(json.dumps(identity, default=str))  # as it reads back from JSON


def lookup_key(source_id: str, lam: float, seed_index: int, try_index: int = 0) -> tuple:
    return (str(source_id), round(float(lam), 6), int(seed_index), int(try_index))


def try_column(rows: pd.DataFrame) -> np.ndarray:
    """Each row's ``try`` (0 for a pool exported before retries had one)."""
    return rows["try"].to_numpy(dtype=np.int64) if "try" in rows else np.zeros(len(rows), dtype=np.int64)
