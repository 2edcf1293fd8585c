"""Share a spectrum: a synthetic pool exported as a Hugging Face dataset, and runs on an imported one.

``export_pool`` writes a prepared experiment's pool (every generated image, with its scores and whether the filter
kept it) as parquet shards (or an image folder) that ``datasets.load_dataset(DIR, split="train")`` loads with typed
features, a ``README.md`` dataset card (the Hub's YAML header, how the pool was made) and ``harness_pool.json`` (what
a run needs to check that the pool fits it). ``spectrum.pool: DIR | ORG/NAME`` makes a run use such a pool instead of
generating: ``import_pool`` checks that it fits the experiment (one line naming every mismatch), then fills the
experiment's own pool folder through ``generate_spectrum`` with a generator that looks the images up in the
dataset, so the pool is keyed, stored and read exactly as a generated one, and no generator weights are loaded.

The pool is read and written only through the spectrum and filter phases' public functions.
A WebDataset format is left out: ``datasets`` reads tar shards as ``png``/``json`` columns, not our typed features,
so importing them would need a second reading path.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from harness.config import Config, ConfigError, stable_hash
from harness.config.keys import GENERATION_VERSION, file_digest, params_identity, pool_key, scorer_key
from harness.core.distributed import pick_device
from harness.core.io import append_jsonl, read_json, write_json
from harness.data.base import DatasetBundle
from harness.generators.base import GenerationItem, Generator
from harness.phases.filter import acceptance_by_level, cached_text_scores, read_scores, with_scores
from harness.phases.spectrum import (
    SELECTED,
    PlannedImage,
    class_prompts,
    generate_spectrum,
    mark_complete,
    read_all_tries,
    retry_item,
    retry_low_scores,
)

log = logging.getLogger("harness")

FORMATS = ("parquet", "imagefolder")
META_FILE = "harness_pool.json"
MAX_SHARD_BYTES = 500 * 10**6  # the Hub's recommended parquet shard size
ROWS_PER_GROUP = 64  # rows buffered before they are written (bounds the memory an export needs)
# the phases whose settings decide a pool (the card states each one's resolved config)
POOL_PHASES = ("data", "model", "base", "hard", "generator", "spectrum", "scorer", "filter")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


# --------------------------------------------------------------------------- what a pool is made of


def pool_features(class_names: list[str], with_try: bool = False):
    """The typed columns of an exported pool: one row per generated image."""
    from datasets import ClassLabel, Features, Value
    from datasets import Image as ImageFeature

    columns = {
        "image": ImageFeature(),
        "label": ClassLabel(names=list(class_names)),
        "class_name": Value("string"),
        "source_id": Value("string"),
        "source_index": Value("int64"),
        "lam": Value("float64"),
        "seed_index": Value("int32"),
        "seed": Value("int64"),
        **({"try": Value("int32")} if with_try else {}),
        # ``spectrum.max_tries``: whether this try is the one its sample kept (every row, when there are no retries)
        **({"selected": Value("bool")} if with_try else {}),
        "prompt": Value("string"),
        "key": Value("string"),
        "text_score": Value("float64"),
        "image_score": Value("float64"),
        "keep": Value("bool"),
        "generator": Value("string"),
        "generator_model": Value("string"),
        "generator_params": Value("string"),  # JSON: model id and revision, weights, … as configured
        "scheduler": Value("string"),
        "steps": Value("int32"),
        "guidance_scale": Value("float64"),
        "width": Value("int32"),
        "height": Value("int32"),
    }
    return Features(columns)


def generation_identity(cfg: Config) -> dict:
    """The settings besides sources, levels, seeds and prompts that decide a pool's images (flat)."""
    g, s = cfg.generator, cfg.spectrum
    identity = {"generator.name": g.name, "generation_version": GENERATION_VERSION}
    identity |= {f"generator.params.{k}": v for k, v in params_identity("generator", g.name, g.params).items()}
    identity |= {
        "spectrum.steps": s.steps,
        "spectrum.guidance_scale": s.guidance_scale,
        "spectrum.scheduler": s.scheduler,
    }
    return json.loads(json.dumps(identity, default=str))  # as it reads back from JSON


def image_path(pool_dir: Path, row: dict) -> Path:
    """Where a manifest row's image lies (the one place that knows the pool's storage)."""
    return pool_dir / row["file"]


