"""``digits_lt``: scikit-learn's 8×8 handwritten digits made long-tailed; needs no download.

Per class, disjoint: a balanced test and val set, a long-tailed training set (exponential profile,
n_c = max_per_class · ratio^(c / (C − 1))), and a balanced pool the embedded generator and judge are trained on,
standing in for the web-scale data a real diffusion model and CLIP have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from harness.config import build
from harness.core.registry import register_dataset
from harness.data.base import DatasetBundle, TensorImages

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass
class DigitsParams:
    imbalance_ratio: float = 0.05  # rarest / most frequent class
    max_per_class: int = 80
    val_per_class: int = 10
    test_per_class: int = 40
    pool_per_class: int = 45


def long_tail_counts(num_classes: int, max_per_class: int, ratio: float) -> list[int]:
    return [max(1, round(max_per_class * ratio ** (c / (num_classes - 1)))) for c in range(num_classes)]


@register_dataset("digits_lt", params_class=DigitsParams)
def digits_lt(cfg) -> DatasetBundle:
    p = build(DigitsParams, cfg.data.params, "data.params")
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=cfg.data.image_size, mode="bilinear", align_corners=False).clamp(0, 1)
    labels = digits.target
    rng = np.random.default_rng(cfg.data.split_seed)
    counts = long_tail_counts(10, p.max_per_class, p.imbalance_ratio)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": [], "pool": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        sizes = {"test": p.test_per_class, "val": p.val_per_class, "train": counts[c], "pool": p.pool_per_class}
        if sum(sizes.values()) > len(idx):
            raise ValueError(f"data.params ask for {sum(sizes.values())} images of class {c}; it has {len(idx)}")
        start = 0
        for split, n in sizes.items():
            parts[split] += idx[start : start + n].tolist()
            start += n
    splits = {}
    for split, idx in parts.items():
        idx = sorted(idx)
        if split == "train" and cfg.data.max_train:
            idx = idx[: cfg.data.max_train]
        splits[split] = TensorImages(images[idx], labels[idx], [f"digits-{i}" for i in idx])
    return DatasetBundle(
        "digits_lt", NAMES, splits, channels=1, many=cfg.data.shot_groups.many, few=cfg.data.shot_groups.few
    )
