"""Share a spectrum: ``harness pool export`` writes a pool as a Hugging Face dataset; ``spectrum.pool`` runs on it
in a fresh workdir without loading a generator, with the same pool key, pixels and metrics; a pool that does not
fit the experiment is refused in one line; exporting stays within a memory bound."""

import json
import shutil
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from quick import DIGITS_GENERATION, IMAGENET_LT, as_sets
from workdirs import copy_workdir

from harness.cli import main
from harness.config import ConfigError, load_config
from harness.phases.pipeline import pool_key, prepare
from harness.phases.spectrum import RETRIES, SELECTED, read_all_tries, read_manifest
from harness.runs.runner import run_experiment

METHOD = "discl_diverse_to_specific"
QUICK = as_sets([*DIGITS_GENERATION, "train.epochs=2", "train.curriculum_epochs=2"])
SETS = QUICK[1::2]
COLUMNS = {
    "image": "Image",
    "label": "ClassLabel",
    "class_name": "string",
    "source_id": "string",
    "lam": "float64",
    "seed_index": "int32",
    "seed": "int64",
    "try": "int32",
    "selected": "bool",
    "prompt": "string",
    "text_score": "float64",
    "image_score": "float64",
    "keep": "bool",
    "generator": "string",
    "generator_model": "string",
    "generator_params": "string",
    "scheduler": "string",
    "steps": "int32",
    "guidance_scale": "float64",
    "width": "int32",
    "height": "int32",
}


def pool_of(workdir: Path) -> Path:
    (pool,) = (workdir / "cache" / "pool").iterdir()
    return pool


def pixels(pool_dir: Path) -> dict[str, np.ndarray]:
    return {r.key: np.asarray(Image.open(pool_dir / r.file)) for r in read_manifest(pool_dir).itertuples()}


def metrics_of(results: pd.DataFrame) -> dict:
    (row,) = results.to_dict("records")
    return {k: v for k, v in row.items() if k.startswith("test")}


def no_generator(monkeypatch, cls):
    def fail(*args, **kwargs):
        raise AssertionError("a generator was loaded")

    monkeypatch.setattr(cls, "from_config", classmethod(fail))
    monkeypatch.setattr(cls, "__init__", fail)


