"""The shards of one generation job: which sources each of ``world`` processes generates, the locks that let shards
run in parallel and the merge step run once, and rank 0's wait for the other shards."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from harness.core.io import lock
from harness.phases.spectrum.manifest import ManifestTail
from harness.phases.spectrum.plan import PlannedImage

log = logging.getLogger("harness")


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


def shard_lock(pool_dir: Path, rank: int):
    """The lock of one generation shard: shards of one pool run in parallel, each under its own lock and never
    waiting for another; two processes given the same shard take turns (the second finds it done)."""
    return lock(pool_dir / f"generate.shard{rank:03d}")


def merge_lock(pool_dir: Path):
    """The lock of the step that retries, checks and marks a pool complete (``complete.json``)."""
    return lock(pool_dir / "generate")


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
