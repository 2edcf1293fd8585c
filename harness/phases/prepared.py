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

    @property
    def kept(self) -> pd.DataFrame:
        return self.pool[self.pool.keep] if len(self.pool) else self.pool