def feature_type(feature) -> str:
    return getattr(feature, "dtype", None) if type(feature).__name__ == "Value" else type(feature).__name__


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits_lt_tiny (quick generation) run once, and its pool exported with the CLI."""
    root = tmp_path_factory.mktemp("digits")
    cfg = load_config("digits_lt_tiny", SETS)
    results = run_experiment(cfg, root / "wd", [METHOD], [0], progress=False)
    argv = ["pool", "export", "-e", "digits_lt_tiny", "--workdir", str(root / "wd"), "--out", str(root / "export")]
    assert main([*argv, *QUICK, "--quiet"]) == 0
    return SimpleNamespace(root=root, cfg=cfg, results=results, out=root / "export", pool=pool_of(root / "wd"))


@pytest.mark.slow  # shares the digits fixture (a run and an export, ~2 min on 2 loaded cores)
def test_load_dataset_gives_typed_features_and_one_row_per_generated_image(digits):
    import datasets

    ds = datasets.load_dataset(str(digits.out), split="train", cache_dir=str(digits.root / "hf"))
    manifest = read_manifest(digits.pool)
    assert len(ds) == len(manifest) > 0
    assert {k: feature_type(ds.features[k]) for k in COLUMNS} == COLUMNS
    assert ds.features["label"].names == json.loads((digits.out / "harness_pool.json").read_text())["class_names"]
    assert sorted(ds["key"]) == sorted(manifest.key)
    row = ds[0]
    assert np.array_equal(
        np.asarray(row["image"]), np.asarray(Image.open(digits.pool / manifest.set_index("key").file[row["key"]]))
    )
    assert all(f.stat().st_size <= 500 * 10**6 for f in (digits.out / "data").iterdir())
    from huggingface_hub import DatasetCard

    meta = DatasetCard.load(digits.out / "README.md").data  # the Hub's YAML header, as the Hub reads it
    assert (meta.license, meta.task_categories, meta.size_categories) == ("other", ["image-classification"], ["n<1K"])
    assert meta.configs[0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    assert [f["name"] for f in meta.dataset_info["features"]] == list(ds.features)
    card = (digits.out / "README.md").read_text()
    for needle in (
        digits.pool.name,
        "harness generate --experiment digits_lt_tiny --set base.epochs=1",
        "| 0.5 |",
        "generator:",
    ):
        assert needle in card, needle
    assert "inherit its terms" in card


@pytest.mark.slow  # shares the digits fixture (a run and an export, ~2 min on 2 loaded cores)
def test_round_trip_digits_same_pool_key_pixels_and_metrics_without_a_generator(digits, tmp_path, monkeypatch):
    from harness.generators.tiny_ddpm import TinyDDPM

    no_generator(monkeypatch, TinyDDPM)
    # score_pool writes the score rows it makes: none, when the pool's scores are used
    monkeypatch.setattr("harness.phases.filter.append_jsonl", lambda *a: pytest.fail("the pool's scores were not used"))
    cfg = load_config("digits_lt_tiny", [*SETS, f"spectrum.pool={digits.out}", "spectrum.pool_scores=trust"])
    assert pool_key(cfg) != pool_key(digits.cfg) == digits.pool.name  # the imported files' digest is in the key
    results = run_experiment(cfg, tmp_path / "fresh", [METHOD], [0], progress=False)
    assert metrics_of(results) == metrics_of(digits.results)
    imported = pool_of(tmp_path / "fresh")
    assert imported.name == pool_key(cfg)
    ours, theirs = pixels(imported), pixels(digits.pool)
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert not (tmp_path / "fresh" / "cache" / "generator").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}")
    run = client.get_run(results.run_id.iloc[0])
    (pool_input,) = [d for d in run.inputs.dataset_inputs if d.dataset.name == "synthetic_pool"]
    meta = json.loads((digits.out / "harness_pool.json").read_text())
    assert str(digits.out.resolve()) in pool_input.dataset.source
    profile = json.loads(pool_input.dataset.profile)
    assert profile["imported_from"]["digest"] in pool_input.dataset.digest and meta["pool_key"] == digits.pool.name


@pytest.mark.slow
@pytest.mark.parametrize(
    "sets, named",
    [
        (
            ["spectrum.levels=[0.0, 0.3]", "curriculum.levels=[0.0, 0.3]", "curriculum.adaptive_levels=[0.3]"],
            ["levels: the pool lacks λ 0.3"],
        ),
        (["spectrum.seeds=3"], ["seeds: the experiment asks 3"]),
        (["generator.params.train_steps=4"], ["generator: generator.params.train_steps is 3 in the pool, 4 here"]),
        (["spectrum.prompt=a drawing of the digit {name}"], ["prompts: "]),
        (
            ["spectrum.seeds=3", "generator.params.train_steps=4", "spectrum.steps=5"],
            ["seeds:", "train_steps", "spectrum.steps is 4"],
        ),
    ],
)
def test_a_pool_that_does_not_fit_is_refused_in_one_line(digits, monkeypatch, sets, named):
    from harness.generators.tiny_ddpm import TinyDDPM

    no_generator(monkeypatch, TinyDDPM)
    cfg = load_config("digits_lt_tiny", [*SETS, *sets, f"spectrum.pool={digits.out}"])
    with pytest.raises(ConfigError) as err:
        prepare(cfg, digits.root / "wd", [METHOD], progress=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"spectrum.pool {digits.out} does not fit")
    for needle in named:
        assert needle in msg, (needle, msg)


@pytest.mark.slow  # shares the digits fixture (a run and an export, ~2 min on 2 loaded cores)
def test_other_classes_are_named(digits, tmp_path, monkeypatch):
    other = tmp_path / "other"
    shutil.copytree(digits.out, other)
    meta = json.loads((other / "harness_pool.json").read_text())
    meta["class_names"][3] = "a cat"
    (other / "harness_pool.json").write_text(json.dumps(meta))
    cfg = load_config("digits_lt_tiny", [*SETS, f"spectrum.pool={other}"])
    with pytest.raises(ConfigError, match=r"classes: 1 names differ, e.g. label 3 is 'a cat' in the pool"):
        prepare(cfg, digits.root / "wd", [METHOD], progress=False)


@pytest.mark.slow  # shares the digits fixture (a run and an export, ~2 min on 2 loaded cores)
def test_a_pool_with_more_levels_and_seeds_fits(digits, tmp_path, monkeypatch):
    import harness.phases.filter
    from harness.generators.tiny_ddpm import TinyDDPM

    no_generator(monkeypatch, TinyDDPM)
    scored, append = [], harness.phases.filter.append_jsonl
    monkeypatch.setattr(
        "harness.phases.filter.append_jsonl", lambda p, rows: scored.append(len(rows)) or append(p, rows)
    )
    wd = tmp_path / "wd"
    shutil.copytree(digits.root / "wd" / "cache" / "base", wd / "cache" / "base")  # the base model, not the pool
    levels = ["spectrum.levels=[0.5]", "curriculum.levels=[0.5]", "curriculum.adaptive_levels=[0.5]"]
    other_scorer = "scorer.params.epochs=2"  # the pool's scores are another scorer's: they are recomputed
    cfg = load_config(
        "digits_lt_tiny", [*SETS, *levels, "spectrum.seeds=1", other_scorer, f"spectrum.pool={digits.out}"]
    )
    prep = prepare(cfg, wd, [METHOD], progress=False)
    assert sum(scored) == len(prep.pool)
    full = read_manifest(digits.pool)
    sub = full[(full.lam == 0.5) & (full.seed_index == 0)]
    assert sorted(prep.pool.key) == sorted(sub.key) and prep.pool_dir.name == pool_key(cfg) != digits.pool.name
    ours, theirs = pixels(prep.pool_dir), pixels(digits.pool)
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert prep.pool_source["source"] == str(digits.out)


@pytest.mark.slow  # shares the digits fixture (a run and an export, ~2 min on 2 loaded cores)
def test_imagefolder_export_imports_through_the_same_reader(digits, tmp_path, monkeypatch):
    from harness.generators.tiny_ddpm import TinyDDPM

    out = tmp_path / "folder"
    argv = ["pool", "export", "-e", "digits_lt_tiny", "--workdir", str(digits.root / "wd"), "--out", str(out)]
    assert main([*argv, *QUICK, "--format", "imagefolder", "--quiet"]) == 0
    assert (out / "data" / "train" / "metadata.jsonl").is_file()
    no_generator(monkeypatch, TinyDDPM)
    wd = tmp_path / "wd"
    shutil.copytree(digits.root / "wd" / "cache" / "base", wd / "cache" / "base")
    prep = prepare(load_config("digits_lt_tiny", [*SETS, f"spectrum.pool={out}"]), wd, [METHOD], progress=False)
    ours, theirs = pixels(prep.pool_dir), pixels(digits.pool)
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_spectrum_pool_is_in_the_pool_key_and_must_name_something():
    plain = load_config("digits_lt_tiny")
    assert pool_key(load_config("digits_lt_tiny", ["spectrum.pool=org/pool"])) != pool_key(plain)
    with pytest.raises(ConfigError, match="spectrum.pool"):
        load_config("digits_lt_tiny", ["spectrum.pool="])


def test_a_dataset_repo_in_the_local_hub_cache_is_found_by_id(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from harness.pool.source import resolve_source

    revision = "0" * 39 + "2"
    repo = tmp_path / "hub" / "datasets--someone--digits-pool"
    snapshot = repo / "snapshots" / revision
    (snapshot / "data").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (snapshot / "harness_pool.json").write_text("{}")
    (snapshot / "data" / "train-00000-of-00001.parquet").write_bytes(b"shard")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    source = resolve_source("someone/digits-pool")
    assert source.path == snapshot.resolve() and source.revision == revision
    digest = source.digest
    (snapshot / "data" / "train-00000-of-00001.parquet").write_bytes(b"another shard")
    assert resolve_source("someone/digits-pool").digest != digest  # the digest is of the files' contents


def test_an_unknown_pool_is_one_line(tmp_path):
    from harness.pool.source import resolve_source

    with pytest.raises(ConfigError, match="not a folder, nor a Hub dataset id"):
        resolve_source(str(tmp_path / "nowhere" / "x" / "y"))
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        resolve_source("someone/no-such-pool")


@pytest.mark.parametrize("taken", ["a file", "a folder with a file"])
def test_export_to_an_out_that_holds_something_is_one_line_in_the_cli(tmp_path, tiny_cfg, monkeypatch, capsys, taken):
    from harness.core.errors import HarnessError
    from harness.pool.export import export_pool

    prep = noise_pool(tmp_path / "pool", tiny_cfg, 4)
    out = tmp_path / "out"
    if taken == "a file":
        out.write_text("x")
    else:
        out.mkdir()
        (out / "x").write_text("x")
    with pytest.raises(HarnessError) as err:
        export_pool(prep, out)
    assert isinstance(err.value, FileExistsError) and "\n" not in str(err.value)
    assert "give a new folder" in str(err.value)
    monkeypatch.setattr("harness.phases.pipeline.prepare", lambda *a, **k: prep)
    argv = ["pool", "export", "-e", "digits_lt_tiny", "--workdir", str(tmp_path / "wd"), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"harness: error: pool export --out: {out} exists and is not an empty folder")
    assert export_pool(prep, tmp_path / "new").rows == 4  # a new folder is fine


META = {"format": "parquet", "pool_key": "k", "scorer_key": "s", "filter_threshold": 0.5, "max_tries": 1,
        "class_names": ["0"], "identity": {}, "generator_settings": {}, "images": 1}  # fmt: skip
NOT_AN_EXPORT = {  # what a folder holds besides harness_pool.json → what the one-line error says
    "no data files": ({}, "has no data files under data/"),
    "meta not JSON": ({"harness_pool.json": "{not json", "data/x.parquet": "rows"}, "harness_pool.json is not JSON"),
    "meta not an object": ({"harness_pool.json": "[]", "data/x.parquet": "rows"}, "holds a list, not a JSON object"),
    "corrupt shard": ({"data/train-00000-of-00001.parquet": "junk"}, "is no readable parquet file (ArrowInvalid"),
    "missing columns": ({"data/train-00000-of-00001.parquet": "rows"}, "lacks the column(s) image, label,"),
}


@pytest.mark.parametrize("case", list(NOT_AN_EXPORT))
def test_a_pool_folder_that_is_no_export_is_one_line(tmp_path, case):
    from harness.pool.meta import read_meta
    from harness.pool.reader import Limits, read_pool
    from harness.pool.source import resolve_source

    files, says = NOT_AN_EXPORT[case]
    folder = tmp_path / "pool"
    (folder / "data").mkdir(parents=True)
    (folder / "harness_pool.json").write_text(json.dumps(META))
    for name, text in files.items():
        if text == "rows":  # a parquet dataset, though not a pool's
            pd.DataFrame({"source_id": ["s0"], "lam": [0.5], "seed": [1]}).to_parquet(folder / name)
        else:
            (folder / name).write_text(text)
    with pytest.raises(ConfigError) as err:
        meta = read_meta(resolve_source(str(folder)).path)
        read_pool(resolve_source(str(folder)), meta.class_names, "parquet", Limits((16, 16), "L", 10**6, 10**9),
                  tmp_path / "stage")  # fmt: skip
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("spectrum.pool: ") and says in msg, msg
    assert msg.endswith("export it again with `harness pool export` (or fetch it again)")


def test_a_pool_in_an_unknown_users_home_is_one_line():
    from harness.pool.source import resolve_source

    with pytest.raises(ConfigError, match="the home of an unknown user"):
        resolve_source("~no-such-user-here/pool")


def noise_pool(pool_dir: Path, cfg, n: int) -> SimpleNamespace:
    """A prepared experiment (as ``export_pool`` reads it) whose pool is ``n`` images of 48×48 noise at λ 0.5."""
    rng, rows = np.random.default_rng(0), []
    (pool_dir / "images").mkdir(parents=True)
    for i in range(n):
        file = f"images/{i}.png"
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(pool_dir / file)
        rows.append(
            {"key": f"s{i}|0.5000|0", "source_index": i, "source_id": f"s{i}", "label": i % 10, "lam": 0.5,
             "seed_index": 0, "seed": i, "try": i % 2, "prompt": "p", "file": file, "text_score": 0.5,
             "image_score": 0.5, "keep": True}
        )  # fmt: skip
    names = [str(c) for c in range(10)]
    return SimpleNamespace(cfg=cfg, pool=pd.DataFrame(rows), pool_dir=pool_dir, data=SimpleNamespace(class_names=names))


def test_export_of_ten_times_the_tiny_pool_is_memory_bounded(tmp_path, tiny_cfg):
    """3,480 images (10× digits_lt_tiny's pool of 348) of 48×48 noise, ~24 MB of PNG: the export holds about one row
    group of them at a time (Python and Arrow memory)."""
    import datasets  # noqa: F401 (imported before memory is traced)
    import huggingface_hub  # noqa: F401
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.pool.export import export_pool

    prep = noise_pool(tmp_path / "pool", tiny_cfg, 3480)
    total = sum(f.stat().st_size for f in (prep.pool_dir / "images").iterdir())
    arrow_before = pa.default_memory_pool().max_memory()
    tracemalloc.start()
    done = export_pool(prep, tmp_path / "out", max_shard_bytes=2 * 10**6, rows_per_group=32)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrow_peak = pa.default_memory_pool().max_memory()  # a high-water mark: at most the process's largest so far
    print(
        f"exported {total / 1e6:.1f} MB of PNG; Python peak {peak / 1e6:.2f} MB, Arrow peak {arrow_peak / 1e6:.2f} MB"
    )
    assert total > 20 * 10**6 and peak < total / 10, (peak, total)
    assert arrow_peak <= max(arrow_before, total / 10), (arrow_peak, arrow_before, total)  # earlier tests' mark
    assert len(done.files) >= 8 and all(f.stat().st_size <= 2 * 10**6 for f in done.files)
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in done.files) == 3480
    assert pq.read_table(done.files[0], columns=["try"]).column("try").to_pylist()[:2] == [0, 1]  # the manifest's


def rewrite_rows(export: Path, out: Path, change) -> None:
    """A copy of an exported (parquet) pool with ``change(frame)`` applied to its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(export, out)
    for f in sorted((out / "data").glob("*.parquet")):
        table = pq.read_table(f)
        frame = table.to_pandas()
        change(frame)
        pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), f)


