"""What a scorer provides: an image–text score (does the image show the prompt?) and an image–image cosine, and the
embeddings behind them (retrieval and the near-duplicate check compare images by them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


class Scorer:
    """``from_config(cfg, data, cache, device)`` is the one place a scorer reads the experiment config: it builds the
    typed params of ``scorer.params`` and hands them, with the explicit inputs the scorer needs (e.g. the class
    names), to a constructor or loader that never sees ``cfg``."""

    name = "scorer"
    # cosine of ``embed_images`` above which two images are near duplicates (``retrieval.near_duplicate: null``).
    # 0.95: in CLIP's image space distinct photos of one class rarely pass 0.9, while re-encodes, resizes and small
    # crops of one photo stay above 0.95
    near_duplicate = 0.95

    @classmethod
    def from_config(cls, cfg, data, cache: Path | None, device="cpu") -> Scorer:
        raise NotImplementedError(f"{cls.__name__}.from_config")

    @classmethod
    def prepare(cls, cfg, data, cache: Path) -> Path | None:
        """The scorer's own training, if it has one (the embedded ones train on the dataset's pool): a cached
        pipeline step that the pipeline runs, and times, before ``from_config``; returns the weights' path. Built
        once per cache key under a lock; ``from_config`` then only loads. Default: nothing to train."""
        return None

    def score(
        self, images: list[Image.Image], prompts: list[str], labels: list[int], sources: list[Image.Image]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (image–text score, image–image cosine to the source), one of each per image."""
        raise NotImplementedError

    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        """One L2-normalised embedding per image (N×D): the features its image–image cosine compares."""
        raise NotImplementedError(f"{type(self).__name__}.embed_images")

    def embed_classes(self, class_names: list[str]) -> torch.Tensor:
        """One L2-normalised embedding per class in the space of ``embed_images`` (C×D): what an unlabelled image
        is assigned a class by (CLIP: the class prompt's text features)."""
        raise NotImplementedError(f"{type(self).__name__}.embed_classes")
