"""Phase 3: the synthetic spectrum. For each hard image, ``seeds`` images at each guidance level λ.

Images are written beside a JSON-lines manifest, which is the truth about what exists: an image is written
(atomically) before its manifest row, so a killed job resumes where it stopped and never duplicates a row.
Work is split into shards by contiguous blocks of sources, so ``world`` processes each generate a disjoint part.

Pixels live once in a content-addressed image store (``cache/images/STORE_KEY/``, keyed by what decides them: the
data, the generator and its settings; each file by source, λ, seed index, seed and prompt); a pool's
``images/`` are hard links into it (a copy where the file system has none), so a pool for more levels or seeds
generates only the images no pool has made yet. With ``spectrum.max_tries`` > 1 a sample whose text score is at or
under the filter threshold is regenerated (next description, own seed) and the best try is kept: tries are in
``retries.jsonl`` and ``selected.json`` names the kept try of every sample.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from harness.config import Config, ConfigError, SpectrumConfig, stable_hash
from harness.core.errors import HarnessError, MissingFileError
from harness.core.io import append_jsonl, atomic_path, lock, read_json, read_jsonl, write_json
from harness.data.base import DatasetBundle, FileImages, LabeledImages, TensorImages, to_tensor01
from harness.engine.seeding import sample_seed
from harness.generators.base import GenerationItem, Generator

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
    try_index: int = 0  # ``spectrum.max_tries``: which try of the sample (the manifest's ``try``)

    @property
    def slot(self) -> str:
        """The sample this image is a try of: (source, λ, seed index)."""
        return slot_key(self.source_id, self.lam, self.seed_index)

    def row(self) -> dict:
        row = dict(self.__dict__)
        row["try"] = row.pop("try_index")
        return row

    def image_hash(self) -> str:
        """What decides this image's pixels besides the store (data, generator and its settings)."""
        return stable_hash([self.source_id, f"{self.lam:.4f}", self.seed_index, self.seed, self.prompt, self.try_index])


MANIFEST_COLUMNS = [f if f != "try_index" else "try" for f in PlannedImage.__dataclass_fields__]
RETRIES = "retries.jsonl"
SELECTED = "selected.json"


def slot_key(source_id: str, lam: float, seed_index: int) -> str:
    return f"{source_id}|{float(lam):.4f}|{int(seed_index)}"


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


def read_description_names(path: str, num_classes: int) -> list[str]:
    """``spectrum.description_names``: the name of each label id as the descriptions JSON keys it (a text file, one
    name per line in label order, or a JSON list); names may repeat (the authors' ImageNet-LT list names two pairs
    of classes alike, which then share descriptions)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"spectrum.description_names: no file {file} (one name per label id, in label order)")
    text = file.read_text()
    if file.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"spectrum.description_names: {file} is not valid JSON ({e})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"spectrum.description_names: {file}: expected a JSON list of names in label order")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise ConfigError(
            f"spectrum.description_names: {file} has {len(names)} names for {num_classes} classes (one per label id)"
        )
    return names


def description_keys(spec: SpectrumConfig, class_names: list[str]) -> list[str]:
    """The key of each class in the descriptions JSON: ``spectrum.description_names`` when given, else its name."""
    if spec.description_names:
        return read_description_names(spec.description_names, len(class_names))
    return list(class_names)


def class_prompts(spec: SpectrumConfig, class_names: list[str], labels=None) -> list[list[str]]:
    """Per class, the prompts to cycle through: with ``spectrum.descriptions``, the class's descriptions (keyed by
    its ``description_keys`` name, or by its label id), each after ``spectrum.description_prefix``; else the
    template ``spectrum.prompt``. ``labels``: the classes that will be prompted (default: all); each must have
    descriptions when a descriptions file is given."""
    labels = range(len(class_names)) if labels is None else [int(c) for c in labels]
    if not spec.descriptions:
        return [[spec.prompt.format(name=name)] for name in class_names]
    descriptions = read_descriptions(spec.descriptions)
    keys = description_keys(spec, class_names)
    found = [descriptions.get(key) or descriptions.get(str(c)) for c, key in enumerate(keys)]
    missing = [keys[c] for c in labels if not found[c]]
    if missing:
        keyed = "spectrum.description_names" if spec.description_names else "the dataset's class names"
        raise ConfigError(
            f"spectrum.descriptions: {spec.descriptions} has no descriptions for {len(missing)} of the "
            f"{len(labels)} classes to prompt, e.g. {', '.join(repr(m) for m in missing[:3])} (keys "
            f"are {keyed} or label ids); add them, give spectrum.description_names, or drop spectrum.descriptions"
        )
    return [
        [spec.description_prefix + d for d in found[c]] if found[c] else [spec.prompt.format(name=name)]
        for c, name in enumerate(class_names)
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
    """All shards' rows, one per key (the first written wins if a row was somehow repeated). Once retries are
    decided (``selected.json``), one row per sample: its kept try."""
    frame = read_all_tries(pool_dir)
    if (pool_dir / SELECTED).exists():
        frame = frame[frame.key.isin(set(read_json(pool_dir / SELECTED)["keys"]))]
    else:
        frame = frame[frame["try"] == 0]
    return frame.sort_values(["lam", "source_index", "seed_index"]).reset_index(drop=True)


def read_all_tries(pool_dir: Path) -> pd.DataFrame:
    """Every image of the pool's folder, retries included, one row per key."""
    files = [*manifest_files(pool_dir), pool_dir / RETRIES]
    rows = [{"try": 0, **r} for path in files for r in read_jsonl(path)]  # pools before retries had no ``try``
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS).drop_duplicates("key").reset_index(drop=True)


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
    store: Path | None = None,
    manifest_name: str | None = None,
) -> int:
    """Bring this shard's missing images into the pool; returns how many were added now. With an image ``store``,
    an image the store has is linked, not generated, and a generated one is written to the store first."""
    pool_dir.mkdir(parents=True, exist_ok=True)
    done = set(read_all_tries(pool_dir).key)
    mine = [p for p in shard(plan, rank, world) if p.key not in done]
    name = manifest_name or (f"manifest.shard{rank:03d}.jsonl" if world > 1 else "manifest.jsonl")
    manifest = pool_dir / name
    if store is not None:
        reused = [p for p in mine if store_file(store, p).exists()]
        for start in range(0, len(reused), 1024):
            chunk = reused[start : start + 1024]
            for p in chunk:
                link_into(store_file(store, p), pool_dir / p.file)
            append_jsonl(manifest, [p.row() for p in chunk])
        if reused:
            log.info("spectrum: %d of %d images reused from the image store %s", len(reused), len(mine), store)
        reused_keys = {p.key for p in reused}
        mine = [p for p in mine if p.key not in reused_keys]
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
                target = pool_dir / p.file if store is None else store_file(store, p)
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(target) as tmp:
                    img.save(tmp, format="PNG")
                if store is not None:
                    link_into(target, pool_dir / p.file)
            append_jsonl(manifest, [p.row() for p in chunk])
            bar.update(len(chunk))
    bar.close()
    return len(mine) + (len(reused) if store is not None else 0)


