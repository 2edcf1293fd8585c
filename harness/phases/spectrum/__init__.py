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

One job a module: ``prompts`` (class names, descriptions), ``plan`` (every image to make), ``manifest`` (what
exists), ``shards`` (who makes what, locks, waiting), ``generate`` (a shard's images, the image store),
``retries`` (``spectrum.max_tries``), ``merge`` (the pool complete), ``pool_images`` (a pool as a split). This
package re-exports the names the rest of the harness imports.
"""

from harness.phases.spectrum.generate import generate_spectrum
from harness.phases.spectrum.manifest import (
    RETRIES,
    SELECTED,
    ManifestTail,
    manifest_files,
    read_all_tries,
    read_manifest,
)
from harness.phases.spectrum.merge import IncompletePool, check_shards, mark_complete
from harness.phases.spectrum.plan import PlannedImage, plan_spectrum
from harness.phases.spectrum.pool_images import load_pool_images
from harness.phases.spectrum.prompts import class_prompts, prompts_frame
from harness.phases.spectrum.retries import retry_item, retry_low_scores
from harness.phases.spectrum.shards import merge_lock, shard, shard_lock, source_blocks, wait_for_shards

__all__ = [
    "RETRIES",
    "SELECTED",
    "IncompletePool",
    "ManifestTail",
    "PlannedImage",
    "check_shards",
    "class_prompts",
    "generate_spectrum",
    "load_pool_images",
    "manifest_files",
    "mark_complete",
    "merge_lock",
    "plan_spectrum",
    "prompts_frame",
    "read_all_tries",
    "read_manifest",
    "retry_item",
    "retry_low_scores",
    "shard",
    "shard_lock",
    "source_blocks",
    "wait_for_shards",
]
