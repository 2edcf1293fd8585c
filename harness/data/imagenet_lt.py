"""``imagenet_lt``: ImageNet-LT (Liu et al., 2019) from its split files and an ImageNet root staged by hand.

``ImageNet_LT_{train,val,test}.txt`` (in ``data.params.split_dir``, default ``data.root``) hold lines
``relative/path.JPEG label`` with paths relative to ``data.root``. A path that escapes the root, a malformed line
or a label out of range is a ``DataError`` naming the file and line. Shot groups come from the training counts
(many > ``data.shot_groups.many``, few < ``data.shot_groups.few``); model selection on the 20-per-class val split.
Labels are ImageNet-1k class ids, so class ``i`` is named by the harness's curated ImageNet-1k name ``i`` (unique
and unambiguous, ``harness/resources/imagenet_class_names.json``) unless ``data.params.class_names`` gives a names
file (more than 1000 classes need one) or ``authors``: the authors' list (imagenetlt_classes.py, shipped as
``harness/resources/imagenet_lt_authors_class_names.txt``; 306 of its names differ from ours beyond case).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from harness.config import build
from harness.core.registry import LONG_TAIL_METRICS, register_dataset
from harness.data.base import DataError, DatasetBundle, FileImages, default_workers, long_tail_metrics

SPLITS = ("train", "val", "test")
AUTHORS = "authors"  # data.params.class_names: the authors' names, shipped with the harness
AUTHORS_NAMES_FILE = "resources/imagenet_lt_authors_class_names.txt"
HOW_TO_OBTAIN = (
    "expected an ImageNet (ILSVRC-2012) root with train/nXXXXXXXX/*.JPEG and val/nXXXXXXXX/*.JPEG (get it from "
    "https://image-net.org/download.php, val sorted into class folders) and ImageNet_LT_train.txt, "
    "ImageNet_LT_val.txt, ImageNet_LT_test.txt (from the OLTR project, https://github.com/zhmiao/"
    "OpenLongTailRecognition-OLTR) in data.params.split_dir (default: the root); pass the root with "
    "--set data.root=ROOT"
)


@dataclass
class ImageNetLTParams:
    split_dir: str | None = None  # folder of ImageNet_LT_*.txt (default: data.root)
    # a text file (one name per line, in label order) or JSON (list or {label: name}); ``authors``: the authors'
    # names (AUTHORS_NAMES_FILE); default: the curated ImageNet-1k names (harness/resources/imagenet_class_names.json)
    class_names: str | None = None
    num_classes: int | None = None  # default: the number of names, else the largest training label + 1
    max_per_split: int | None = None  # keep a random subset of each split (quick runs)
    num_workers: int | None = None  # DataLoader workers for these files (default: this process's share of the cores)


@dataclass
class ImageNetLTBundle(DatasetBundle):
    """Shot groups from the counts of the whole training file, so subsampling for a quick run keeps them."""

    full_train_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def train_counts(self) -> np.ndarray:
        return self.full_train_counts


def split_file(split_dir: Path, split: str) -> Path:
    path = split_dir / f"ImageNet_LT_{split}.txt"
    if not path.is_file():
        raise DataError(f"imagenet_lt: split file {path} not found; {HOW_TO_OBTAIN}")
    return path


def inside_root(rel: str) -> bool:
    """A relative path that cannot leave the root (no absolute path, drive or ``..``)."""
    path = PurePosixPath(rel.replace("\\", "/"))
    if not path.parts or path.is_absolute() or ":" in path.parts[0]:
        return False
    return ".." not in path.parts


def read_split(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(relative paths, labels, line numbers) from ``relative/path.JPEG label`` lines; blank lines are skipped."""
    rels, labels, numbers = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().rsplit(maxsplit=1)
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DataError(f"imagenet_lt: {path} line {number}: expected 'relative/path.JPEG label', got {line!r}")
        rel, label = fields
        if not inside_root(rel):
            raise DataError(
                f"imagenet_lt: {path} line {number}: path {rel!r} escapes the data root "
                "(paths must be relative to data.root, without '..')"
            )
        if int(label) < 0:
            raise DataError(f"imagenet_lt: {path} line {number}: label {label} is negative")
        rels.append(rel)
        labels.append(int(label))
        numbers.append(number)
    return rels, np.asarray(labels, dtype=np.int64), np.asarray(numbers)


def read_class_names(path: str) -> list[str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"imagenet_lt: data.params.class_names file {file} not found")
    text = file.read_text()
    if file.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
        if isinstance(data, list):
            return [str(name) for name in data]
        if isinstance(data, dict):
            by_label = {int(k): str(v) for k, v in data.items()}
            if sorted(by_label) == list(range(len(by_label))):
                return [by_label[i] for i in range(len(by_label))]
    except (json.JSONDecodeError, ValueError) as e:
        raise DataError(f"imagenet_lt: data.params.class_names file {file} is not valid JSON ({e})") from None
    raise DataError(
        f"imagenet_lt: data.params.class_names file {file}: expected a list of names or "
        '{"0": name, "1": name, ...} covering 0..N-1'
    )


