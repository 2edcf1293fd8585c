"""Metadata-only copies of the paper's datasets at their real sizes, without a single image file: what
``harness plan`` reads. ImageNet-LT (Liu et al. 2019): 115,846 training images of 1000 classes (1280 to 5 per class;
385 many-shot > 100, 479 medium, 136 few-shot < 20 classes holding 1643 images), val 20 and test 50 per class.
iWildCam2020-WILDS v2.0: 182 classes; train 129,809, val (OOD) 14,961, test (OOD) 42,791, id_val 7,314,
id_test 8,154 rows of metadata.csv (DISCL.md §8's layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from fakes import benchmark_categories, synset

IMAGENET_LT_TRAIN, IMAGENET_LT_CLASSES, IMAGENET_LT_FEW_IMAGES = 115_846, 1000, 1643
IMAGENET_LT_GROUPS = {"many": 385, "medium": 479, "few": 136}  # classes per shot group (the published split)
IWILDCAM_SIZES = {"train": 129_809, "val": 14_961, "test": 42_791, "id_val": 7_314, "id_test": 8_154}
IWILDCAM_CLASSES = 182


def fit_counts(n: int, lo: int, hi: int, total: int) -> np.ndarray:
    """``n`` integer counts from ``hi`` down to ``lo`` (both present) that sum to ``total``: a power profile
    ``lo + (hi - lo) x^p``, its exponent found by bisection, the rounding remainder spread over the interior."""
    x = np.linspace(1, 0, n)
    a, b = 1e-3, 1e3
    for _ in range(200):
        p = np.sqrt(a * b)
        if (lo + (hi - lo) * x**p).sum() > total:
            a = p
        else:
            b = p
    counts = np.round(lo + (hi - lo) * x**p).astype(np.int64)
    counts[0], counts[-1] = hi, lo
    diff, i = total - int(counts.sum()), 1
    while diff:
        step = 1 if diff > 0 else -1
        if lo <= counts[i] + step <= hi:
            counts[i] += step
            diff -= step
        i = i % (n - 2) + 1
    return counts


def imagenet_lt_counts() -> np.ndarray:
    """Training images per class, in label order (the groups shuffled among the labels, seeded)."""
    g = IMAGENET_LT_GROUPS
    few = fit_counts(g["few"], 5, 19, IMAGENET_LT_FEW_IMAGES)
    medium = fit_counts(g["medium"], 20, 100, 28_740)
    many = fit_counts(g["many"], 101, 1280, IMAGENET_LT_TRAIN - IMAGENET_LT_FEW_IMAGES - 28_740)
    counts = np.concatenate([many, medium, few])
    return counts[np.random.default_rng(0).permutation(len(counts))]


def write_imagenet_lt_metadata(root, val_per_class: int = 20, test_per_class: int = 50) -> Path:
    """ROOT/ImageNet_LT_{train,val,test}.txt at the real sizes; no image is written. Returns ROOT."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label, count in enumerate(imagenet_lt_counts()):
        s = synset(label)
        lines["train"] += [f"train/{s}/{s}_{k}.JPEG {label}" for k in range(count)]
        lines["val"] += [f"train/{s}/{s}_v{k}.JPEG {label}" for k in range(val_per_class)]
        lines["test"] += [f"val/{s}/ILSVRC2012_val_{label:04d}{k:03d}.JPEG {label}" for k in range(test_per_class)]
    for split, split_lines in lines.items():
        (root / f"ImageNet_LT_{split}.txt").write_text("\n".join(split_lines) + "\n")
    return root


def write_iwildcam_metadata(root, sizes: dict[str, int] = IWILDCAM_SIZES, num_classes: int = IWILDCAM_CLASSES) -> Path:
    """ROOT/iwildcam_v2.0/{RELEASE_v2.0.txt, metadata.csv, categories.csv} at the real sizes and an empty train/;
    no image is written. Labels long-tailed (class y gets a share ∝ 1/(y+1), every class in every split). Returns
    ROOT."""
    root = Path(root)
    folder = root / "iwildcam_v2.0"
    (folder / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    categories = benchmark_categories(num_classes)
    weights = 1 / np.arange(1, num_classes + 1)
    frames, start = [], 0
    for location_base, (split, n) in enumerate(sizes.items()):
        y = np.concatenate(
            [np.arange(num_classes), rng.choice(num_classes, n - num_classes, p=weights / weights.sum())]
        )
        y = rng.permutation(y)
        ids = [f"{split}{i:07d}" for i in range(n)]
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "location_remapped": location_base * 10 + np.arange(n) % 10,
                    "location": 100 + location_base * 10 + np.arange(n) % 10,
                    "sequence_remapped": start + np.arange(n) // 3,
                    "seq_id": [f"seq{(start + i // 3):07d}" for i in range(n)],
                    "y": y,
                    "category_id": [categories[c]["category_id"] for c in y],
                    "datetime": "2013-06-09 16:01:38.000",
                    "filename": [f"{i}.jpg" for i in ids],
                    "image_id": ids,
                }
            )
        )
        start += (n + 2) // 3
    pd.concat(frames).to_csv(folder / "metadata.csv", index=False)
    pd.DataFrame(
        [{"y": c["y"], "category_id": c["category_id"], "name": c["scientific_name"]} for c in categories]
    ).to_csv(folder / "categories.csv", index=False)
    (folder / "RELEASE_v2.0.txt").write_text("v2.0 (metadata-only fake, written by tests/fakes_metadata.py)\n")
    return root
