"""An exported pool's rows and images, read as untrusted input.

Only the files under the pool's own ``data/`` are read (the card's ``data_files`` are checked, never followed), and
only the image bytes embedded in them are decoded: nothing is opened by a path a row names, and nothing is fetched.
Each file is copied once into the workdir (``cache/pool-imports/``, named by its sha256) while it is hashed, and
everything after reads that copy, so the digest recorded is of exactly the bytes used. Before a row is read, the
parquet schema is checked against the pool's typed columns and the footer's sizes against the caps (bytes per row,
bytes per pool); every image's header is checked against this experiment's image size and mode before it is
decoded, and the (source, λ, seed, try) of every row must be unique. Each refusal is one line naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from harness.config import ConfigError, stable_hash
from harness.pool.meta import AGAIN, MAX_META_BYTES
from harness.pool.schema import pool_features
from harness.pool.source import PoolSource, data_files, inside

MAX_POOL_BYTES = 64 * 2**30  # the rows of one pool, uncompressed, images included
ROW_TEXT_BYTES = 64 * 2**10  # a row's text columns (prompt, key, generator settings) and a PNG's own overhead
BATCH_ROWS = 4  # rows read at once: each is checked against the cap before the next are read
IMAGE_NAME = re.compile(r"[A-Za-z0-9_.-]+\.png")  # an image folder's file names, as ``pool export`` writes them


@dataclass(frozen=True)
class Limits:
    """What every imported image must be and the caps checked before anything is read."""

    size: tuple[int, int]  # (width, height): what this experiment's generator makes
    mode: str  # the dataset's: L (1 channel) or RGB
    row_bytes: int
    pool_bytes: int

    @classmethod
    def of(cls, cfg, channels: int) -> Limits:
        from harness.core.registry import get_generator

        size = get_generator(cfg.generator.name).output_size(cfg)
        mode = "L" if channels == 1 else "RGB"
        # a PNG is at most about its raw pixels (stored blocks) plus headers: twice that leaves room for any encoder
        return cls(tuple(size), mode, 2 * size[0] * size[1] * len(mode) + ROW_TEXT_BYTES, MAX_POOL_BYTES)


@dataclass
class PoolData:
    """The verified rows (every column but the image) and, per row, where its image bytes are in the copies."""

    rows: pd.DataFrame
    digest: str
    shards: list = field(default_factory=list)  # pyarrow ParquetFile of each copy
    where: list[tuple[int, int, int]] = field(default_factory=list)  # (shard, row group, row in group) per row
    cached: tuple = (None, None)  # the last row group's image column read

    def image(self, i: int) -> Image.Image:
        shard, group, row = self.where[i]
        if self.cached[0] != (shard, group):
            column = self.shards[shard].read_row_group(group, columns=["image"]).column("image").combine_chunks()
            self.cached = ((shard, group), column.field("bytes"))
        img = Image.open(io.BytesIO(self.cached[1][row].as_py()), formats=["PNG"])
        img.load()
        return img


def stage_copy(path: Path, stage: Path, cap: int, what: str) -> tuple[Path, str]:
    """``path``'s bytes copied into ``stage`` (named by their sha256) while they are hashed; at most ``cap`` bytes."""
    if path.stat().st_size > cap:
        raise ConfigError(f"spectrum.pool: {path} holds {path.stat().st_size} bytes, over the {cap} of {what}; {AGAIN}")
    stage.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=stage, suffix=".part")
    h, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            while block := src.read(1 << 20):
                size += len(block)
                if size > cap:
                    raise ConfigError(f"spectrum.pool: {path} grew past the {cap} bytes of {what}; {AGAIN}")
                h.update(block)
                dst.write(block)
        copy = stage / f"{h.hexdigest()}{path.suffix}"
        os.replace(tmp, copy)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return copy, h.hexdigest()


def read_pool(source: PoolSource, class_names: list[str], fmt: str, limits: Limits, stage: Path) -> PoolData:
    """Verify and read the pool's data files (``fmt``: parquet or imagefolder); the digest covers
    ``harness_pool.json`` and every data file, as read."""
    meta_copy, meta_sha = stage_copy(inside(source, source.path / "harness_pool.json"), stage, MAX_META_BYTES, "a file")
    meta_copy.unlink()
    digests = [["harness_pool.json", {"sha256": meta_sha}]]
    files = data_files(source)
    total = sum(p.stat().st_size for p in files)
    if total > limits.pool_bytes:
        raise ConfigError(
            f"spectrum.pool: {source.path / 'data'} holds {total} bytes, over the {limits.pool_bytes} a pool may; "
            f"{AGAIN}"
        )
    reader = ParquetRows(class_names, limits) if fmt == "parquet" else FolderRows(class_names, limits)
    for path in files:
        digests.append([path.relative_to(source.path).as_posix(), reader.add(path, stage)])
    pool = reader.finish()
    pool.digest = stable_hash(digests, 16)
    return pool