def store_file(store: Path, p: PlannedImage) -> Path:
    h = p.image_hash()
    return store / h[:2] / f"{h}.png"


def link_into(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s pixels, atomically: a hard link (no second copy), or a copy where links fail."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    try:
        try:
            os.link(src, tmp)
        except FileExistsError:
            os.unlink(tmp)
            os.link(src, tmp)
        except OSError:  # no hard links here (another file system, or one without them)
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            os.unlink(tmp)


class IncompletePool(HarnessError):
    """The merge step found planned images in no shard's manifest (a generate task failed or has not run)."""


def check_shards(pool_dir: Path, plan: list[PlannedImage], world: int) -> None:
    """Raise ``IncompletePool`` (one line: how many images are missing and from which shards of ``world``) unless
    every planned image is in some manifest."""
    done = set(read_all_tries(pool_dir).key)
    missing = [p for p in plan if p.key not in done]
    if not missing:
        return
    block = source_blocks([p.source_index for p in plan], world)
    shards = sorted({block[p.source_index] for p in missing})
    where = f"shard{'s' if len(shards) > 1 else ''} {', '.join(map(str, shards))} of {world}"
    raise IncompletePool(
        f"spectrum incomplete: {len(missing)} of {len(plan)} planned images are in no manifest of {pool_dir} "
        f"({where}, e.g. {missing[0].key}); generate those shards again (finished images are reused)"
    )


def mark_complete(pool_dir: Path, plan, generator_settings: dict) -> None:
    pool = read_manifest(pool_dir)
    slots = {slot_key(*r) for r in zip(pool.source_id, pool.lam, pool.seed_index)}
    missing = [p.key for p in plan if p.slot not in slots]
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


def shard_lock(pool_dir: Path, rank: int):
    """The lock of one generation shard: shards of one pool run in parallel, each under its own lock and never
    waiting for another; two processes given the same shard take turns (the second finds it done)."""
    return lock(pool_dir / f"generate.shard{rank:03d}")


def merge_lock(pool_dir: Path):
    """The lock of the step that retries, checks and marks a pool complete (``complete.json``)."""
    return lock(pool_dir / "generate")


class ManifestTail:
    """The keys of a pool's manifests, read incrementally: each poll reads only the bytes appended since the last
    (a line still being written waits for its newline; a torn line is skipped like ``read_jsonl`` does)."""

    def __init__(self, pool_dir: Path):
        self.pool_dir, self.offsets, self.keys = pool_dir, {}, set()
        self.bytes_read = 0

    def poll(self) -> set[str]:
        for path in manifest_files(self.pool_dir):
            offset = self.offsets.get(path, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                new = f.read()
            end = new.rfind(b"\n") + 1  # whole lines only
            self.bytes_read += end
            self.offsets[path] = offset + end
            for line in new[:end].splitlines():
                try:
                    self.keys.add(json.loads(line)["key"])
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                    continue
        return self.keys


def wait_for_shards(pool_dir: Path, keys: set[str], poll_s: float = 2.0, timeout_s: float | None = None) -> None:
    """Rank 0: block until every planned key is in some shard's manifest (reading only what was appended since
    the last poll, never re-parsing whole manifests)."""
    start, last_log = time.monotonic(), 0.0
    tail = ManifestTail(pool_dir)
    while True:
        missing = len(keys - tail.poll())
        if not missing:
            return
        waited = time.monotonic() - start
        if timeout_s is not None and waited > timeout_s:
            raise TimeoutError(f"{missing} images of {pool_dir} still missing after {waited:.0f} s: did a rank die?")
        if waited - last_log >= 60:
            log.info("rank 0: waiting for the other shards (%d images to go)", missing)
            last_log = waited
        time.sleep(poll_s)


# --------------------------------------------------------------------------- retries (spectrum.max_tries)


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
