"""Copies of a workdir that share its cache files with it (hard links), so a test gets caches without building
them."""

import os
import shutil
from pathlib import Path

from quick import IMAGENET_LT, IWILDCAM

# files the phases append to (manifests, scores) and the lock files: copied, never linked
APPENDED = (".jsonl", ".lock")

# the runs of conftest's ``tiny_runs``: two methods on two seeds
TINY_RUNS = ["-m", "plain", "-m", "discl_diverse_to_specific", "-s", "0", "-s", "1"]

# conftest's ``imagenet_lt_tiny_runs``: the fake tree's training images per class (two many-shot, two medium, two
# few-shot at quick.IMAGENET_LT's shot groups 20 / 8), and the runs' settings
INLT_COUNTS = (25, 22, 12, 10, 6, 3)


def iwildcam_overrides(root: Path) -> list[str]:
    """conftest's ``iwildcam_tiny_run``: tests/fakes.py's iWildCam copy (8 images per split, 4 classes, seed 1), its
    4 hardest training images the hard sources."""
    return [f"data.root={root}", *IWILDCAM, "hard.rule=k_hardest", "hard.k=4"]


def inlt_overrides(root: Path) -> list[str]:
    return [f"data.root={root}", *IMAGENET_LT, "methods=[plain, discl_diverse_to_specific]"]


def copy_workdir(src: Path, dst: Path) -> Path:
    """A copy of a workdir in which the cache's files are hard links. The phases publish every cache file by an
    atomic rename (harness/core/io.py: a new file, never the old one written in place), so a link is never changed
    under another copy; the JSON-lines files they append to, the lock files, and everything outside ``cache/``
    (the MLflow store: SQLite writes in place) are copied."""
    src, dst = Path(src), Path(dst)

    def link_or_copy(s, d):
        rel = Path(s).relative_to(src)
        if rel.parts[0] == "cache" and not s.endswith(APPENDED):
            os.link(s, d)
        else:
            shutil.copy2(s, d)
        return d

    shutil.copytree(src, dst, copy_function=link_or_copy, dirs_exist_ok=True)
    return dst