class ParquetRows:
    """Parquet shards ``data/*.parquet``: schema and footer sizes first, then one row group at a time."""

    def __init__(self, class_names: list[str], limits: Limits):
        self.class_names, self.limits, self.pool = class_names, limits, PoolData(pd.DataFrame(), "")
        self.frames, self.uncompressed = [], 0

    def add(self, path: Path, stage: Path) -> dict:
        if path.suffix != ".parquet":
            raise ConfigError(f"spectrum.pool: {path} is no parquet shard; a parquet pool's data/ holds only those")
        copy, sha = stage_copy(path, stage, self.limits.pool_bytes, "a pool")
        self.read_shard(path, copy)
        return {"sha256": sha}

    def read_shard(self, path: Path, copy: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            shard = pq.ParquetFile(copy)
        except (pa.ArrowException, OSError) as e:
            raise ConfigError(f"spectrum.pool: {path} is no readable parquet file ({first_line(e)}); {AGAIN}") from None
        check_schema(path, shard.schema_arrow, self.class_names)
        self.check_sizes(path, shard.metadata)
        index = len(self.pool.shards)
        self.pool.shards.append(shard)
        for group in range(shard.metadata.num_row_groups):
            rows = 0
            try:  # a few rows at a time: a dictionary-encoded column can hold one huge value for many rows
                for batch in shard.iter_batches(batch_size=BATCH_ROWS, row_groups=[group]):
                    self.frames.append(check_rows(path, pa.Table.from_batches([batch]), self.limits))
                    self.pool.where += [(index, group, rows + i) for i in range(batch.num_rows)]
                    rows += batch.num_rows
            except (pa.ArrowException, OSError) as e:
                raise ConfigError(
                    f"spectrum.pool: {path}: row group {group} is unreadable ({first_line(e)}); {AGAIN}"
                ) from None

    def check_sizes(self, path: Path, footer) -> None:
        """The footer's uncompressed sizes against the caps, before any row is read."""
        for group in range(footer.num_row_groups):
            g = footer.row_group(group)
            if g.total_byte_size > max(1, g.num_rows) * self.limits.row_bytes:
                raise ConfigError(
                    f"spectrum.pool: {path}: row group {group} holds {g.total_byte_size} bytes for {g.num_rows} rows, "
                    f"over the {self.limits.row_bytes} bytes a row of {self.limits.size[0]}×{self.limits.size[1]} "
                    f"{self.limits.mode} images may; {AGAIN}"
                )
            self.uncompressed += g.total_byte_size
        if self.uncompressed > self.limits.pool_bytes:
            raise ConfigError(
                f"spectrum.pool: {path}: the pool's rows hold {self.uncompressed} bytes uncompressed, over the "
                f"{self.limits.pool_bytes} a pool may; {AGAIN}"
            )

    def finish(self) -> PoolData:
        self.pool.rows = pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()
        check_unique(self.pool.rows)
        return self.pool


class FolderRows(ParquetRows):
    """An image folder ``data/train/metadata.jsonl`` + PNGs: its rows typed like a shard's, written as one."""

    def __init__(self, class_names: list[str], limits: Limits):
        super().__init__(class_names, limits)
        self.metadata, self.images = None, {}

    def add(self, path: Path, stage: Path) -> dict:
        if path.name == "metadata.jsonl" and path.parent.name == "train":
            copy, sha = stage_copy(path, stage, self.limits.pool_bytes, "a pool")
            self.metadata = (path, copy)
            return {"sha256": sha}
        if not IMAGE_NAME.fullmatch(path.name) or path.parent.name != "train":
            raise ConfigError(f"spectrum.pool: {path} is not an image of the pool's data/train/ folder; {AGAIN}")
        copy, sha = stage_copy(path, stage, self.limits.row_bytes, "a row")
        self.images[path.name] = copy
        return {"sha256": sha}

    def finish(self) -> PoolData:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.metadata is None:
            raise ConfigError(f"spectrum.pool: the image folder has no data/train/metadata.jsonl; {AGAIN}")
        path, copy = self.metadata
        rows = []
        for n, line in enumerate(copy.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                row = json.loads(line)
                name = row.pop("file_name")
                row["image"] = {"bytes": self.images[name].read_bytes(), "path": None}
            except (ValueError, AttributeError, TypeError, KeyError):
                raise ConfigError(
                    f"spectrum.pool: {path}: line {n} is no row naming one of its images; {AGAIN}"
                ) from None
            rows.append(row)
        features = pool_features(self.class_names, bool(rows) and "try" in rows[0])
        try:
            table = pa.Table.from_pylist(rows, features.arrow_schema)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise ConfigError(
                f"spectrum.pool: {path}: rows not of the pool's columns ({first_line(e)}); {AGAIN}"
            ) from None
        rewritten = copy.with_suffix(".parquet")
        pq.write_table(table, rewritten)
        self.read_shard(path, rewritten)
        return super().finish()


def first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def check_schema(path: Path, schema, class_names: list[str]) -> None:
    """The shard's columns and types must be the pool's (``pool_features``), read from its footer."""
    expected = pool_features(class_names, "try" in schema.names).arrow_schema
    missing = [n for n in expected.names if n not in schema.names]
    extra = [n for n in schema.names if n not in expected.names]
    wrong = [
        f"{n} is {schema.field(n).type}, not {expected.field(n).type}"
        for n in expected.names
        if n in schema.names and not schema.field(n).type.equals(expected.field(n).type)
    ]
    problems = [
        *([f"lacks the column(s) {', '.join(missing)}"] if missing else []),
        *([f"has unknown column(s) {', '.join(extra)}"] if extra else []),
        *wrong,
    ]
    if problems:
        raise ConfigError(f"spectrum.pool: {path} is not a pool's shard ({'; '.join(problems)}); {AGAIN}")


def check_rows(path: Path, table, limits: Limits) -> pd.DataFrame:
    """Every row's size under the cap and its image embedded, of this experiment's size and mode, decodable; the
    rows without their images."""
    import pyarrow as pa
    import pyarrow.compute as pc

    images = table.column("image").combine_chunks()
    blobs = images.field("bytes")
    row_bytes = pc.fill_null(pc.binary_length(blobs), 0)
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if name != "image" and (pa.types.is_string(column.type) or pa.types.is_binary(column.type)):
            row_bytes = pc.add(row_bytes, pc.fill_null(pc.binary_length(column), 0))
    frame = table.drop_columns(["image"]).to_pandas()
    for i, (blob, nbytes) in enumerate(zip(blobs, row_bytes)):
        key = frame.key.iat[i]
        if nbytes.as_py() > limits.row_bytes:
            raise ConfigError(
                f"spectrum.pool: {path}: row {key!r} holds {nbytes.as_py()} bytes, over the {limits.row_bytes} a row "
                f"of {limits.size[0]}×{limits.size[1]} {limits.mode} images may; {AGAIN}"
            )
        if not blob.is_valid:
            named = images.field("path")[i].as_py()
            raise ConfigError(
                f"spectrum.pool: {path}: row {key!r} has no image bytes (only a path, {named!r}); an import decodes "
                f"only images embedded in the pool's files; {AGAIN}"
            )
        check_image(path, key, blob.as_py(), limits, (frame.width.iat[i], frame.height.iat[i]))
    return frame


def check_image(path: Path, key: str, data: bytes, limits: Limits, declared: tuple[int, int]) -> None:
    """A PNG of ``limits``' size and mode (checked from its header, before its pixels are decoded) that decodes."""
    what = f"spectrum.pool: {path}: row {key!r}"
    try:
        with warnings.catch_warnings():  # the size is checked here, before any pixel is decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=["PNG"])
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as e:
        raise ConfigError(f"{what} has no PNG image ({first_line(e)}); {AGAIN}") from None
    want = f"{limits.size[0]}×{limits.size[1]} {limits.mode}"
    if img.size != limits.size or img.mode != limits.mode or tuple(map(int, declared)) != img.size:
        raise ConfigError(
            f"{what} is a {img.size[0]}×{img.size[1]} {img.mode} image (its row says {declared[0]}×{declared[1]}); "
            f"this experiment's generator makes {want} images; {AGAIN}"
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ConfigError(f"{what}: its PNG does not decode ({first_line(e)}); {AGAIN}") from None


def check_unique(rows: pd.DataFrame) -> None:
    """One row per (source, λ, seed index, try) and per (source, λ, seed)."""
    if rows.empty:
        return
    tries = rows["try"] if "try" in rows else 0
    frame = rows.assign(lam6=rows.lam.round(6), try_=tries)
    for columns in (["source_id", "lam6", "seed_index", "try_"], ["source_id", "lam6", "seed"]):
        repeated = frame[frame.duplicated(columns, keep=False)]
        if len(repeated):
            r = repeated.iloc[0]
            raise ConfigError(
                f"spectrum.pool: {len(repeated)} rows share a (source, λ, seed), e.g. {r.source_id!r} at λ "
                f"{r.lam:g} with seed {r.seed}; a pool holds one image per sample and try; {AGAIN}"
            )
