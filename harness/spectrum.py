"""Phase 3: the synthetic spectrum. For each hard image, ``seeds`` images at each guidance level λ.

Images are written beside a JSON-lines manifest, which is the truth about what exists: an image is written
(atomically) before its manifest row, so a killed job resumes where it stopped and never duplicates a row.
Work is split into shards by item position, so ``world`` processes each generate a disjoint part.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from harness.config import SpectrumConfig
from harness.data.base import DatasetBundle
from harness.generators.base import GenerationItem, Generator
from harness.io import append_jsonl, atomic_path, read_jsonl
from harness.seeding import sample_seed


@dataclass(frozen=True)
class PlannedImage:
    key: str
    source_index: int  # into the training split
    source_id: str
    label: int
    lam: float
    seed_index: int
    seed: int
    prompt: str
    file: str


def class_prompts(spec: SpectrumConfig, class_names: list[str]) -> list[list[str]]:
    """Per class, the prompts to cycle through: descriptions from a JSON file, else the template."""
    descriptions = {}
    if spec.descriptions:
        path = Path(spec.descriptions)
        if not path.is_file():
            raise FileNotFoundError(f"spectrum.descriptions: no file {path} (a JSON of class name → [descriptions])")
        descriptions = json.loads(path.read_text())
    return [list(descriptions.get(name) or [spec.prompt.format(name=name)]) for name in class_names]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def plan_spectrum(data: DatasetBundle, hard: np.ndarray, spec: SpectrumConfig) -> list[PlannedImage]:
    """Every image of the spectrum, ordered by λ (one denoising schedule per λ batches well)."""
    prompts = class_prompts(spec, data.class_names)
    train = data.train
    plan = []
    for lam in spec.levels:
        for i in hard:
            sid, label = train.ids[i], int(train.labels[i])
            for s in range(spec.seeds):
                options = prompts[label]
                plan.append(PlannedImage(
                    key=f"{sid}|{lam:.4f}|{s}", source_index=int(i), source_id=sid, label=label, lam=float(lam),
                    seed_index=s, seed=sample_seed(sid, lam, s), prompt=options[s % len(options)],
                    file=f"images/{safe_name(sid)}_l{round(lam * 1000):04d}_s{s}.png"))
    return plan


def manifest_files(pool_dir: Path) -> list[Path]:
    return sorted(pool_dir.glob("manifest*.jsonl"))


def read_manifest(pool_dir: Path) -> pd.DataFrame:
    """All shards' rows, one per key (the first written wins if a row was somehow repeated)."""
    rows = [r for path in manifest_files(pool_dir) for r in read_jsonl(path)]
    frame = pd.DataFrame(rows, columns=[f for f in PlannedImage.__dataclass_fields__])
    return frame.drop_duplicates("key").sort_values(["lam", "source_index", "seed_index"]).reset_index(drop=True)


def generate_spectrum(generator: Generator, data: DatasetBundle, plan: list[PlannedImage], pool_dir: Path,
                      batch_size: int, rank: int = 0, world: int = 1, progress: bool = True) -> int:
    """Generate this shard's missing images; returns how many were made now."""
    pool_dir.mkdir(parents=True, exist_ok=True)
    done = set(read_manifest(pool_dir).key)
    mine = [p for n, p in enumerate(plan) if n % world == rank and p.key not in done]
    manifest = pool_dir / (f"manifest.shard{rank:03d}.jsonl" if world > 1 else "manifest.jsonl")
    bar = tqdm(total=len(mine), desc=f"generate spectrum{f' [{rank}/{world}]' if world > 1 else ''}",
               unit="img", disable=not progress, mininterval=2)
    for lam in sorted({p.lam for p in mine}):
        todo = [p for p in mine if p.lam == lam]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            # each real image read once per batch, not once per seed
            raw = {i: data.train.raw(i) for i in dict.fromkeys(p.source_index for p in chunk)}
            items = [GenerationItem(p.source_id, raw[p.source_index], p.label, p.prompt, p.seed) for p in chunk]
            images = generator.generate(items, lam)
            for p, img in zip(chunk, images):
                (pool_dir / p.file).parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(pool_dir / p.file) as tmp:
                    img.save(tmp, format="PNG")
            append_jsonl(manifest, [p.__dict__ for p in chunk])
            bar.update(len(chunk))
    bar.close()
    return len(mine)