# --------------------------------------------------------------------------- export


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
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
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


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def harness_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("discl-harness")
    except PackageNotFoundError:
        return "unknown"


def export_pool(
    prep,
    out: Path,
    fmt: str = "parquet",
    command: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    rows_per_group: int = ROWS_PER_GROUP,
) -> Exported:
    """Write ``prep``'s pool to ``out`` (which must not exist or be empty), atomically: into a sibling folder
    renamed at the end."""
    from huggingface_hub import DatasetCardData

    from harness.core.io import git_commit

    if fmt not in FORMATS:
        raise ConfigError(f"pool export --format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if prep.pool_dir is None or not len(prep.pool):
        raise ConfigError(
            f"experiment {prep.cfg.name}: no synthetic pool to export (no hard samples, or no method uses one)"
        )
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"pool export --out: {out} exists and is not empty; give a new folder")
    cfg = prep.cfg
    complete = (
        json.loads((prep.pool_dir / "complete.json").read_text()) if (prep.pool_dir / "complete.json").exists() else {}
    )
    generator_settings = complete.get("generator", {})
    frame = export_frame(prep)
    with_try = "try" in frame.columns
    features = pool_features(prep.data.class_names, with_try)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "data").mkdir(parents=True)
    rows = export_rows(prep, generator_settings, frame)
    try:
        if fmt == "parquet":
            files = write_parquet(rows, features, partial / "data", max_shard_bytes, rows_per_group)
            data_files = "data/train-*.parquet"
        else:
            files = write_imagefolder(rows, partial / "data")
            data_files = "data/train/**"
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    meta = {
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
    write_json(partial / META_FILE, meta)
    (partial / META_FILE).chmod(0o644)  # a file to publish (write_json's temp file is private)
    card = DatasetCardData(
        license="other",
        license_name="source-dataset-terms",
        license_details="The images derive from the source dataset's images and inherit its terms.",
        task_categories=["image-classification"],
        size_categories=[size_category(len(frame))],
        tags=["synthetic", "diffusion-curriculum", "discl-harness"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}],
    )
    from datasets import DatasetInfo
    from datasets.info import DatasetInfosDict

    split = {"name": "train", "num_examples": len(frame), "num_bytes": sum(f.stat().st_size for f in files)}
    DatasetInfosDict({"default": DatasetInfo(features=features, splits=[split])}).to_dataset_card_data(card)
    (partial / "README.md").write_text(f"---\n{card.to_yaml()}\n---\n{card_body(prep, meta)}")
    if out.exists():
        out.rmdir()  # empty (checked above)
    partial.rename(out)
    return Exported(out, len(frame), [out / f.relative_to(partial) for f in files])


def card_body(prep, meta: dict) -> str:
    """The card's text: what the pool is and how it was made."""
    import yaml

    cfg, table = prep.cfg, acceptance_by_level(prep.pool)
    counts = "\n".join(
        f"| {r.lam:g} | {int(r.generated)} | {int(r.kept)} | {r.acceptance:.1%} |" for r in table.itertuples()
    )
    config = yaml.safe_dump(meta["config"], sort_keys=False, default_flow_style=None, width=120).rstrip()
    tries = (
        f"Up to {cfg.spectrum.max_tries} tries per sample (`spectrum.max_tries`): a sample whose tries all score "
        f"≤ {cfg.filter.threshold:g} was regenerated with the next description and its own seed, and its "
        f"best-scoring try kept; every try is a row ({meta['images']} rows for {meta['samples']} samples: `try`, "
        "its `seed`, `prompt` and scores), `selected` marks the try each sample kept, and only a selected try can "
        "be `keep`."
        if cfg.spectrum.max_tries > 1
        else "One try per sample (`spectrum.max_tries` 1): every row is `selected`."
    )
    return f"""# Synthetic pool of `{cfg.name}` (discl-harness)

Synthetic images from image-guided diffusion for the hard training images of `{cfg.data.name}`: for each hard
source image, {cfg.spectrum.seeds} seed(s) at each guidance level λ in {cfg.spectrum.levels} (λ = 0: text only;
λ → 1: the source image), scored by `{cfg.scorer.name}` and filtered at text score ≥ {cfg.filter.threshold:g}
(`keep`). One row per generated image, kept or not, with its provenance: source id, λ, seed, prompt, scores and
the generator's settings.
{tries}

**License.** The images derive from the source dataset's images and inherit its terms: check the terms of
`{cfg.data.name}` before using or redistributing them.

## Load it

```python
from datasets import load_dataset
pool = load_dataset("PATH_OR_ORG/NAME", split="train")
kept = pool.filter(lambda r: r["keep"])
```

Run an experiment on it instead of generating (no generator is loaded): `--set spectrum.pool=PATH_OR_ORG/NAME`.

## How it was made

- harness version {meta["harness_version"]}, git commit `{meta["git_commit"]}`
- pool cache key `{meta["pool_key"]}`, scorer key `{meta["scorer_key"]}`, max_tries {meta["max_tries"]}
- generator: {json.dumps(meta["generator_settings"], default=str)}
- regenerate: `{meta["command"]}`

| λ | generated | kept | acceptance |
|---|---|---|---|
{counts}
| all | {meta["samples"]} | {meta["kept"]} | {meta["kept"] / max(1, meta["samples"]):.1%} |

Resolved config of the phases that decided the pool:

```yaml
{config}
```
"""


