"""A finished pool's images as a training split: in memory when small and untransformed, else read from disk."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from harness.config import Config
from harness.data.base import DatasetBundle, FileImages, LabeledImages, TensorImages, to_tensor01


def load_pool_images(pool: pd.DataFrame, pool_dir: Path, cfg: Config, data: DatasetBundle) -> LabeledImages:
    """In memory (squashed to S×S) when the real images are in memory too, no transform is configured and the pool
    is small; otherwise read from disk and transformed like the real training images."""
    size, channels = cfg.data.image_size, data.channels
    in_memory = isinstance(data.train, TensorImages) and data.train_transform is None
    ids = list(pool.key)
    if in_memory and len(pool) * channels * size * size * 4 < 512 * 2**20:
        from PIL import Image

        images = (
            torch.stack([to_tensor01(Image.open(pool_dir / f), size, channels) for f in pool.file])
            if len(pool)
            else torch.zeros(0, channels, size, size)
        )
        return TensorImages(images, pool.label.to_numpy(), ids)
    return FileImages([pool_dir / f for f in pool.file], pool.label.to_numpy(), ids, size, channels)
