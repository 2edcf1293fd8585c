"""Reproducible randomness: one seed per run, and stable per-sample generator seeds."""

from __future__ import annotations

import hashlib


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators (every device's) from one seed."""
    from accelerate.utils import set_seed

    set_seed(seed)


def sample_seed(source_id: str, lam: float, seed_index: int, try_index: int = 0) -> int:
    """The generator seed of one synthetic image, derived from (source id, λ, seed index) and, for a retry
    (``spectrum.max_tries``), the try index (try 0 keeps the seed it always had).

    A sha256 of the text, never Python's ``hash()`` (salted per process), so every process and machine agrees.
    """
    key = f"{source_id}|{lam:.4f}|{seed_index}{f'|t{try_index}' if try_index else ''}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") & (2**63 - 1)
