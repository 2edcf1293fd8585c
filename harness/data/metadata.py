"""Datasets from their metadata alone: labels, ids and split sizes, without opening (or needing) an image.

``harness plan`` works on these: a copy of ImageNet-LT's split files or iWildCam's ``metadata.csv`` and
``categories.csv`` is enough. Each reader follows its dataset's loader (the same files, checks, subsampling and
random stream), so its splits hold the same labels and ids as the loader's; the images are ``LabelsOnly``.
Datasets without a metadata reader (the embedded ones, held in memory anyway) are loaded by their own loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.config import build
from harness.data.base import DataError, DatasetBundle, LabeledImages


class LabelsOnly(LabeledImages):
    """A split known from its metadata: ids and labels; reading an image is an error."""

    def __init__(self, labels, ids):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ids = list(ids)

    def load(self, i: int):
        raise DataError(f"{self.ids[i]}: a metadata-only split has no images (harness plan reads labels only)")

    decode = raw = load


def imagenet_lt_metadata(cfg) -> DatasetBundle:
    """ImageNet-LT from ``ImageNet_LT_{train,val,test}.txt`` (in ``data.params.split_dir``, default ``data.root``)."""
    from harness.data import imagenet_lt as il

    p = build(il.ImageNetLTParams, cfg.data.params, "data.params")
    if not (p.split_dir or cfg.data.root):
        raise DataError(f"imagenet_lt: data.root is not set; {il.HOW_TO_OBTAIN}")
    split_dir = Path(p.split_dir or cfg.data.root).expanduser()
    return il.bundle_from_split_files(
        cfg, p, split_dir, lambda path, rels, labels, index: LabelsOnly(labels[index], [rels[i] for i in index])
    )


def iwildcam_metadata(cfg) -> DatasetBundle:
    """iWildCam from ``ROOT/iwildcam_v2.0/metadata.csv`` and ``categories.csv`` (labels ``y`` and splits as wilds
    reads them; ids are ``image_id``)."""
    from harness.data import iwildcam as iw

    p = build(iw.IWildCamParams, cfg.data.params, "data.params")
    if not cfg.data.root:
        raise DataError(f"iwildcam: data.root is not set; expected ROOT/{iw.DATA_DIR}/; {iw.HOW_TO_STAGE}")
    folder = Path(cfg.data.root).expanduser() / iw.DATA_DIR
    for name in ("metadata.csv", "categories.csv"):
        if not (folder / name).is_file():
            raise DataError(f"iwildcam: {folder / name} not found; {iw.HOW_TO_STAGE}")
    metadata = iw.read_csv(folder / "metadata.csv", iw.METADATA_COLUMNS)
    iw.check_metadata(metadata, folder / "metadata.csv")
    categories = iw.read_csv(folder / "categories.csv", ["y", "category_id", "name"])
    labels = metadata["y"].to_numpy(dtype=np.int64)
    split = metadata["split"].astype(str).to_numpy()
    image_ids = metadata["image_id"].astype(str).to_numpy()
    rng = np.random.default_rng(cfg.data.split_seed)  # the loader's stream: the same subsample of each split
    splits = {}
    for name in iw.SPLITS:
        limits = [n for n in (p.max_per_split, cfg.data.max_train if name == "train" else None) if n]
        index = iw.subsample(np.flatnonzero(split == name), min(limits, default=None), rng)
        splits[name] = LabelsOnly(labels[index], image_ids[index].tolist())
    return DatasetBundle(
        "iwildcam",
        iw.class_names(int(labels.max(initial=-1)) + 1, categories, p.common_names),
        splits,
        channels=3,
        val_split=p.val_split,
        test_splits={"test_id": "id_test", "test_ood": "test"},
        many=cfg.data.shot_groups.many,
        few=cfg.data.shot_groups.few,
    )


READERS = {"imagenet_lt": imagenet_lt_metadata, "iwildcam": iwildcam_metadata}


def load_metadata(cfg) -> tuple[DatasetBundle, bool]:
    """The dataset's splits from metadata, and whether they are metadata-only (False: the dataset's own loader ran,
    for a dataset without a metadata reader)."""
    reader = READERS.get(cfg.data.name)
    from harness.data import load_dataset, with_shot_groups

    if reader is not None:
        return with_shot_groups(reader(cfg), cfg), True
    return load_dataset(cfg), False


def frame(bundle: DatasetBundle) -> pd.DataFrame:
    """Images and classes per split (a summary for the plan)."""
    return pd.DataFrame(
        [{"split": k, "images": len(v), "classes": int(len(np.unique(v.labels)))} for k, v in bundle.splits.items()]
    )