# --------------------------------------------------------------------------- import


@dataclass
class PoolSource:
    spec: str  # what spectrum.pool says
    path: Path  # the folder read
    revision: str | None  # a Hub repo's commit, for a dataset repo in the local cache
    digest: str  # of the data files' contents

    def describe(self) -> dict:
        return {"source": self.spec, "path": str(self.path), "revision": self.revision, "digest": self.digest}


def data_digest(folder: Path) -> str:
    """sha256 over the data files (names and contents; each file's digest cached by path, mtime and size)."""
    files = sorted(p for p in (folder / "data").rglob("*") if p.is_file())
    return stable_hash([[str(p.relative_to(folder)), file_digest(str(p))["sha256"]] for p in files], 16)


def resolve_source(spec: str) -> PoolSource:
    """``spectrum.pool``: a folder, or ``ORG/NAME``: a dataset repo already in the local Hugging Face cache."""
    folder = Path(spec).expanduser()
    revision = None
    if not folder.is_dir():
        if not REPO_ID.fullmatch(spec):
            raise ConfigError(f"spectrum.pool: {spec!r} is not a folder, nor a Hub dataset id ORG/NAME")
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(repo_id=spec, repo_type="dataset", local_files_only=True))
        except LocalEntryNotFoundError:
            raise ConfigError(
                f"spectrum.pool: {spec} is not a folder and not in the local Hugging Face cache (nothing is "
                f"downloaded at run time); fetch it first: huggingface-cli download --repo-type dataset {spec}"
            ) from None
        revision = folder.name
    if not (folder / META_FILE).is_file():
        raise ConfigError(f"spectrum.pool: {folder} has no {META_FILE}; export a pool with `harness pool export`")
    return PoolSource(spec, folder.resolve(), revision, data_digest(folder))


def open_pool(source: PoolSource, cache: Path, progress: bool = True):
    """The exported dataset (memory-mapped Arrow, converted once into the workdir's cache) and its metadata."""
    import datasets

    meta = json.loads((source.path / META_FILE).read_text())
    enabled = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(str(source.path), split="train", cache_dir=str(cache / "hf-datasets"))
    finally:
        if enabled:
            datasets.enable_progress_bars()
    return ds, meta


LOOKUP_COLUMNS = ["source_id", "label", "lam", "seed_index", "seed", "prompt"]


def lookup_key(source_id: str, lam: float, seed_index: int, try_index: int = 0) -> tuple:
    return (str(source_id), round(float(lam), 6), int(seed_index), int(try_index))


def try_column(rows: pd.DataFrame) -> np.ndarray:
    """Each row's ``try`` (0 for a pool exported before retries had one)."""
    return rows["try"].to_numpy(dtype=np.int64) if "try" in rows else np.zeros(len(rows), dtype=np.int64)


def row_index(rows: pd.DataFrame) -> dict[tuple, int]:
    """``lookup_key`` → row position, for every try."""
    columns = (rows.source_id, rows.lam, rows.seed_index, try_column(rows))
    return {lookup_key(s, lam, k, t): i for i, (s, lam, k, t) in enumerate(zip(*columns))}


