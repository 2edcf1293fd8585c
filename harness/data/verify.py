"""A scan for corrupt or truncated images: skipped and counted up to ``data.max_corrupt_fraction``, then a failure.

The scan result is cached per split (keyed by the files' paths, sizes and modification times), so it runs once.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from harness.config import stable_hash
from harness.core.io import read_json, write_json
from harness.data.base import DataError, DatasetBundle, FileImages


def unreadable(path) -> str | None:
    """None if the image decodes fully, else the reason."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))  # JPEG: decode every block at 1/8 scale, fast yet still catches truncation
            img.load()  # verify() alone misses truncated JPEGs
        return None
    except (OSError, SyntaxError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


def scan_split(split: FileImages, cache_dir, name: str, progress: bool = True) -> dict[int, str]:
    """Index → reason for each unreadable image of a split."""
    stats = []
    for p in split.paths:
        try:
            st = os.stat(p)
            stats.append((str(p), st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            stats.append((str(p), -1, -1))
    cache = cache_dir / "verify" / f"{stable_hash(stats)}.json"
    if cache.exists():
        return {int(k): v for k, v in read_json(cache).items()}
    bad = {}
    for i, p in enumerate(
        tqdm(split.paths, desc=f"verify {name} images", unit="img", disable=not progress, mininterval=2)
    ):
        reason = "missing file" if stats[i][1] < 0 else unreadable(p)
        if reason:
            bad[i] = reason
    write_json(cache, bad)
    return bad


def drop_corrupt(data: DatasetBundle, max_fraction: float, cache_dir, progress: bool = True):
    """The dataset without unreadable images; ``data.corrupt`` lists what was dropped, per split."""
    dropped = {}
    for name, split in list(data.splits.items()):
        if not isinstance(split, FileImages) or len(split) == 0:
            continue
        bad = scan_split(split, cache_dir, name, progress)
        if not bad:
            continue
        listing = [(str(split.paths[i]), reason) for i, reason in sorted(bad.items())]
        if len(bad) / len(split) > max_fraction:
            shown = "; ".join(f"{p} ({r})" for p, r in listing[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise DataError(
                f"{len(bad)} of {len(split)} {name} images are unreadable, more than "
                f"data.max_corrupt_fraction={max_fraction}: {shown}{more}"
            )
        keep = np.array([i for i in range(len(split)) if i not in bad])
        extra = split.extra.iloc[keep].reset_index(drop=True) if split.extra is not None else None
        data.splits[name] = type(split)(
            [split.paths[i] for i in keep],
            split.labels[keep],
            [split.ids[i] for i in keep],
            split.size,
            split.channels,
            extra,
        )
        dropped[name] = listing
    data.corrupt = dropped
    return data
