"""Input pipeline: images/s through the ImageNet-LT train transform on a folder of ImageNet-sized JPEGs (500×375).

    python benchmarks/bench_input.py [--quick] [--workers N] [--json FILE]

harness: the trainer's loader (``EpochLoader`` through ``train.batches``: uint8 decode, uint8 transform with a
per-sample seed in persistent workers, float conversion after the batch). plain: the fastest plain loop with the same
decode and transforms (a bare Dataset, a persistent DataLoader, float conversion after the batch). float-first: the
obvious way (a new DataLoader every epoch, each image converted to float before the transforms). Epochs after the
first are timed (the workers start once), interleaved, median of repeats.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import paired, print_table, time_row, write_json  # noqa: E402

from harness.config import load_config  # noqa: E402
from harness.config.transforms import build_transform  # noqa: E402
from harness.data.base import FileImages  # noqa: E402
from harness.engine.train import EpochLoader, Part, batches  # noqa: E402


def write_jpegs(folder: Path, n: int) -> list[Path]:
    """Photo-like JPEGs (smooth gradients, texture, noise), 500×375 as ImageNet's typical size."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    paths = []
    for i in range(n):
        base = np.stack([np.sin(xx / rng.uniform(20, 80) + c) * np.cos(yy / rng.uniform(20, 80)) for c in range(3)], -1)
        pixels = np.clip(127 + 100 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i}.JPEG"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


class Plain(Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            return self.transform(pil_to_tensor(img.convert("RGB"))), 0


class FloatFirst(Plain):
    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            return self.transform(pil_to_tensor(img.convert("RGB")).float() / 255), 0


def measure(quick: bool, workers: int, batch_size: int = 32, repeats: int | None = None) -> list[dict]:
    n = 96 if quick else 384
    repeats = repeats or 15
    cfg = load_config("imagenet_lt_discl")
    transform = build_transform(cfg.data.train_transform, cfg.data.image_size)
    float_transform = v2.Compose([*transform.transforms])  # the same steps, fed float images
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), n)
        images = FileImages(paths, np.zeros(n, dtype=np.int64), [str(i) for i in range(n)], size=224)
        parts = [Part(images, np.arange(n))]
        g = torch.Generator().manual_seed(0)
        loader = EpochLoader(batch_size, workers, torch.device("cpu"), transform)
        plain = DataLoader(
            Plain(paths, transform),
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

        def harness_epoch():
            cpu = torch.device("cpu")
            for _x, _ in batches(parts, batch_size, g, cpu, workers, transform=transform, loader=loader):
                pass

        def plain_epoch():
            for x, _ in plain:
                x.float().div_(255)

        def float_first_epoch():
            fresh = DataLoader(
                FloatFirst(paths, float_transform), batch_size=batch_size, shuffle=True, num_workers=workers
            )
            for _x, _ in fresh:
                pass

        harness_epoch(), plain_epoch()  # start the persistent workers
        ours, ref = paired(harness_epoch, plain_epoch, repeats)
        ours2, old = paired(harness_epoch, float_first_epoch, max(3, repeats // 3))
    what = f"{n} JPEGs 500×375 through the ImageNet-LT train transform, {workers} workers, batch {batch_size}"
    return [
        time_row(
            "input_pipeline",
            f"harness loader vs the plainest loop with the same decode and transforms "
            f"({what}; epochs after the first, {len(ours)} interleaved repeats)",
            ours,
            ref,
            0.9,
            n,
            "img/s",
        ),
        time_row(
            "input_vs_float_first",
            f"harness loader vs a float-first loader, a new DataLoader each epoch ({what})",
            ours2,
            old,
            None,
            n,
            "img/s",
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = measure(args.quick, args.workers)
    print_table(rows)
    write_json(rows, args.json)


if __name__ == "__main__":
    main()
