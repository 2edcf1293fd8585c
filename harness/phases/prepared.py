"""What the phases before fine-tuning hand to every method and seed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.config import Config
from harness.data import DatasetBundle
from harness.data.base import LabeledImages


@dataclass
class RetrievedPool:
    """Real images retrieved for the hard sources (``retrieved_real``): row i of ``images`` was retrieved for the
    hard source ``source_index[i]`` (a training-split index); ``metrics``: the counts a run logs (images retrieved,
    near duplicates of validation or test images dropped, and per λ those among the kept synthetic images)."""

    images: LabeledImages
    source_index: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)

    def rows_for(self, sources: np.ndarray) -> np.ndarray:
        """The rows retrieved for ``sources`` (those that train)."""
        return np.flatnonzero(np.isin(self.source_index, sources))


@dataclass
class Prepared:
    """Everything the methods share: data, base model, hard samples and the scored synthetic pool."""

    cfg: Config
    data: DatasetBundle
    device: torch.device
    base_state: dict
    hard: np.ndarray  # indices into the training split
    pool: pd.DataFrame  # manifest + scores + keep
    pool_dir: Path | None
    pool_images: LabeledImages | None  # row i of ``pool`` is image i
    timings: dict[str, float] = field(default_factory=dict)
    pool_source: dict | None = None  # spectrum.pool: where the imported pool came from and its digest
    retrieved: RetrievedPool | None = None  # a retrieving method's real images (attached by ``pipeline.fine_tune``)

    @property
    def kept(self) -> pd.DataFrame:
        return self.pool[self.pool.keep] if len(self.pool) else self.pool