def fit_mismatches(cfg: Config, data: DatasetBundle, plan: list[PlannedImage], meta: dict, rows: pd.DataFrame) -> list:
    """Every way the pool fails to hold the experiment's planned spectrum (empty: it fits). More levels or seeds
    than planned are fine."""
    out = []
    theirs, ours = list(meta.get("class_names", [])), list(data.class_names)
    if theirs != ours:
        if len(theirs) != len(ours):
            out.append(f"classes: the pool has {len(theirs)}, the experiment {len(ours)}")
        else:
            diff = [i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b]
            i = diff[0]
            out.append(
                f"classes: {len(diff)} names differ, e.g. label {i} is {theirs[i]!r} in the pool, {ours[i]!r} here"
            )
    identity, here = meta.get("identity", {}), generation_identity(cfg)
    diff = [k for k in sorted(set(identity) | set(here)) if identity.get(k) != here.get(k)]
    if diff:
        out.append(
            "generator: "
            + ", ".join(
                f"{k} is {identity.get(k, '(unset)')!r} in the pool, {here.get(k, '(unset)')!r} here" for k in diff
            )
        )
    sources = dict.fromkeys(p.source_id for p in plan)
    have = set(rows.source_id.astype(str))
    missing = [s for s in sources if s not in have]
    if missing:
        out.append(f"hard sources: {len(missing)} of {len(sources)} not in the pool, e.g. {missing[0]!r}")
    pool_levels = sorted({round(float(x), 6) for x in rows.lam})
    lacking = [lam for lam in cfg.spectrum.levels if round(float(lam), 6) not in pool_levels]
    if lacking:
        out.append(
            f"levels: the pool lacks λ {', '.join(f'{x:g}' for x in lacking)} "
            f"(it has {', '.join(f'{x:g}' for x in pool_levels)})"
        )
    pool_seeds = int(rows.seed_index.max()) + 1 if len(rows) else 0
    if cfg.spectrum.seeds > pool_seeds:
        out.append(f"seeds: the experiment asks {cfg.spectrum.seeds} per (source, λ), the pool has {pool_seeds}")
    tries = try_column(rows)
    later = rows[tries > 0]
    rows = rows[tries == 0].reset_index(drop=True)  # the planned images are try 0; retries are checked below
    index = {lookup_key(s, lam, k): i for i, (s, lam, k) in enumerate(zip(rows.source_id, rows.lam, rows.seed_index))}
    found = [(p, index.get(lookup_key(p.source_id, p.lam, p.seed_index))) for p in plan]
    hits = [(p, i) for p, i in found if i is not None]
    labels = [(p, i) for p, i in hits if int(rows.label.iat[i]) != p.label]
    if labels:
        p, i = labels[0]
        out.append(
            f"labels: {len(labels)} images' classes differ, e.g. {p.source_id!r} is "
            f"{int(rows.label.iat[i])} in the pool, {p.label} here"
        )
    prompts = [(p, i) for p, i in hits if rows.prompt.iat[i] != p.prompt]
    if prompts:
        p, i = prompts[0]
        out.append(f"prompts: {len(prompts)} differ, e.g. {rows.prompt.iat[i]!r} in the pool, {p.prompt!r} here")
    seeds = [(p, i) for p, i in hits if int(rows.seed.iat[i]) != p.seed]
    if seeds:
        out.append(f"sample seeds: {len(seeds)} differ, e.g. {seeds[0][0].key!r}")
    if cfg.spectrum.max_tries > 1 and len(later):
        out += retry_mismatches(cfg, data, plan, later)
    absent = [p for p, i in found if i is None]
    if absent and not out:
        out.append(f"images: {len(absent)} of the {len(plan)} planned are not in the pool, e.g. {absent[0].key!r}")
    return out