def pool_files(pool_dir: Path) -> dict:
    """What a pool's retries leave: the manifest, the retries, the kept tries and the scores (as sets of rows)."""

    def rows(name: str) -> list[str]:
        return sorted(json.dumps(json.loads(x), sort_keys=True) for x in (pool_dir / name).read_text().splitlines())

    (scores,) = pool_dir.glob("scores-*.jsonl")
    return {
        "manifest": rows("manifest.jsonl"),
        "retries": rows(RETRIES),
        "scores": (scores.name, rows(scores.name)),
        "selected": json.loads((pool_dir / SELECTED).read_text()),
    }


@pytest.mark.slow
def test_round_trip_imagenet_lt_tiny_sdxl_with_retries(imagenet_lt_tiny_runs, tmp_path, monkeypatch):
    """imagenet_lt_discl_tiny on fake ImageNet-LT with the tiny SDXL img2img and tiny CLIP, with its own
    spectrum.max_tries (5, the authors' regeneration): export every try, then a run on the imported pool in a fresh
    workdir loads no pipeline and rebuilds the same retries, kept tries, pool key, pixels and test metrics. A retry
    whose prompt or seed differs, and a threshold that asks for a try the pool lacks, are refused in one line."""
    from harness.generators.sd_img2img import SDImg2Img
    from harness.pool.export import export_pool

    data, made = imagenet_lt_tiny_runs  # the session's cold run of this config: its run is reused, its pool loaded
    sets = [f"data.root={data}", *IMAGENET_LT]
    cfg = load_config("imagenet_lt_discl_tiny", sets)
    assert cfg.spectrum.max_tries == 5  # the experiment's own (the paper's)
    first = run_experiment(cfg, copy_workdir(made, tmp_path / "wd"), [METHOD], [0], progress=False)
    prep = prepare(cfg, tmp_path / "wd", [METHOD], progress=False)
    tries = read_all_tries(prep.pool_dir)
    assert (prep.pool_dir / RETRIES).read_text().strip() and (tries["try"] > 0).any()  # some samples were retried
    retried_samples = tries[tries["try"] > 0].drop_duplicates(["source_id", "lam", "seed_index"])
    n_kept = int(prep.pool.keep.sum())
    print(f"{len(prep.pool)} samples, {len(tries)} tries, {len(retried_samples)} samples retried, {n_kept} kept")
    done = export_pool(prep, tmp_path / "export")
    assert done.rows == len(tries) > len(prep.pool) > 0  # every try, not only the kept ones
    meta = json.loads((tmp_path / "export" / "harness_pool.json").read_text())
    assert meta["generator_settings"]["pipeline"] and meta["pool_key"] == prep.pool_dir.name
    assert meta["max_tries"] == 5 and "Up to 5 tries per sample" in (tmp_path / "export" / "README.md").read_text()
    import pyarrow.parquet as pq

    exported = pd.concat(pq.read_table(f).to_pandas() for f in done.files).set_index("key")
    assert sorted(exported.index) == sorted(tries.key)
    kept = set(json.loads((prep.pool_dir / SELECTED).read_text())["keys"])
    assert set(exported.index[exported.selected]) == kept and not exported.keep[~exported.selected].any()
    retried = tries[tries["try"] > 0].iloc[0]
    row = exported.loc[retried.key]
    assert (row["try"], row.seed, row.prompt) == (retried["try"], retried.seed, retried.prompt)

    no_generator(monkeypatch, SDImg2Img)
    trust = "spectrum.pool_scores=trust"  # the pool's scores decide its retries, as they did where it was made
    imported = load_config("imagenet_lt_discl_tiny", [*sets, f"spectrum.pool={tmp_path / 'export'}", trust])
    assert pool_key(imported) != prep.pool_dir.name  # the imported files' digest is in the key
    second = run_experiment(imported, tmp_path / "fresh", [METHOD], [0], progress=False)
    assert metrics_of(second) == metrics_of(first)
    pool = pool_of(tmp_path / "fresh")
    assert pool.name == pool_key(imported)
    assert pool_files(pool) == pool_files(prep.pool_dir)
    ours, theirs = pixels(pool), pixels(prep.pool_dir)
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert ours.keys() == kept

    def refused(export: Path, *more: str) -> str:
        cfg = load_config("imagenet_lt_discl_tiny", [*sets, *more, f"spectrum.pool={export}", trust])
        with pytest.raises(ConfigError) as err:
            prepare(cfg, tmp_path / "refused", [METHOD], progress=False)
        msg = str(err.value)
        assert "\n" not in msg
        return msg

    other = refused(tmp_path / "export", "spectrum.guidance_scale=3")
    assert "generator: spectrum.guidance_scale is 10.0 in the pool, 3.0 here" in other

    def change_retry(frame: pd.DataFrame) -> None:
        at = frame.index[frame.key == retried.key]
        frame.loc[at, "prompt"] = "a photo of something else"
        frame.loc[at, "seed"] = 7

    rewrite_rows(tmp_path / "export", tmp_path / "changed", change_retry)
    msg = refused(tmp_path / "changed")
    assert msg.startswith(f"spectrum.pool {tmp_path / 'changed'} does not fit")
    assert f"retry prompts: 1 differ, e.g. {retried.key!r} (try {retried['try']}) is 'a photo of something else'" in msg
    assert (
        f"retry seeds: 1 differ, e.g. {retried.key!r} (try {retried['try']}) has 7 in the pool, {retried.seed}" in msg
    )

    # a higher threshold retries samples the pool kept at an earlier try: those tries cannot be imported
    lacking = refused(tmp_path / "export", "filter.threshold=0.99")
    assert "needs try" in lacking and "the pool lacks it" in lacking and "max_tries 5" in lacking
    # a lower threshold asks for fewer tries: the pool's try 0 of every sample, no retries
    lower = load_config(
        "imagenet_lt_discl_tiny", [*sets, "filter.threshold=-1", f"spectrum.pool={tmp_path / 'export'}", trust]
    )
    fewer = prepare(lower, tmp_path / "refused", [METHOD], progress=False)
    assert sorted(fewer.pool.key) == sorted(tries.key[tries["try"] == 0]) and fewer.pool.keep.all()
    assert not (fewer.pool_dir / RETRIES).exists() or not (fewer.pool_dir / RETRIES).read_text().strip()


def test_a_pool_made_with_retries_is_accepted_at_load(tmp_path):
    """ImageNet-LT's max_tries 5 with spectrum.pool: the import rebuilds the retries (it was refused before)."""
    cfg = load_config("imagenet_lt_discl_tiny", [f"spectrum.pool={tmp_path}"])
    assert cfg.spectrum.max_tries == 5 and cfg.spectrum.pool == str(tmp_path)
