"""What every dataset provides: labelled image splits, class names, training counts and its metrics.

``decode(i)`` gives image ``i`` as uint8 C×H×W; the configured train or eval transform (``harness.config.transforms``)
turns it into uint8 C×S×S (S = ``data.image_size``), and the float conversion to [0, 1] happens on the device;
models normalize inside. ``load(i)`` is the untransformed float image squashed to S×S, and ``raw(i)`` the
full-resolution PIL image, for the generator and the scorer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor, resize
from torchvision.transforms.v2 import Transform

from harness.core.errors import DataError, HarnessError  # noqa: F401  (DataError: its users import it from here too)


def default_workers() -> int:
    """DataLoader workers when the config leaves it open: this process's share of the cores available (torchrun
    starts one process per GPU on a node)."""
    import os

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, len(os.sched_getaffinity(0)) // max(1, local_world))


def to_tensor01(img: Image.Image, size: int, channels: int) -> torch.Tensor:
    img = img.convert("L" if channels == 1 else "RGB")
    x = pil_to_tensor(img).float() / 255.0
    if x.shape[-2:] != (size, size):
        x = resize(x, [size, size], antialias=True)
    return x


class LabeledImages(Dataset):
    """A split: ``ids`` and ``labels`` plus a way to load image ``i``."""

    ids: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> torch.Tensor:  # C×S×S in [0, 1]
        raise NotImplementedError

    def decode(self, i: int) -> torch.Tensor:  # uint8 C×H×W, before any transform
        raise NotImplementedError

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """A decoded image at the split's size when no transform is configured (squashed, as ``load``)."""
        return x

    def raw(self, i: int) -> Image.Image:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.load(i), int(self.labels[i])


class TensorImages(LabeledImages):
    def __init__(self, images: torch.Tensor, labels: Sequence[int], ids: Sequence[str]):
        self.images = images.float()
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ids = list(ids)

    def load(self, i: int) -> torch.Tensor:
        return self.images[i]

    def decode(self, i: int) -> torch.Tensor:
        return (self.images[i].clamp(0, 1) * 255).round().byte()

    def raw(self, i: int) -> Image.Image:
        x = (self.images[i].clamp(0, 1) * 255).round().byte()
        return Image.fromarray(x[0].numpy(), "L") if x.shape[0] == 1 else Image.fromarray(x.permute(1, 2, 0).numpy())


class FileImages(LabeledImages):
    """Images on disk, decoded on access. A corrupt file raises DataError naming it."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int],
        ids: Sequence[str],
        size: int,
        channels: int = 3,
        extra: pd.DataFrame | None = None,
    ):
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ids = list(ids)
        self.size, self.channels = size, channels
        self.extra = extra  # per-sample metadata (e.g. wilds' location), kept beside predictions

    def raw(self, i: int) -> Image.Image:
        try:
            with Image.open(self.paths[i]) as img:
                img.load()
                return img.convert("RGB" if self.channels == 3 else "L")
        except (OSError, SyntaxError) as e:
            raise DataError(f"cannot read image {self.paths[i]}: {e}") from None

    def load(self, i: int) -> torch.Tensor:
        return to_tensor01(self.raw(i), self.size, self.channels)

    def decode(self, i: int) -> torch.Tensor:
        return pil_to_tensor(self.raw(i))

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, [self.size, self.size], antialias=True) if x.shape[-2:] != (self.size, self.size) else x


def take(images: LabeledImages, rows: np.ndarray) -> LabeledImages:
    """The images at ``rows`` of a split, as a split of their own."""
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(images, TensorImages):
        return TensorImages(
            images.images[torch.as_tensor(rows, dtype=torch.long)], images.labels[rows], [images.ids[i] for i in rows]
        )
    return FileImages(
        [images.paths[i] for i in rows],
        images.labels[rows],
        [images.ids[i] for i in rows],
        images.size,
        images.channels,
    )


class ImageView(Dataset):
    """Some images of one or more splits, each decoded and put through a transform: what a DataLoader reads.
    Items are (uint8 C×S×S, label); without a transform an image is squashed to its split's size."""

    def __init__(self, parts: Sequence[tuple[LabeledImages, np.ndarray]], transform: Transform | None = None):
        self.parts = [(images, np.asarray(indices, dtype=np.int64)) for images, indices in parts]
        self.offsets = np.cumsum([0] + [len(indices) for _, indices in self.parts])
        self.transform = transform

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """``key``: an index, or (index, seed): the seed then drives the random transforms of this one image, so
        what a sample looks like does not depend on the worker that loads it or on what was loaded before."""
        k, seed = key if isinstance(key, tuple) else (key, None)
        p = int(np.searchsorted(self.offsets, k, side="right")) - 1
        images, indices = self.parts[p]
        i = int(indices[k - self.offsets[p]])
        x = images.decode(i)
        if self.transform is None:
            return images.fit(x), int(images.labels[i])
        if seed is None:
            return self.transform(x), int(images.labels[i])
        cpu_rng = torch.default_generator  # what torchvision's random transforms draw from
        state = cpu_rng.get_state()
        cpu_rng.manual_seed(seed)
        try:
            return self.transform(x), int(images.labels[i])
        finally:
            cpu_rng.set_state(state)  # the process's own stream (dropout, shuffles) goes on untouched