def retry_mismatches(cfg: Config, data: DatasetBundle, plan: list[PlannedImage], later: pd.DataFrame) -> list:
    """The pool's later tries (``try`` > 0) of the planned samples against what a retry here would be
    (``retry_item``: the next description, its own seed); tries past this experiment's ``max_tries`` are unused."""
    planned = {lookup_key(p.source_id, p.lam, p.seed_index): p for p in plan}
    prompts = class_prompts(cfg.spectrum, data.class_names, sorted({p.label for p in plan}))
    labels, texts, seeds = [], [], []
    columns = (later.source_id, later.lam, later.seed_index, later["try"], later.label, later.prompt, later.seed)
    for sid, lam, k, t, label, prompt, seed in zip(*columns):
        p = planned.get(lookup_key(sid, lam, k))
        if p is None or int(t) >= cfg.spectrum.max_tries:
            continue
        want = retry_item(p, int(t), prompts[p.label])
        if int(label) != want.label:
            labels.append((want, int(label)))
        if prompt != want.prompt:
            texts.append((want, prompt))
        if int(seed) != want.seed:
            seeds.append((want, int(seed)))
    out = []
    if labels:
        (want, theirs), n = labels[0], len(labels)
        out.append(f"retry labels: {n} differ, e.g. {want.key!r} is {theirs} in the pool, {want.label} here")
    if texts:
        (want, theirs), n = texts[0], len(texts)
        out.append(f"retry prompts: {n} differ, e.g. {want.key!r} (try {want.try_index}) is {theirs!r} in the pool, "
                   f"{want.prompt!r} here")  # fmt: skip
    if seeds:
        (want, theirs), n = seeds[0], len(seeds)
        out.append(f"retry seeds: {n} differ, e.g. {want.key!r} (try {want.try_index}) has {theirs} in the pool, "
                   f"{want.seed} here")  # fmt: skip
    return out


class PoolImages(Generator):
    """Hands ``generate_spectrum`` the images of an imported pool instead of generating them."""

    name = "imported"

    def __init__(self, ds, rows: pd.DataFrame, settings: dict, retries: dict | None = None, why: str = ""):
        self.ds, self.settings = ds, settings
        self.index = {
            (str(s), round(float(lam), 6), int(seed)): i
            for i, (s, lam, seed) in enumerate(zip(rows.source_id, rows.lam, rows.seed))
        }
        # (source id, λ, seed) → the retry a missing image would be, and what the pool was made with (the error)
        self.retries, self.why = retries or {}, why

    def generate(self, items: list[GenerationItem], lam: float) -> list[Image.Image]:
        out = []
        for it in items:
            at = (str(it.source_id), round(float(lam), 6), int(it.seed))
            i = self.index.get(at)
            if i is None and at in self.retries:
                p = self.retries[at]
                raise ConfigError(
                    f"spectrum.pool: sample {p.key.rsplit('|t', 1)[0]!r} needs try {p.try_index} here (its "
                    f"tries score ≤ the threshold under this experiment's scorer and filter.threshold) and the pool "
                    f"lacks it ({self.why}); a pool cannot be regenerated on import: run with the pool's scorer and "
                    "filter.threshold, or generate the pool (drop spectrum.pool)"
                )
            if i is None:
                raise ConfigError(
                    f"spectrum.pool: no image of source {it.source_id!r} at λ {lam:g} with seed {it.seed}"
                )
            out.append(self.ds[i]["image"])
        return out

    def describe(self) -> dict:
        return self.settings


def import_pool(
    cfg: Config, data: DatasetBundle, plan: list[PlannedImage], pool_dir: Path, cache: Path, progress: bool
) -> dict:
    """Check that ``spectrum.pool`` fits the experiment, then fill ``pool_dir`` from it (unless already complete),
    with its scores when they were made by the same scorer. Returns the source's description (for MLflow).

    With ``spectrum.max_tries`` > 1 the retries run here as in a generation (``retry_low_scores``: the manifest with
    try 0, ``retries.jsonl``, the scores file, ``selected.json``), scored with the pool's scores when its scorer is
    this experiment's, else by this experiment's scorer, and with the pool's images for the tries they ask for: a
    try the pool lacks stops the import in one line (it cannot be regenerated without the generator)."""
    source = resolve_source(cfg.spectrum.pool)
    ds, meta = open_pool(source, cache, progress)
    columns = LOOKUP_COLUMNS + (["try"] if "try" in ds.column_names else [])
    rows = ds.select_columns(columns).to_pandas()
    mismatches = fit_mismatches(cfg, data, plan, meta, rows)
    if mismatches:
        raise ConfigError(
            f"spectrum.pool {cfg.spectrum.pool} does not fit experiment {cfg.name}: {'; '.join(mismatches)}"
        )
    described = source.describe() | {"pool_key": meta.get("pool_key")}
    scores_file = f"scores-{scorer_key(cfg)}.jsonl"
    same_scorer = meta.get("scorer_key") == scorer_key(cfg)
    if not (pool_dir / "complete.json").exists():
        settings = {**meta.get("generator_settings", {}), "imported_from": described}
        why = (
            f"it was made with max_tries {meta.get('max_tries', 1)}, scorer key {meta.get('scorer_key')}, "
            f"filter.threshold {meta.get('filter_threshold')}; here max_tries {cfg.spectrum.max_tries}, scorer key "
            f"{scorer_key(cfg)}, filter.threshold {cfg.filter.threshold}"
        )
        images = PoolImages(ds, rows, settings, planned_retries(cfg, data, plan), why)
        generate_spectrum(images, data, plan, pool_dir, cfg.spectrum.batch_size, progress=progress)
        if cfg.spectrum.max_tries > 1:
            text_scores = imported_text_scores(cfg, data, ds, rows, pool_dir, cache, scores_file, same_scorer, progress)
            retry_low_scores(
                images, data, plan, pool_dir, cfg.spectrum, cfg.filter.threshold, text_scores,
                cfg.spectrum.batch_size, progress=progress,
            )  # fmt: skip
        mark_complete(pool_dir, plan, images.describe())
    if same_scorer:
        import_scores(ds, rows, plan, pool_dir, scores_file)
    else:
        log.info("spectrum.pool: scored by another scorer; scoring it with %s", cfg.scorer.name)
    if pool_key(cfg) != meta.get("pool_key"):
        log.info("spectrum.pool: made under pool key %s, used as %s (it fits)", meta.get("pool_key"), pool_key(cfg))
    return described


