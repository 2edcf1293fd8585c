"""The merge step of a sharded spectrum: check that every planned image is in some shard's manifest, and mark the
pool complete (``complete.json``)."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.io import write_json
from harness.phases.spectrum.manifest import read_all_tries, read_manifest
from harness.phases.spectrum.plan import PlannedImage, slot_key
from harness.phases.spectrum.shards import source_blocks


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