def curated_names() -> list[str]:
    """One unique, unambiguous name per ImageNet-1k id (``harness/resources/imagenet_class_names.json``):
    torchvision's names with the repeated, terse and ambiguous ones replaced by their WordNet sense ("crane (bird)"
    and "construction crane", "kite (bird of prey)", "Cardigan Welsh Corgi" and "cardigan (sweater)")."""
    from importlib import resources

    return json.loads(resources.files("harness").joinpath("resources/imagenet_class_names.json").read_text())


def authors_names() -> list[str]:
    """The authors' name of each ImageNet-1k id (CLASSES of data_generation/ImageNet_LT/imagenetlt_classes.py in
    tianyi-lab/DisCL at 5d0eec6), repeats kept: "missile" and "sunglasses" name two ids each (the file's header)."""
    from importlib import resources

    text = resources.files("harness").joinpath(AUTHORS_NAMES_FILE).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def imagenet_names(num_classes: int, authors: bool = False) -> list[str]:
    """The curated (or with ``authors`` the authors') ImageNet-1k names of ids 0..num_classes-1 (no download)."""
    categories = authors_names() if authors else curated_names()
    if num_classes > len(categories):
        raise DataError(
            f"imagenet_lt: {num_classes} classes but ImageNet-1k names only {len(categories)}; give "
            "data.params.class_names (a text file, one name per line in label order, or JSON)"
        )
    return list(categories[:num_classes])


def check_labels(path: Path, labels: np.ndarray, numbers: np.ndarray, num_classes: int) -> None:
    bad = np.flatnonzero(labels >= num_classes)
    if len(bad):
        raise DataError(
            f"imagenet_lt: {path} line {numbers[bad[0]]}: label {labels[bad[0]]} is out of range for "
            f"{num_classes} classes (0..{num_classes - 1})"
        )


def check_first_image(root: Path, path: Path, rels: list[str]) -> None:
    """The first listed image exists (catches a wrong root without a full scan; a later missing file still gets
    a DataError naming it when read)."""
    if rels and not (root / rels[0]).is_file():
        raise DataError(f"imagenet_lt: {root / rels[0]} (first image listed in {path}) not found; {HOW_TO_OBTAIN}")


def limit(*limits: int | None) -> int | None:
    given = [n for n in limits if n]
    return min(given) if given else None


def subsample(n: int, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """A random subset in file order (split files are sorted by class: a prefix would drop whole classes)."""
    if size is None or n <= size:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def bundle_from_split_files(cfg, p: ImageNetLTParams, split_dir: Path, make_split) -> ImageNetLTBundle:
    """What the loader and ``harness plan``'s metadata reader share: the split files read and checked, the class
    names, each split subsampled in one random stream; ``make_split(path, rels, labels, index)`` holds its images."""
    files = {split: split_file(split_dir, split) for split in SPLITS}
    entries = {split: read_split(path) for split, path in files.items()}
    if not len(entries["train"][1]):
        raise DataError(f"imagenet_lt: {files['train']} lists no images; {HOW_TO_OBTAIN}")
    names = read_class_names(p.class_names) if p.class_names and p.class_names != AUTHORS else None
    num_classes = p.num_classes or (len(names) if names else int(entries["train"][1].max(initial=-1)) + 1)
    if names is not None and len(names) != num_classes:
        raise DataError(f"imagenet_lt: {p.class_names} has {len(names)} names for {num_classes} classes")
    names = names if names is not None else imagenet_names(num_classes, authors=p.class_names == AUTHORS)
    rng = np.random.default_rng(cfg.data.split_seed)
    splits = {}
    for split, (rels, labels, numbers) in entries.items():
        check_labels(files[split], labels, numbers, num_classes)
        index = subsample(len(rels), limit(p.max_per_split, cfg.data.max_train if split == "train" else None), rng)
        splits[split] = make_split(files[split], rels, labels, index)
    return ImageNetLTBundle(
        "imagenet_lt",
        names,
        splits,
        channels=3,
        val_split="val",
        test_splits={"test": "test"},
        metrics=long_tail_metrics,
        many=cfg.data.shot_groups.many,
        few=cfg.data.shot_groups.few,
        full_train_counts=np.bincount(entries["train"][1], minlength=num_classes),
    )


@register_dataset("imagenet_lt", val_metrics=LONG_TAIL_METRICS, params_class=ImageNetLTParams)
def imagenet_lt(cfg) -> DatasetBundle:
    p = build(ImageNetLTParams, cfg.data.params, "data.params")
    if not cfg.data.root:
        raise DataError(f"imagenet_lt: data.root is not set; {HOW_TO_OBTAIN}")
    root = Path(cfg.data.root).expanduser()
    if not root.is_dir():
        raise DataError(f"imagenet_lt: data.root {root} does not exist; {HOW_TO_OBTAIN}")
    split_dir = Path(p.split_dir).expanduser() if p.split_dir else root

    def images(path: Path, rels: list[str], labels: np.ndarray, index: np.ndarray) -> FileImages:
        check_first_image(root, path, rels)
        return FileImages([root / rels[i] for i in index], labels[index], [rels[i] for i in index], cfg.data.image_size)

    bundle = bundle_from_split_files(cfg, p, split_dir, images)
    bundle.num_workers = p.num_workers if p.num_workers is not None else default_workers()
    return bundle
