"""Export a prepared experiment's synthetic pool as a Hugging Face dataset folder.

``export_pool`` writes every generated image (with its scores, and whether the filter kept it) as parquet shards (or
an image folder) that ``datasets.load_dataset(DIR, split="train")`` loads with typed features, the dataset card
(``README.md``) and ``harness_pool.json`` (what a run needs to check that the pool fits it). The pool is read only
through the spectrum and filter phases' public functions.
A WebDataset format is left out: ``datasets`` reads tar shards as ``png``/``json`` columns, not our typed features,
so importing them would need a second reading path.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pandas as pd
from PIL import Image

from harness.config import ConfigError
from harness.config.keys import params_identity, scorer_key
from harness.core.errors import FileSystemError, HarnessError
from harness.core.io import git_commit, lock, read_json, write_json
from harness.phases.filter import read_scores, with_scores
from harness.phases.spectrum import SELECTED, read_all_tries
from harness.pool.card import write_card
from harness.pool.schema import FORMATS, META_FILE, generation_identity, pool_features

MAX_SHARD_BYTES = 500 * 10**6  # the Hub's recommended parquet shard size
ROWS_PER_GROUP = 64  # rows buffered before they are written (bounds the memory an export needs)
# the phases whose settings decide a pool (the card states each one's resolved config)
POOL_PHASES = ("data", "model", "base", "hard", "generator", "spectrum", "scorer", "filter")


class ExportExistsError(HarnessError, FileExistsError):
    """``pool export --out`` names a file or a folder that is not empty."""


@dataclass
class Exported:
    out: Path
    rows: int
    files: list[Path]


def export_frame(prep) -> pd.DataFrame:
    """Every generated image of ``prep``'s pool with its scores, ``keep`` and ``selected``: with retries
    (``selected.json``), every try of every sample, scored (the retries scored each one), ``selected`` marking the
    try the sample kept and ``keep`` whether the filter kept it (only a selected try can be kept); without, the
    pool's rows, each selected."""
    if prep.pool_dir is None or not (Path(prep.pool_dir) / SELECTED).exists():
        return prep.pool.assign(selected=True)
    tries = read_all_tries(prep.pool_dir)
    tries = with_scores(tries, read_scores(prep.pool_dir, f"scores-{scorer_key(prep.cfg)}.jsonl"))
    chosen, kept = set(read_json(prep.pool_dir / SELECTED)["keys"]), dict(zip(prep.pool.key, prep.pool.keep))
    tries["selected"] = tries.key.isin(chosen)
    tries["keep"] = [bool(kept.get(k, False)) for k in tries.key]
    return tries.sort_values(["lam", "source_index", "seed_index", "try"], kind="stable").reset_index(drop=True)


def image_path(pool_dir: Path, row: dict) -> Path:
    """Where a manifest row's image lies (the one place that knows the pool's storage)."""
    return pool_dir / row["file"]


def export_rows(prep, generator_settings: dict, frame: pd.DataFrame | None = None) -> Iterator[dict]:
    """One dict per generated image (``frame``, default ``export_frame(prep)``), its PNG bytes read when the row is
    reached (never the whole pool)."""
    cfg, names = prep.cfg, prep.data.class_names
    params = json.dumps(params_identity("generator", cfg.generator.name, cfg.generator.params), default=str)
    fixed = {
        "generator": cfg.generator.name,
        "generator_model": str(generator_settings.get("model", "")),
        "generator_params": params,
        "scheduler": str(generator_settings.get("scheduler", cfg.spectrum.scheduler)),
        "steps": int(generator_settings.get("steps", cfg.spectrum.steps)),
        "guidance_scale": float(generator_settings.get("guidance_scale", cfg.spectrum.guidance_scale)),
    }
    frame = export_frame(prep) if frame is None else frame
    with_try = "try" in frame.columns
    columns = list(frame.columns)
    for values in frame.itertuples(index=False, name=None):  # ("try" is no attribute name)
        row = dict(zip(columns, values))
        path = image_path(prep.pool_dir, row)
        data = path.read_bytes()
        width, height = Image.open(io.BytesIO(data)).size  # the header only
        yield {
            "image": {"bytes": data, "path": path.name},
            "label": int(row["label"]),
            "class_name": names[int(row["label"])],
            "source_id": str(row["source_id"]),
            "source_index": int(row["source_index"]),
            "lam": float(row["lam"]),
            "seed_index": int(row["seed_index"]),
            "seed": int(row["seed"]),
            **({"try": int(row["try"]), "selected": bool(row["selected"])} if with_try else {}),
            "prompt": str(row["prompt"]),
            "key": str(row["key"]),
            "text_score": float(row["text_score"]),
            "image_score": float(row["image_score"]),
            "keep": bool(row["keep"]),
            **fixed,
            "width": int(width),
            "height": int(height),
        }


