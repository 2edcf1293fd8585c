"""Generate a shard of the spectrum: its missing images, each written (atomically) before its manifest row, the
pixels stored once in the content-addressed image store and hard-linked into the pool."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from harness.core.io import append_jsonl, atomic_path
from harness.data.base import DatasetBundle
from harness.generators.base import GenerationItem, Generator
from harness.phases.spectrum.manifest import read_all_tries
from harness.phases.spectrum.plan import PlannedImage
from harness.phases.spectrum.shards import shard

log = logging.getLogger("harness")


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
