"""Reference sets for ``retrieved_real`` (``retrieval.source``): the real images it may retrieve, each with the
identity its embedding index is cached under (the content of its images, never its path).

- ``pool``: the dataset's own generator-training pool (the digits' clean pool, what ``tiny_ddpm`` learned from).
- ``folder:PATH``: one sub-folder per class, named by the class's name (spaces or underscores) or index.
- ``hf:FOLDER``: a Hugging Face ``datasets`` dataset saved to disk (``save_to_disk``), read by ``load_from_disk``
  alone: nothing is fetched and no dataset script runs. Its images are untrusted: only the image column's embedded
  bytes are decoded, here (PIL's decompression-bomb limit applies); a row that names a path or URL instead is refused,
  never opened.

A labelled set gives each image its class; an unlabelled one (``retrieval.label_column: null``) gets its classes
from the scorer (``harness.phases.retrieval.assign_classes``).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from harness.config import ConfigError
from harness.config.hashing import stable_hash
from harness.core.errors import DataError, MissingFileError
from harness.data.base import FileImages, LabeledImages
from harness.generators.tiny_ddpm import pool_identity

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


@dataclass
class Reference:
    """A reference set: its images, their classes (None: unlabelled) and the content identity it is keyed by."""

    images: LabeledImages
    labels: np.ndarray | None
    identity: dict


def load_reference(source: str, cfg, data) -> Reference:
    """The reference set ``retrieval.source`` names, for the dataset ``data``."""
    kind, _, rest = source.partition(":")
    if kind == "pool":
        return pool_reference(cfg, data)
    if kind == "folder":
        return folder_reference(Path(rest).expanduser(), data.class_names, cfg.data.image_size, data.channels)
    return hf_reference(rest, cfg.retrieval, data.class_names, cfg.data.image_size, data.channels)


def pool_reference(cfg, data) -> Reference:
    pool = data.splits.get("pool")
    if pool is None:
        raise ConfigError(
            f"retrieval.source: pool: {data.name} has no generator-training pool; set retrieval.source to "
            "folder:PATH or hf:NAME"
        )
    return Reference(pool, np.asarray(pool.labels), {"pool": pool_identity(cfg, pool)})


def class_of_folder(name: str, class_names: list[str]) -> int | None:
    """The class a sub-folder names: its index, or its name with underscores for spaces (any case)."""
    if name.isdigit() and int(name) < len(class_names):
        return int(name)
    wanted = name.replace("_", " ").casefold()
    return next((c for c, n in enumerate(class_names) if n.replace("_", " ").casefold() == wanted), None)


def folder_reference(root: Path, class_names: list[str], size: int, channels: int) -> Reference:
    """Images under ``root/CLASS/``; a sub-folder that names no class is refused, files at the top are ignored."""
    if not root.is_dir():
        raise MissingFileError(f"retrieval.source: folder {root} does not exist; give a folder of class sub-folders")
    paths, labels, digest = [], [], hashlib.sha256()
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        c = class_of_folder(sub.name, class_names)
        if c is None:
            raise ConfigError(
                f"retrieval.source: {sub} names no class of this dataset; name it by a class's name or index"
            )
        for path in sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            paths.append(path)
            labels.append(c)
            digest.update(f"{c}\0{path.relative_to(root)}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    if not paths:
        raise ConfigError(f"retrieval.source: {root} holds no images in class sub-folders")
    ids = [str(p.relative_to(root)) for p in paths]
    images = FileImages(paths, labels, ids, size, channels)
    return Reference(images, np.asarray(labels, dtype=np.int64), {"folder_sha256": digest.hexdigest()})


class HFImages(LabeledImages):
    """The image column of a ``datasets`` dataset, decoded by ``datasets`` into PIL images."""

    def __init__(self, dataset, column: str, size: int, channels: int, labels: np.ndarray):
        self.dataset, self.column, self.size, self.channels = dataset, column, size, channels
        self.labels = labels
        self.ids = [str(i) for i in range(len(dataset))]

    def raw(self, i: int) -> Image.Image:
        """The row's embedded image bytes, decoded here; a row that only names a path (or a URL) is refused, never
        opened: the dataset comes from elsewhere and may not make us read or fetch anything."""
        cell = self.dataset[int(i)][self.column]
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if not data:
            named = cell.get("path") if isinstance(cell, dict) else None
            raise DataError(
                f"retrieval.source: row {i} of column {self.column!r} holds no image bytes (it names {named!r}, which "
                "is not read); save the dataset with its images embedded"
            )
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return img.convert("RGB" if self.channels == 3 else "L")
        except (OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"retrieval.source: cannot read the image of row {i}: {e}") from None

    def load(self, i: int):
        from harness.data.base import to_tensor01

        return to_tensor01(self.raw(i), self.size, self.channels)

    def decode(self, i: int):
        from torchvision.transforms.functional import pil_to_tensor

        return pil_to_tensor(self.raw(i))

    def fit(self, x):
        from torchvision.transforms.functional import resize

        return resize(x, [self.size, self.size], antialias=True) if x.shape[-2:] != (self.size, self.size) else x


def open_hf(name: str, split: str):
    """The dataset saved (``save_to_disk``) in the folder ``name``. Only ``load_from_disk`` is called, which reads
    that folder's Arrow files and nothing else: no Hub look-up, no download, no dataset script, whatever the network
    or the ``HF_*`` variables allow. A name that is no folder here is refused."""
    import datasets

    folder = Path(name).expanduser()
    if not (folder.is_dir() and any((folder / f).is_file() for f in ("dataset_info.json", "dataset_dict.json"))):
        raise MissingFileError(
            f"retrieval.source: hf:{name} is no dataset saved on disk here (nothing is downloaded); load it once "
            "with datasets, save_to_disk(FOLDER), and give hf:FOLDER"
        )
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ConfigError(f"retrieval.split: hf:{name} has no split {split!r} (it has {', '.join(loaded)})")
        loaded = loaded[split]
    return loaded


def hf_reference(name: str, rcfg, class_names: list[str], size: int, channels: int) -> Reference:
    import datasets

    ds = open_hf(name, rcfg.split)
    for column in (rcfg.image_column, rcfg.label_column):
        if column is not None and column not in ds.column_names:
            raise ConfigError(f"retrieval: hf:{name} has no column {column!r} (it has {', '.join(ds.column_names)})")
    if not isinstance(ds.features[rcfg.image_column], datasets.Image):
        raise ConfigError(f"retrieval.image_column: hf:{name}'s column {rcfg.image_column!r} is no Image column")
    ds = ds.cast_column(rcfg.image_column, datasets.Image(decode=False))  # its bytes, decoded by HFImages alone
    labels = None if rcfg.label_column is None else hf_labels(ds, rcfg.label_column, class_names, name)
    stand_in = np.zeros(len(ds), dtype=np.int64) if labels is None else labels
    identity = {"hf": ds._fingerprint, "columns": [rcfg.image_column, rcfg.label_column], "split": rcfg.split}
    return Reference(HFImages(ds, rcfg.image_column, size, channels, stand_in), labels, {"hf_fingerprint": identity})


def hf_labels(ds, column: str, class_names: list[str], name: str) -> np.ndarray:
    """The class of each row: a class index, or a class name (a ``ClassLabel`` names its own)."""
    feature = ds.features[column]
    values = ds[column]
    if hasattr(feature, "names"):
        values = [feature.names[v] for v in values]
    index = {n.casefold(): c for c, n in enumerate(class_names)}
    out = []
    for v in values:
        c = v if isinstance(v, int) and 0 <= v < len(class_names) else index.get(str(v).casefold())
        if c is None:
            raise ConfigError(f"retrieval.label_column: hf:{name} labels a row {v!r}, no class of this dataset")
        out.append(c)
    return np.asarray(out, dtype=np.int64)


def split_identity(data_id: dict, images: LabeledImages, rows: np.ndarray, what: str) -> dict:
    """The identity of some rows of a dataset split: the data settings and the rows' image ids."""
    return {"data": data_id, "what": what, "ids": stable_hash([images.ids[int(i)] for i in rows])}