def planned_retries(cfg: Config, data: DatasetBundle, plan: list[PlannedImage]) -> dict:
    """(source id, λ, seed) → the retry item of every try a retry here could ask for (none with max_tries 1)."""
    if cfg.spectrum.max_tries == 1:
        return {}
    prompts = class_prompts(cfg.spectrum, data.class_names, sorted({p.label for p in plan}))
    items = [retry_item(p, t, prompts[p.label]) for p in plan for t in range(1, cfg.spectrum.max_tries)]
    return {(str(r.source_id), round(float(r.lam), 6), int(r.seed)): r for r in items}


def imported_text_scores(cfg, data, ds, rows, pool_dir: Path, cache: Path, scores_file: str, same_scorer, progress):
    """``retry_low_scores``' scorer on import: the text scores of the tries so far, taken from the pool when its
    scorer is this experiment's (written to the scores file as scoring would), else (and for any the pool lacks)
    computed by this experiment's scorer."""
    local = cached_text_scores(cfg, data, pool_dir, cache, pick_device(cfg), progress)

    def text_scores(tries: pd.DataFrame) -> dict[str, float]:
        if same_scorer:
            wanted = zip(tries.key, tries.source_id, tries.lam, tries.seed_index, tries["try"])
            copy_scores(ds, rows, [(key, lookup_key(s, lam, k, t)) for key, s, lam, k, t in wanted], pool_dir,
                        scores_file)  # fmt: skip
        return local(tries)

    return text_scores


def import_scores(ds, rows: pd.DataFrame, plan: list[PlannedImage], pool_dir: Path, scores_file: str) -> None:
    """The pool's scores as this experiment's score file (for the planned images not scored yet)."""
    wanted = [(p.key, lookup_key(p.source_id, p.lam, p.seed_index, p.try_index)) for p in plan]
    copy_scores(ds, rows, wanted, pool_dir, scores_file)


def copy_scores(ds, rows: pd.DataFrame, wanted: list[tuple[str, tuple]], pool_dir: Path, scores_file: str) -> None:
    """Append the pool's scores of ``wanted`` (our key, ``lookup_key``) not in the scores file yet; none when any
    of them is missing or not finite (the scorer then makes them)."""
    done = read_scores(pool_dir, scores_file)
    todo = [(key, at) for key, at in wanted if key not in done]
    if not todo:
        return
    index = row_index(rows)
    if any(at not in index for _, at in todo):
        return
    picked = [index[at] for _, at in todo]
    scores = ds.select_columns(["text_score", "image_score"]).to_pandas()
    text, image = scores.text_score.to_numpy()[picked], scores.image_score.to_numpy()[picked]
    if not (np.isfinite(text).all() and np.isfinite(image).all()):
        return  # incomplete scores: let the scorer make them
    append_jsonl(
        pool_dir / scores_file,
        [{"key": key, "text_score": float(t), "image_score": float(s)} for (key, _), t, s in zip(todo, text, image)],
    )
