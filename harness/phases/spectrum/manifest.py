"""The pool's manifests, JSON lines that are the truth about what exists: every shard's ``manifest*.jsonl``, the
retries' ``retries.jsonl``, the kept tries in ``selected.json``; read whole, or incrementally (``ManifestTail``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.core.io import read_json, read_jsonl
from harness.phases.spectrum.plan import PlannedImage

MANIFEST_COLUMNS = [f if f != "try_index" else "try" for f in PlannedImage.__dataclass_fields__]
ROW_TYPES = {"key": str, "source_index": int, "source_id": str, "label": int, "lam": (int, float),
             "seed_index": int, "seed": int, "prompt": str, "file": str, "try": int}  # fmt: skip
RETRIES = "retries.jsonl"
SELECTED = "selected.json"


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
    """Every image of the pool's folder, retries included, one row per key. A line that is no manifest row (torn
    by a killed writer, garbage, ``{}``) is skipped, so its image counts as not made and is made again."""
    files = [*manifest_files(pool_dir), pool_dir / RETRIES]
    rows = [{"try": 0, **r} for path in files for r in read_jsonl(path) if isinstance(r, dict)]  # (``try``: later)
    rows = [r for r in rows if is_row(r)]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS).drop_duplicates("key").reset_index(drop=True)


def is_row(row: dict) -> bool:
    """Whether ``row`` has every manifest column, of its type."""
    return all(isinstance(row.get(name), kind) for name, kind in ROW_TYPES.items())


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
