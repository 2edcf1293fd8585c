"""What a scorer provides: an image–text score (does the image show the prompt?) and an image–image cosine."""

from __future__ import annotations

import numpy as np
from PIL import Image


class Scorer:
    name = "scorer"

    def score(
        self, images: list[Image.Image], prompts: list[str], labels: list[int], sources: list[Image.Image]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (image–text score, image–image cosine to the source), one of each per image."""
        raise NotImplementedError