def batches(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    rows = iter(rows)
    while batch := list(islice(rows, size)):
        yield batch


def write_parquet(
    rows: Iterable[dict], features, data_dir: Path, max_shard_bytes: int, rows_per_group: int
) -> list[Path]:
    """Parquet shards ``train-XXXXX-of-NNNNN.parquet`` of at most ``max_shard_bytes`` each (unless one row group is
    larger), written a row group at a time; the schema carries the ``datasets`` features."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, written = features.arrow_schema, []
    sink = writer = None

    def close():
        if writer is not None:
            writer.close()
            sink.close()

    for batch in batches(rows, rows_per_group):
        table = pa.Table.from_pydict(features.encode_batch({k: [r[k] for r in batch] for k in features}), schema)
        if writer is not None and sink.tell() + table.nbytes > max_shard_bytes:
            close()
            writer = None
        if writer is None:
            written.append(data_dir / f"train-{len(written):05d}.parquet")
            sink = pa.OSFile(str(written[-1]), "wb")
            writer = pq.ParquetWriter(sink, schema)
        writer.write_table(table, row_group_size=len(batch))
        del table
    close()
    if not written:  # an empty pool is still a loadable dataset
        written.append(data_dir / "train-00000.parquet")
        pq.write_table(schema.empty_table(), written[-1])
    named = []
    for i, path in enumerate(written):
        named.append(path.with_name(f"train-{i:05d}-of-{len(written):05d}.parquet"))
        path.rename(named[-1])
    return named


def write_imagefolder(rows: Iterable[dict], data_dir: Path) -> list[Path]:
    """``train/<image>.png`` beside ``train/metadata.jsonl`` (the image column as ``file_name``)."""
    folder = data_dir / "train"
    folder.mkdir(parents=True)
    with open(folder / "metadata.jsonl", "w") as meta:
        for row in rows:
            image = row.pop("image")
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", row["key"]) + ".png"
            (folder / name).write_bytes(image["bytes"])
            meta.write(json.dumps({"file_name": name, **row}) + "\n")
    return sorted(folder.iterdir())


def harness_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("discl-harness")
    except PackageNotFoundError:
        return "unknown"


def pool_meta(prep, fmt: str, frame: pd.DataFrame, generator_settings: dict, command: str | None) -> dict:
    """``harness_pool.json``: what the pool was made with, for the fit check of a run that imports it."""
    cfg = prep.cfg
    return {
        "format": fmt,
        "experiment": cfg.name,
        "pool_key": prep.pool_dir.name,
        "scorer_key": scorer_key(cfg),
        "filter_threshold": cfg.filter.threshold,
        "max_tries": cfg.spectrum.max_tries,
        "class_names": list(prep.data.class_names),
        "identity": generation_identity(cfg),
        "generator_settings": generator_settings,
        "images": len(frame),  # every try
        "samples": len(prep.pool),
        "kept": int(prep.pool.keep.sum()),
        "harness_version": harness_version(),
        "git_commit": git_commit(),
        "config": {phase: cfg.to_dict()[phase] for phase in POOL_PHASES},
        "command": command or f"harness generate --experiment {cfg.name}",
    }


def check_out(out: Path) -> None:
    """Refuse, in one line, an ``--out`` that cannot become the export: one that names no new folder (``.``,
    ``..``), a symbolic link, a file, a folder that is not empty, or one whose parent is no folder."""
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise ExportExistsError(f"pool export --out: {out} names no new folder; give one, e.g. {out / 'pool'}")
    if out.is_symlink():
        raise ExportExistsError(f"pool export --out: {out} is a symbolic link; give a new folder (or remove the link)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportExistsError(
            f"pool export --out: {out} exists and is not an empty folder; give a new folder (or remove {out})"
        )
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ExportExistsError(f"pool export --out: {parent} is a file, not a folder; give another --out")


def check_export(prep, out: Path, fmt: str) -> None:
    """Refuse, in one line, an unknown format, an experiment without a pool, or an ``out`` that cannot be used."""
    if fmt not in FORMATS:
        raise ConfigError(f"pool export --format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if prep.pool_dir is None or not len(prep.pool):
        raise ConfigError(
            f"experiment {prep.cfg.name}: no synthetic pool to export (no hard samples, or no method uses one)"
        )
    check_out(out)


def private_folder(out: Path) -> Path:
    """A new folder of this process only, beside ``out`` (so the final rename stays on one file system)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as e:
        raise FileSystemError(f"pool export --out: cannot write beside {out} ({e.strerror}); give another --out") from e
    folder.chmod(0o755)  # a folder to publish (mkdtemp's is private)
    return folder


def publish(staged: Path, out: Path) -> None:
    """Rename ``staged`` to ``out`` under a lock on ``out``, checking again that ``out`` is free: of two exports to
    one ``out``, one wins and the other says so in one line; nothing but ``staged`` is ever removed."""
    with lock(out.parent / f".{out.name}.export"):
        check_out(out)
        try:
            os.rename(staged, out)  # atomic; onto an empty folder too
        except OSError as e:
            raise ExportExistsError(
                f"pool export --out: {out} could not be written ({e.strerror}); give a new folder"
            ) from e


def export_pool(
    prep,
    out: Path,
    fmt: str = "parquet",
    command: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    rows_per_group: int = ROWS_PER_GROUP,
) -> Exported:
    """Write ``prep``'s pool to ``out`` (which must not exist or be empty), atomically: into a private folder of
    this process beside it, renamed at the end under a lock."""
    out = Path(out)
    check_export(prep, out, fmt)
    complete = prep.pool_dir / "complete.json"
    generator_settings = json.loads(complete.read_text()).get("generator", {}) if complete.exists() else {}
    frame = export_frame(prep)
    features = pool_features(prep.data.class_names, "try" in frame.columns)
    staged = private_folder(out)
    try:
        (staged / "data").mkdir()
        rows = export_rows(prep, generator_settings, frame)
        if fmt == "parquet":
            files = write_parquet(rows, features, staged / "data", max_shard_bytes, rows_per_group)
            data_files = "data/train-*.parquet"
        else:
            files = write_imagefolder(rows, staged / "data")
            data_files = "data/train/**"
        meta = pool_meta(prep, fmt, frame, generator_settings, command)
        write_json(staged / META_FILE, meta)
        (staged / META_FILE).chmod(0o644)  # a file to publish (write_json's temp file is private)
        write_card(staged / "README.md", prep, meta, features, files, data_files)
        publish(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # this process's own folder (gone once published)
    return Exported(out, len(frame), [out / f.relative_to(staged) for f in files])
