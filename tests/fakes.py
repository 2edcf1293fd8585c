"""Tiny fake copies of the real datasets, in their exact on-disk layouts, for offline tests.

``write_fake_iwildcam(root)`` writes ROOT/iwildcam_v2.0/ as wilds 2.0 expects it; ``write_fake_imagenet_lt(root)``
writes an ImageNet-like tree and the three ImageNet-LT split files. Both return ROOT (pass it as data.root).
Images carry class-dependent content (a coloured shape per class) so a classifier can learn something; iWildCam
backgrounds depend on the camera location, so OOD locations look different.
"""

from __future__ import annotations

import colorsys
import csv
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHIPPED_NAMES = Path(__file__).resolve().parent.parent / "harness" / "resources" / "iwildcam_common_names.json"
IWILDCAM_SPLITS = ("train", "val", "test", "id_val", "id_test")
IMAGENET_LT_COUNTS = (130, 101, 100, 20, 19, 5)  # many, many, medium, medium, few, few (thresholds 100 / 20)


def class_colour(label: int, num_classes: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """The class's hue, jittered so that neighbouring classes overlap a little (a classifier can learn the classes,
    but not perfectly)."""
    hue = (label + rng.uniform(-0.6, 0.6)) / max(num_classes, 1) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_image(
    label: int, num_classes: int, size: tuple[int, int], background: tuple[int, int, int], rng: np.random.Generator
) -> Image.Image:
    """A noisy background with one shape in the class colour; the shape's kind (disc or square) alternates with
    the class."""
    w, h = size
    noise = rng.normal(0, 12, (h, w, 3))
    pixels = np.clip(np.asarray(background, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    side = int(min(w, h) * rng.uniform(0.45, 0.6))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    box = (x0, y0, x0 + side, y0 + side)
    draw = ImageDraw.Draw(img)
    (draw.ellipse if label % 2 else draw.rectangle)(box, fill=class_colour(label, num_classes, rng))
    return img


# --------------------------------------------------------------------------- iWildCam (wilds 2.0)


def benchmark_categories(num_classes: int) -> list[dict]:
    """The first ``num_classes`` benchmark categories of the shipped list, plus two non-benchmark (y = 99999) rows
    as the real categories.csv has."""
    classes = json.loads(SHIPPED_NAMES.read_text())["classes"]
    benchmark = sorted((c for c in classes if c["y"] < 99999), key=lambda c: c["y"])
    if num_classes > len(benchmark):
        raise ValueError(f"at most {len(benchmark)} classes")
    return benchmark[:num_classes] + [c for c in classes if c["y"] == 99999][:2]


def split_locations(locations_per_split: int) -> dict[str, list[int]]:
    """ID splits share the training locations; val and test (OOD) each have their own."""
    ids = list(range(locations_per_split))
    return {
        "train": ids,
        "id_val": ids,
        "id_test": ids,
        "val": list(range(locations_per_split, 2 * locations_per_split)),
        "test": list(range(2 * locations_per_split, 3 * locations_per_split)),
    }


def write_fake_iwildcam(
    root,
    n_per_split: int = 12,
    num_classes: int = 4,
    seed: int = 0,
    image_size: tuple[int, int] = (64, 48),
    locations_per_split: int = 2,
    images_per_sequence: int = 2,
) -> Path:
    """ROOT/iwildcam_v2.0/{RELEASE_v2.0.txt, metadata.csv, categories.csv, train/*.jpg}; returns ROOT.

    Labels cycle through 0..num_classes-1 in every split; y, location_remapped and sequence_remapped each cover
    0..max with no gaps, as wilds asserts.
    """
    if n_per_split < num_classes:
        raise ValueError("n_per_split must be at least num_classes so that every y appears")
    root = Path(root)
    folder = root / "iwildcam_v2.0"
    (folder / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    categories = benchmark_categories(num_classes)
    backgrounds = {loc: tuple(int(v) for v in rng.integers(40, 200, 3)) for loc in range(3 * locations_per_split)}
    start = datetime(2013, 6, 9, 16, 1, 38)
    rows, sequence = [], -1
    for split, locations in split_locations(locations_per_split).items():
        labels = rng.permutation(np.arange(n_per_split) % num_classes)
        for i, y in enumerate(labels):
            if i % images_per_sequence == 0:
                sequence += 1
                seq_id = str(uuid.UUID(bytes=rng.bytes(16)))
            loc = locations[i % len(locations)]
            image_id = str(uuid.UUID(bytes=rng.bytes(16)))
            when = start + timedelta(days=int(rng.integers(0, 700)), seconds=int(rng.integers(0, 86400)))
            draw_image(int(y), num_classes, image_size, backgrounds[loc], rng).save(
                folder / "train" / f"{image_id}.jpg", quality=90
            )
            rows.append(
                {
                    "split": split,
                    "location_remapped": loc,
                    "location": 100 + 7 * loc,
                    "sequence_remapped": sequence,
                    "seq_id": seq_id,
                    "y": int(y),
                    "category_id": categories[int(y)]["category_id"],
                    "datetime": when.strftime("%Y-%m-%d %H:%M:%S.000"),
                    "filename": f"{image_id}.jpg",
                    "image_id": image_id,
                }
            )
    write_csv(
        folder / "metadata.csv",
        rows,
        [
            "split",
            "location_remapped",
            "location",
            "sequence_remapped",
            "seq_id",
            "y",
            "category_id",
            "datetime",
            "filename",
            "image_id",
        ],
    )
    write_csv(
        folder / "categories.csv",
        [{"y": c["y"], "category_id": c["category_id"], "name": c["scientific_name"]} for c in categories],
        ["y", "category_id", "name"],
    )
    (folder / "RELEASE_v2.0.txt").write_text("v2.0 (fake, written by tests/fakes.py)\n")
    return root


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------- ImageNet-LT


def synset(label: int) -> str:
    return f"n{1440764 + 1000 * label:08d}"


def grey(rng: np.random.Generator) -> tuple[int, int, int]:
    level = int(rng.integers(60, 190))
    return level, level, level


def write_fake_imagenet_lt(
    root,
    counts: tuple[int, ...] | list[int] = IMAGENET_LT_COUNTS,
    val_per_class: int = 2,
    test_per_class: int = 3,
    seed: int = 0,
    image_size: int = 32,
    split_dir=None,
) -> Path:
    """ROOT/train/nXXXXXXXX/*.JPEG (train and val images, as ImageNet-LT draws both from ImageNet's train set),
    ROOT/val/nXXXXXXXX/ILSVRC2012_val_*.JPEG (the test images) and ImageNet_LT_{train,val,test}.txt in
    ``split_dir`` (default ROOT) with lines ``relative/path.JPEG label``. ``counts``: training images per class
    (default: two many-shot, two medium, two few-shot classes at thresholds 100 / 20). Returns ROOT."""
    root = Path(root)
    split_dir = Path(split_dir) if split_dir is not None else root
    split_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    num_classes = len(counts)
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    test_index = 0
    for label, count in enumerate(counts):
        (root / "train" / synset(label)).mkdir(parents=True, exist_ok=True)
        (root / "val" / synset(label)).mkdir(parents=True, exist_ok=True)
        for k in range(count + val_per_class):
            rel = f"train/{synset(label)}/{synset(label)}_{k}.JPEG"
            draw_image(label, num_classes, (image_size, image_size), grey(rng), rng).save(root / rel, "JPEG")
            lines["train" if k < count else "val"].append(f"{rel} {label}")
        for _ in range(test_per_class):
            test_index += 1
            rel = f"val/{synset(label)}/ILSVRC2012_val_{test_index:08d}.JPEG"
            draw_image(label, num_classes, (image_size, image_size), grey(rng), rng).save(root / rel, "JPEG")
            lines["test"].append(f"{rel} {label}")
    for split, split_lines in lines.items():
        order = rng.permutation(len(split_lines))
        (split_dir / f"ImageNet_LT_{split}.txt").write_text("".join(split_lines[i] + "\n" for i in order))
    return root
