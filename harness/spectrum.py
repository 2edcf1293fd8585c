"""Phase 3: the synthetic spectrum. For each hard image, ``seeds`` images at each guidance level λ.

Images are written beside a JSON-lines manifest, which is the truth about what exists: an image is written
(atomically) before its manifest row, so a killed job resumes where it stopped and never duplicates a row.
Work is split into shards by contiguous blocks of sources, so ``world`` processes each generate a disjoint part.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from harness.config import Config, ConfigError, SpectrumConfig
from harness.data.base import DatasetBundle, FileImages, LabeledImages, TensorImages, to_tensor01
from harness.errors import MissingFileError
from harness.generators.base import GenerationItem, Generator
from harness.io import append_jsonl, atomic_path, lock, read_jsonl, write_json
from harness.seeding import sample_seed

log = logging.getLogger("harness")


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


# what loaders call a class they have no name for (``class_17``, FLYP's ``class 3``)
PLACEHOLDER_NAME = re.compile(r"class[ _-]?\d+", re.IGNORECASE)
HOW_TO_NAME = (
    "give the class names in a file: imagenet_lt data.params.class_names (one name per line in label "
    "order, or JSON), iwildcam data.params.common_names (JSON {y: name})"
)


def check_class_names(class_names: list[str], labels) -> None:
    """Prompts (and the CLIP filter's text) need real class names: a placeholder such as ``class_17`` is an error."""
    unnamed = [int(c) for c in labels if PLACEHOLDER_NAME.fullmatch(class_names[int(c)].strip())]
    if unnamed:
        c = unnamed[0]
        raise ConfigError(
            f"spectrum: class {c} has no name ({class_names[c]!r}; {len(unnamed)} classes with hard "
            f"images are unnamed), so its prompts cannot depict it; {HOW_TO_NAME}"
        )


def read_descriptions(path: str) -> dict[str, list[str]]:
    """``spectrum.descriptions``: a JSON object {class name: [description, ...]} (a single string is one)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingFileError(f"spectrum.descriptions: no file {file} (a JSON of class name → [descriptions])")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"spectrum.descriptions: {file} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)) for v in data.values()
    ):
        raise ConfigError(f'spectrum.descriptions: {file}: expected {{"class name": ["description", ...], ...}}')
    return {str(k): [v] if isinstance(v, str) else list(v) for k, v in data.items()}


def class_prompts(spec: SpectrumConfig, class_names: list[str], labels=None) -> list[list[str]]:
    """Per class, the prompts to cycle through: with ``spectrum.descriptions``, the class's descriptions, each after
    ``spectrum.description_prefix``; else the template ``spectrum.prompt``. ``labels``: the classes that will be
    prompted (default: all); each must have descriptions when a descriptions file is given."""
    labels = range(len(class_names)) if labels is None else [int(c) for c in labels]
    if not spec.descriptions:
        return [[spec.prompt.format(name=name)] for name in class_names]
    descriptions = read_descriptions(spec.descriptions)
    missing = [class_names[c] for c in labels if not descriptions.get(class_names[c])]
    if missing:
        raise ConfigError(
            f"spectrum.descriptions: {spec.descriptions} has no descriptions for {len(missing)} of the "
            f"{len(labels)} classes to prompt, e.g. {', '.join(repr(m) for m in missing[:3])} (keys "
            "are the dataset's class names); add them or drop spectrum.descriptions"
        )
    return [
        [spec.description_prefix + d for d in descriptions[name]]
        if name in descriptions
        else [spec.prompt.format(name=name)]
        for name in class_names
    ]


def prompts_frame(pool: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """``label,class_name,prompt``: one row per class in the pool (the classes with hard images), its prompts as
    generated (from the manifest, in order of use) joined with " | "."""
    if not len(pool) or "prompt" not in pool:
        return pd.DataFrame(columns=["label", "class_name", "prompt"])
    ordered = pool.sort_values(["label", "seed_index", "source_index", "lam"], kind="stable")
    prompts = ordered.groupby("label", sort=True)["prompt"].agg(lambda p: " | ".join(dict.fromkeys(p)))
    labels = prompts.index.astype(int)
    return pd.DataFrame({"label": labels, "class_name": [class_names[c] for c in labels], "prompt": prompts.to_numpy()})


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def plan_spectrum(data: DatasetBundle, hard: np.ndarray, spec: SpectrumConfig) -> list[PlannedImage]:
    """Every image of the spectrum, ordered by λ (one denoising schedule per λ batches well)."""
    train = data.train
    labels = np.unique(train.labels[np.asarray(hard, dtype=np.int64)])
    check_class_names(data.class_names, labels)
    prompts = class_prompts(spec, data.class_names, labels)
    plan = []
    for lam in spec.levels:
        for i in hard:
            sid, label = train.ids[i], int(train.labels[i])
            for s in range(spec.seeds):
                options = prompts[label]
                plan.append(
                    PlannedImage(
                        key=f"{sid}|{lam:.4f}|{s}",
                        source_index=int(i),
                        source_id=sid,
                        label=label,
                        lam=float(lam),
                        seed_index=s,
                        seed=sample_seed(sid, lam, s),
                        prompt=options[s % len(options)],
                        file=f"images/{safe_name(sid)}_l{round(lam * 1000):04d}_s{s}.png",
                    )
                )
    return plan


def manifest_files(pool_dir: Path) -> list[Path]:
    return sorted(pool_dir.glob("manifest*.jsonl"))


def read_manifest(pool_dir: Path) -> pd.DataFrame:
    """All shards' rows, one per key (the first written wins if a row was somehow repeated)."""
    rows = [r for path in manifest_files(pool_dir) for r in read_jsonl(path)]
    frame = pd.DataFrame(rows, columns=[f for f in PlannedImage.__dataclass_fields__])
    return frame.drop_duplicates("key").sort_values(["lam", "source_index", "seed_index"]).reset_index(drop=True)


def shard(plan: list[PlannedImage], rank: int, world: int) -> list[PlannedImage]:
    """This rank's items: those of a contiguous block of the sources (in plan order), so each rank reads, decodes
    and VAE-encodes each of its sources once and its batches share sources across seeds; every item still has
    its own seed, so the pool does not depend on the sharding."""
    block = source_blocks([p.source_index for p in plan], world)
    return [p for p in plan if block[p.source_index] == rank]


def source_blocks(source_indices, world: int) -> dict[int, int]:
    """Source → the rank that owns it: ``world`` contiguous blocks of the distinct sources, in first-seen order
    (generation and scoring shard alike)."""
    sources = list(dict.fromkeys(source_indices))
    return {s: i * world // max(1, len(sources)) for i, s in enumerate(sources)}


def generate_spectrum(
    generator: Generator,
    data: DatasetBundle,
    plan: list[PlannedImage],
    pool_dir: Path,
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
) -> int:
    """Generate this shard's missing images; returns how many were made now."""
    pool_dir.mkdir(parents=True, exist_ok=True)
    done = set(read_manifest(pool_dir).key)
    mine = [p for p in shard(plan, rank, world) if p.key not in done]
    manifest = pool_dir / (f"manifest.shard{rank:03d}.jsonl" if world > 1 else "manifest.jsonl")
    bar = tqdm(
        total=len(mine),
        desc=f"generate spectrum{f' [{rank}/{world}]' if world > 1 else ''}",
        unit="img",
        disable=not progress,
        mininterval=2,
    )
    for lam in sorted({p.lam for p in mine}):
        todo = [p for p in mine if p.lam == lam]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
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


def mark_complete(pool_dir: Path, plan, generator_settings: dict) -> None:
    keys = set(read_manifest(pool_dir).key)
    missing = [p.key for p in plan if p.key not in keys]
    if missing:
        raise RuntimeError(f"spectrum incomplete: {len(missing)} images missing, e.g. {missing[0]}")
    write_json(pool_dir / "complete.json", {"images": len(plan), "generator": generator_settings})


def load_pool_images(pool: pd.DataFrame, pool_dir: Path, cfg: Config, data: DatasetBundle) -> LabeledImages:
    """In memory (squashed to S×S) when the real images are in memory too, no transform is configured and the pool
    is small; otherwise read from disk and transformed like the real training images."""
    size, channels = cfg.data.image_size, data.channels
    in_memory = isinstance(data.train, TensorImages) and data.train_transform is None
    ids = list(pool.key)
    if in_memory and len(pool) * channels * size * size * 4 < 512 * 2**20:
        from PIL import Image

        images = (
            torch.stack([to_tensor01(Image.open(pool_dir / f), size, channels) for f in pool.file])
            if len(pool)
            else torch.zeros(0, channels, size, size)
        )
        return TensorImages(images, pool.label.to_numpy(), ids)
    return FileImages([pool_dir / f for f in pool.file], pool.label.to_numpy(), ids, size, channels)


# --------------------------------------------------------------------------- shards of one job


def generation_lock(pool_dir: Path, rank: int):
    """Rank 0 (or a one-process job) holds the pool's lock until the pool is complete, so a second job waits;
    rank r > 0 holds only its shard's lock, so the ranks of one job run in parallel."""
    return lock(pool_dir / "generate") if rank == 0 else lock(pool_dir / f"generate.shard{rank:03d}")


def wait_for_shards(pool_dir: Path, keys: set[str], poll_s: float = 2.0, timeout_s: float | None = None) -> None:
    """Rank 0: block until every planned key is in some shard's manifest."""
    start, last_log = time.monotonic(), 0.0
    while True:
        missing = len(keys - set(read_manifest(pool_dir).key))
        if not missing:
            return
        waited = time.monotonic() - start
        if timeout_s is not None and waited > timeout_s:
            raise TimeoutError(f"{missing} images of {pool_dir} still missing after {waited:.0f} s: did a rank die?")
        if waited - last_log >= 60:
            log.info("rank 0: waiting for the other shards (%d images to go)", missing)
            last_log = waited
        time.sleep(poll_s)
