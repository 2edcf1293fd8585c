"""``iwildcam``: iWildCam2020-WILDS (wilds 2.0), loaded through ``wilds.get_dataset`` from a copy staged by hand.

Splits train, val (OOD), test (OOD), id_val and id_test, as wilds defines them; model selection on the OOD ``val``
split by default (the WILDS convention: its iWildCam baselines select on OOD val; ``id_val`` is selectable through
``data.params.val_split``), reported test splits ``test_id`` = id_test and ``test_ood`` = test. Metrics are
what ``IWildCamDataset.eval`` computes: macro F1 over the classes present in y_true, and accuracy.

The layout is checked before wilds sees it, so a missing or broken copy gets a one-line ``DataError`` that says
what is expected where, instead of a wilds assertion or its advice to pass ``download=True`` (the wilds download
server has been failing; users stage the archive themselves).
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.metrics import f1_score
from torchvision.transforms.functional import pil_to_tensor

from harness.config import build
from harness.core.registry import register_dataset
from harness.data.base import DataError, DatasetBundle, FileImages, default_workers, to_tensor01

DATA_DIR = "iwildcam_v2.0"
RELEASE = "RELEASE_v2.0.txt"
SPLITS = ("train", "val", "test", "id_val", "id_test")
METADATA_COLUMNS = [
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
]
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # what wilds parses with datetime.strptime
NOT_IN_BENCHMARK = 99999  # y of the categories.csv rows outside the 182 benchmark classes
HOW_TO_STAGE = (
    "stage it by hand (the wilds download server has been failing): download the iWildCam v2.0 archive (12 GB "
    "tar.gz: https://worksheets.codalab.org/rest/bundles/0x6313da2b204647e79a14b468131fcd64/contents/blob/, or a "
    "mirror linked from https://wilds.stanford.edu/datasets or Kaggle) and extract it so that "
    f"ROOT/{DATA_DIR}/ holds {RELEASE}, metadata.csv, categories.csv and train/ (every split's images), "
    "then pass ROOT as data.root (--set data.root=ROOT)"
)


@dataclass
class IWildCamParams:
    val_split: str = "val"  # model selection: val (OOD validation, the WILDS convention) or id_val
    common_names: str | None = None  # JSON mapping y → common name, overriding the shipped one
    max_per_split: int | None = None  # keep a random subset of each split (quick runs)
    num_workers: int | None = None  # DataLoader workers for these files (default: this process's share of the cores)
    # reduced: each JPEG decoded at the smallest DCT scale ≥ data.image_size (ReducedJpegImages, fast); full: at full
    # resolution, then the transforms crop and resize (the authors: src/datasets/iwildcam.py reads each file whole)
    decode: str = "reduced"


DECODES = ("reduced", "full")


class ReducedJpegImages(FileImages):
    """``load`` and ``decode`` decode the JPEG at the smallest DCT scale still ≥ the tensor size on both sides:
    camera-trap frames are ~1920×1080 and a full decode per epoch dominates training time, while CLIP's
    preprocessing brings the shorter side down to the tensor size anyway. ``raw`` stays full resolution."""

    def reduced(self, i: int) -> Image.Image:
        try:
            with Image.open(self.paths[i]) as img:
                img.draft("RGB", (self.size, self.size))
                return img.convert("RGB")
        except (OSError, SyntaxError) as e:
            raise DataError(f"cannot read image {self.paths[i]}: {e}") from None

    def load(self, i: int) -> torch.Tensor:
        return to_tensor01(self.reduced(i), self.size, self.channels)

    def decode(self, i: int) -> torch.Tensor:
        return pil_to_tensor(self.reduced(i))


# --------------------------------------------------------------------------- layout checks


def data_dir(root: str | None) -> Path:
    """ROOT/iwildcam_v2.0 after checking the marker files; a DataError (one line) otherwise."""
    if not root:
        raise DataError(f"iwildcam: data.root is not set; expected ROOT/{DATA_DIR}/; {HOW_TO_STAGE}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"iwildcam: data.root {base} does not exist; expected {base}/{DATA_DIR}/; {HOW_TO_STAGE}")
    folder = base / DATA_DIR
    for name in (RELEASE, "metadata.csv", "categories.csv"):
        if not (folder / name).is_file():
            raise DataError(f"iwildcam: {folder / name} not found; {HOW_TO_STAGE}")
    if not (folder / "train").is_dir():
        raise DataError(f"iwildcam: image folder {folder / 'train'} not found; {HOW_TO_STAGE}")
    return folder


def read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"iwildcam: {path} is not a readable CSV ({e}); {HOW_TO_STAGE}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"iwildcam: {path} lacks column(s) {', '.join(missing)} (expected {', '.join(columns)}); {HOW_TO_STAGE}"
        )
    return frame


def check_metadata(frame: pd.DataFrame, path: Path) -> None:
    """The invariants wilds asserts (or crashes on), checked here so the message names the file."""
    bad_split = sorted(set(frame["split"].astype(str)) - set(SPLITS))
    if bad_split:
        raise DataError(f"iwildcam: {path}: unknown split value(s) {bad_split}; expected {', '.join(SPLITS)}")
    for column in ("y", "location_remapped", "sequence_remapped"):
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any() or (values % 1 != 0).any():
            row = int(np.flatnonzero(values.isna() | (values % 1 != 0))[0])
            raise DataError(
                f"iwildcam: {path} row {row + 2}: column {column} must be an integer, got {frame[column].iloc[row]!r}"
            )
        present = np.unique(values.astype(np.int64))
        if len(present) and (present[0] != 0 or len(present) != present[-1] + 1):
            gaps = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))[:5]
            raise DataError(
                f"iwildcam: {path}: column {column} must cover 0..max with no gaps (as wilds requires); "
                f"missing {gaps}{' …' if len(gaps) == 5 else ''}; is this the v2.0 metadata?"
            )
    parsed = pd.to_datetime(frame["datetime"], format=DATETIME_FORMAT, errors="coerce")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna())[0])
        raise DataError(
            f"iwildcam: {path} row {row + 2}: datetime {frame['datetime'].iloc[row]!r} is not like "
            f"'2013-06-09 16:01:38.000'"
        )


def check_images(folder: Path, frame: pd.DataFrame) -> None:
    """The first image of each split exists (catches an archive extracted to the wrong place without a full scan;
    a later missing file still gets a DataError naming it)."""
    for split, rows in frame.groupby("split", sort=False):
        path = folder / "train" / str(rows["filename"].iloc[0])
        if not path.is_file():
            raise DataError(
                f"iwildcam: {path} (first {split} image in metadata.csv) not found; every split's "
                f"images belong under {folder / 'train'}/; {HOW_TO_STAGE}"
            )


# --------------------------------------------------------------------------- wilds


def import_wilds():
    """``import wilds`` without the PyPI version-check thread its ``outdated`` import starts."""
    if "wilds" not in sys.modules:
        previous = sys.modules.get("outdated")
        sys.modules["outdated"] = None  # type: ignore[assignment]  # makes wilds' `from outdated import` fail
        try:
            import wilds  # noqa: F401
        finally:
            if previous is None:
                sys.modules.pop("outdated", None)
            else:
                sys.modules["outdated"] = previous
    import wilds

    return wilds


def load_wilds(root: str):
    wilds = import_wilds()
    try:
        return wilds.get_dataset("iwildcam", root_dir=root, download=False)
    except (AssertionError, ValueError, KeyError, FileNotFoundError) as e:
        raise DataError(
            f"iwildcam: wilds could not load {Path(root) / DATA_DIR} ({type(e).__name__}: {e}); {HOW_TO_STAGE}"
        ) from None


# --------------------------------------------------------------------------- names and metrics


def shipped_names() -> dict[int, dict]:
    """Shipped category list: category_id → {y, scientific_name, common_name}."""
    text = resources.files("harness").joinpath("resources/iwildcam_common_names.json").read_text()
    return {int(c["category_id"]): c for c in json.loads(text)["classes"]}


def user_names(path: str) -> dict[int, str]:
    """A JSON file: ``{"classes": [{"y": .., "common_name": ..}, ..]}`` (the shipped format) or ``{y: name}``."""
    file = Path(path).expanduser()
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise DataError(f"iwildcam: data.params.common_names file {file} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"iwildcam: data.params.common_names file {file} is not valid JSON ({e})") from None
    try:
        if isinstance(data, dict) and "classes" in data:
            return {int(c["y"]): str(c["common_name"]) for c in data["classes"] if int(c["y"]) != NOT_IN_BENCHMARK}
        if isinstance(data, dict):
            return {int(k): str(v) for k, v in data.items()}
    except (KeyError, TypeError, ValueError):
        pass
    raise DataError(
        f'iwildcam: data.params.common_names file {file}: expected {{"classes": [{{"y": 0, '
        f'"common_name": ...}}]}} or {{"0": "name", ...}}'
    )


def class_names(num_classes: int, categories: pd.DataFrame, user_file: str | None) -> list[str]:
    """Per y: the user's name, else the shipped common name of its category_id, else categories.csv's name."""
    user = user_names(user_file) if user_file else {}
    shipped = shipped_names()
    rows = categories[categories["y"] != NOT_IN_BENCHMARK].drop_duplicates("y").set_index("y")
    names = []
    for y in range(num_classes):
        if y in user:
            names.append(user[y])
        elif y in rows.index:
            category = shipped.get(int(rows.at[y, "category_id"]))
            names.append(category["common_name"] if category else str(rows.at[y, "name"]))
        else:
            names.append(f"class_{y}")
    return names


def wilds_metrics(y_true: np.ndarray, y_pred: np.ndarray, data: DatasetBundle | None = None) -> dict[str, float]:
    """``IWildCamDataset.eval``: macro F1 over the labels present in y_true, and accuracy (0 on an empty split)."""
    if len(y_true) == 0:
        return {"f1_macro": 0.0, "acc": 0.0}
    with warnings.catch_warnings():  # classes predicted but absent, or never predicted: F1 0, as in wilds
        warnings.simplefilter("ignore")
        f1 = f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))
    return {"f1_macro": float(f1), "acc": float(np.mean(y_true == y_pred))}


# --------------------------------------------------------------------------- the dataset


def subsample(index: np.ndarray, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """A random subset in metadata order (a prefix would keep only the first locations)."""
    if size is None or len(index) <= size:
        return index
    return np.sort(rng.choice(index, size=size, replace=False))


@register_dataset(
    "iwildcam", val_metrics=("f1_macro", "acc"), params_class=IWildCamParams
)  # what wilds_metrics returns
def iwildcam(cfg) -> DatasetBundle:
    p = build(IWildCamParams, cfg.data.params, "data.params")
    if p.val_split not in ("id_val", "val"):
        raise DataError(f"iwildcam: data.params.val_split must be id_val or val, got {p.val_split!r}")
    if p.decode not in DECODES:
        raise DataError(f"iwildcam: data.params.decode must be reduced or full, got {p.decode!r}")
    images = FileImages if p.decode == "full" else ReducedJpegImages
    folder = data_dir(cfg.data.root)
    metadata = read_csv(folder / "metadata.csv", METADATA_COLUMNS)
    check_metadata(metadata, folder / "metadata.csv")
    check_images(folder, metadata)
    categories = read_csv(folder / "categories.csv", ["y", "category_id", "name"])
    dataset = load_wilds(str(Path(cfg.data.root).expanduser()))

    labels = dataset.y_array.numpy()
    fields = dataset.metadata_fields
    extra = pd.DataFrame(
        {
            "location": dataset.metadata_array[:, fields.index("location")].numpy(),
            "sequence": dataset.metadata_array[:, fields.index("sequence")].numpy(),
            "datetime": metadata["datetime"].astype(str).to_numpy(),
        }
    )
    rng = np.random.default_rng(cfg.data.split_seed)
    splits = {}
    image_ids = metadata["image_id"].astype(str).to_numpy()
    for split in SPLITS:
        limits = [n for n in (p.max_per_split, cfg.data.max_train if split == "train" else None) if n]
        in_split = np.flatnonzero(dataset.split_array == dataset.split_dict[split])
        index = subsample(in_split, min(limits, default=None), rng)
        paths = [dataset.data_dir / "train" / name for name in dataset._input_array[index]]
        splits[split] = images(
            paths,
            labels[index],
            image_ids[index].tolist(),
            cfg.data.image_size,
            extra=extra.iloc[index].reset_index(drop=True),
        )
    bundle = DatasetBundle(
        "iwildcam",
        class_names(dataset.n_classes, categories, p.common_names),
        splits,
        channels=3,
        val_split=p.val_split,
        test_splits={"test_id": "id_test", "test_ood": "test"},
        metrics=wilds_metrics,
        many=cfg.data.shot_groups.many,
        few=cfg.data.shot_groups.few,
    )
    bundle.num_workers = p.num_workers if p.num_workers is not None else default_workers()
    return bundle