@dataclass
class DatasetBundle:
    name: str
    class_names: list[str]
    splits: dict[str, LabeledImages]
    channels: int
    val_split: str = "val"
    # reported name → split name, e.g. {"test": "test"} or {"test_id": "id_test", "test_ood": "test"}
    test_splits: dict[str, str] = field(default_factory=lambda: {"test": "test"})
    metrics: Callable[[np.ndarray, np.ndarray, DatasetBundle], dict[str, float]] | None = None
    many: int = 100
    few: int = 20
    many_inclusive: bool = False  # many-shot: ≥ many (the authors' get_mmf_idx) instead of > many
    corrupt: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # split → skipped (path, reason)
    num_workers: int = 0  # DataLoader workers for datasets read from disk
    train_transform: Transform | None = None  # None: images as they are (squashed to S×S)
    eval_transform: Transform | None = None
    loaders: dict = field(default_factory=dict, repr=False, compare=False)  # evaluation loaders kept across epochs

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train(self) -> LabeledImages:
        return self.splits["train"]

    @property
    def train_counts(self) -> np.ndarray:
        return np.bincount(self.train.labels, minlength=self.num_classes)

    def shot_group(self) -> np.ndarray:
        """Per class: 'many' (> many, or ≥ many with ``many_inclusive``), 'few' (< few) or 'medium', from training
        counts."""
        counts = self.train_counts
        many = counts >= self.many if self.many_inclusive else counts > self.many
        return np.where(many, "many", np.where(counts < self.few, "few", "medium"))

    def class_counts(self) -> pd.DataFrame:
        """Per class: its name, training images and shot group (logged as ``data/class_counts.csv``)."""
        return pd.DataFrame(
            {
                "class": np.arange(self.num_classes),
                "name": self.class_names,
                "train_count": self.train_counts,
                "shot_group": self.shot_group(),
            }
        )

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        fn = self.metrics or long_tail_metrics
        return fn(np.asarray(y_true), np.asarray(y_pred), self)


def long_tail_metrics(y_true: np.ndarray, y_pred: np.ndarray, data: DatasetBundle) -> dict[str, float]:
    """Top-1 overall and by shot group (groups from training counts)."""
    correct = y_true == y_pred
    out = {"acc": float(correct.mean()) if len(correct) else float("nan")}
    group = data.shot_group()[y_true]
    for g in ("many", "medium", "few"):
        mask = group == g
        out[f"acc_{g}"] = float(correct[mask].mean()) if mask.any() else float("nan")
    return out
