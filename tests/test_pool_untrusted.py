"""An imported pool is untrusted input: hostile pools, each built from one real export of the warm digits pool, are
refused in one line naming the file (nothing read outside the pool's folder, nothing fetched, nothing decoded past
the caps), or imported safely (rescored by this experiment's scorer, under a key holding their digest)."""

import io
import json
import os
import shutil
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from workdirs import copy_workdir

from harness.cli import main
from harness.config import load_config
from harness.config.keys import pool_key
from harness.phases.spectrum import read_manifest

SHARD = "data/train-00000-of-00001.parquet"


@pytest.fixture(scope="module")
def export(tiny_prepared, tmp_path_factory) -> Path:
    """The warm digits pool, exported once (in process)."""
    from harness.pool.export import export_pool

    out = tmp_path_factory.mktemp("export") / "pool"
    export_pool(tiny_prepared, out)
    return out


@pytest.fixture(scope="module")
def workdir(tiny_prepared, warm_workdir, tmp_path_factory) -> Path:
    """One copy of the warm workdir for the imports of this module (each pool has its own key, so its own folder)."""
    return copy_workdir(warm_workdir, tmp_path_factory.mktemp("imports") / "wd")


def png(size=(16, 16), mode="L", value=0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, format="PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` × ``height`` (1 bit), with no pixels: what a decompression bomb starts with."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def noise_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def hostile(export: Path, out: Path, change=None, table_change=None) -> Path:
    """A copy of ``export`` whose shard's rows went through ``change(rows)`` (a list of dicts) or whose Arrow table
    went through ``table_change(table)``."""
    shutil.copytree(export, out)
    table = pq.read_table(out / SHARD)
    if change is not None:
        rows = table.to_pylist()
        change(rows)
        table = pa.Table.from_pylist(rows, schema=table.schema)
    if table_change is not None:
        table = table_change(table)
    pq.write_table(table, out / SHARD, store_schema=False)  # as another writer would: the types from parquet's own
    return out


def generate(workdir: Path, pool: Path, *sets: str) -> int:
    argv = ["generate", "-e", "digits_lt_tiny", "--workdir", str(workdir), "--quiet"]
    return main([*argv, "--set", f"spectrum.pool={pool}", *[a for s in sets for a in ("--set", s)]])


def refused(workdir: Path, pool: Path, capsys, *needles: str) -> str:
    assert generate(workdir, pool) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("harness: error: spectrum.pool"), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def set_image(rows, i, data=None, path=None):
    rows[i]["image"] = {"bytes": data, "path": path}


def every_row(key, value):
    def change(rows):
        for r in rows:
            r[key] = value

    return change


def a_file_outside(tmp: Path) -> Path:
    secret = tmp / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(png(value=255))
    return secret


@pytest.mark.parametrize(
    "case", ["a path outside", "a FIFO", "a path inside the pool"], ids=lambda c: c.replace(" ", "-")
)
def test_a_row_that_names_a_path_instead_of_embedding_bytes_is_refused(export, workdir, tmp_path, capsys, case):
    target = a_file_outside(tmp_path)
    if case == "a FIFO":
        target = tmp_path / "fifo.png"
        os.mkfifo(target)
    elif case == "a path inside the pool":
        target = "data/train-00000-of-00001.parquet"
    pool = hostile(export, tmp_path / "pool", lambda rows: set_image(rows, 3, None, str(target)))
    refused(workdir, pool, capsys, SHARD, "has no image bytes (only a path", str(target))


def test_a_url_in_a_row_is_never_fetched(export, workdir, tmp_path, capsys):
    requests = []

    class Beacon(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(png(value=255))

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Beacon)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/beacon.png"
        pool = hostile(export, tmp_path / "pool", lambda rows: set_image(rows, 0, None, url))
        readme = pool / "README.md"
        readme.write_text(readme.read_text().replace("path: data/train-*.parquet", f"path: {url}"))
        refused(workdir, pool, capsys, "README.md", url)
        shutil.copy(export / "README.md", readme)
        refused(workdir, pool, capsys, "has no image bytes (only a path", url)
    finally:
        server.shutdown()
    assert requests == []


@pytest.mark.parametrize("where", ["../../outside.parquet", "ABSOLUTE", "https://example.org/x.parquet"])
def test_card_data_files_out_of_the_folder_are_refused(export, workdir, tmp_path, capsys, where):
    pool = hostile(export, tmp_path / "pool")
    if where == "ABSOLUTE":
        where = str(tmp_path / "black.parquet")
    readme = pool / "README.md"
    readme.write_text(readme.read_text().replace("path: data/train-*.parquet", f"path: {where}"))
    refused(workdir, pool, capsys, str(readme), "outside the pool's data/ folder", where)


def test_a_shard_linked_out_of_the_folder_is_refused(export, workdir, tmp_path, capsys):
    black = hostile(export, tmp_path / "black", lambda rows: [set_image(rows, i, png()) for i in range(len(rows))])
    pool = hostile(export, tmp_path / "pool")
    (pool / SHARD).unlink()
    (pool / SHARD).symlink_to(black / SHARD)
    refused(workdir, pool, capsys, str(pool / SHARD), "outside the pool's folder")


def test_a_fifo_among_the_data_files_is_refused_without_opening_it(export, workdir, tmp_path, capsys):
    pool = hostile(export, tmp_path / "pool")
    os.mkfifo(pool / "data" / "train-00001-of-00001.parquet")
    refused(workdir, pool, capsys, "train-00001-of-00001.parquet is not a regular file")


def test_a_small_shard_of_huge_rows_is_refused_before_it_is_read(export, workdir, tmp_path, capsys):
    """348 prompts of 3 MB each compress to a few hundred KB (one dictionary entry): refused at the first rows read,
    neither written out nor held in memory."""

    def huge_prompts(table):
        prompts = pa.DictionaryArray.from_arrays(pa.array([0] * table.num_rows, pa.int32()), ["a" * 3 * 10**6])
        return table.set_column(table.schema.get_field_index("prompt"), "prompt", prompts)

    pool = hostile(export, tmp_path / "pool", table_change=huge_prompts)
    assert (pool / SHARD).stat().st_size < 2 * 10**6
    before, arrow_before = set((workdir / "cache").rglob("*")), pa.default_memory_pool().max_memory()
    refused(workdir, pool, capsys, SHARD, "bytes, over the 66048 a row of 16×16 L images may")
    assert pa.default_memory_pool().max_memory() <= max(arrow_before, 100 * 10**6)
    grown = [p for p in set((workdir / "cache").rglob("*")) - before if p.is_file() and p.stat().st_size > 10**6]
    assert grown == [] and not (workdir / "cache" / "hf-datasets").exists()


def test_a_pool_over_the_pool_cap_is_refused(export, workdir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("harness.pool.reader.MAX_POOL_BYTES", 10_000)
    refused(workdir, hostile(export, tmp_path / "pool"), capsys, "over the 10000 a pool may")


IMAGES = {  # a row's image → what the one line says
    "64×64 RGB": (lambda: png((64, 64), "RGB"), "is a 64×64 RGB image"),
    "RGBA": (lambda: png(mode="RGBA"), "16×16 RGBA image"),
    "I;16": (lambda: png(mode="I;16"), "16×16 I;16 image"),
    "13000² PNG": (lambda: png_header(13000, 13000), "is a 13000×13000 1 image"),
    "20000² PNG": (lambda: png_header(20000, 20000), "has no PNG image (DecompressionBombError"),
    "garbage": (lambda: b"not a png at all", "has no PNG image (UnidentifiedImageError"),
    "truncated PNG": (lambda: noise_png()[:-100], "its PNG does not decode (OSError: image file is truncated"),
}


@pytest.mark.parametrize("case", list(IMAGES))
def test_an_image_of_another_size_or_mode_or_no_image_is_refused(export, workdir, tmp_path, capsys, case):
    make, says = IMAGES[case]
    pool = hostile(export, tmp_path / "pool", lambda rows: set_image(rows, 5, make(), "x.png"))
    refused(workdir, pool, capsys, SHARD, says)


def test_duplicated_samples_are_refused(export, workdir, tmp_path, capsys):
    def duplicate(rows):
        rows[1] = {**rows[0], "key": rows[1]["key"]}

    refused(workdir, hostile(export, tmp_path / "pool", duplicate), capsys, "2 rows share a (source, λ, seed)")


def test_a_generator_the_metadata_does_not_name_is_refused(export, workdir, tmp_path, capsys):
    pool = hostile(export, tmp_path / "pool", every_row("generator", "sd_img2img"))
    readme = pool / "README.md"
    readme.write_text(readme.read_text().replace("name: tiny_ddpm", "name: sd_img2img"))
    refused(workdir, pool, capsys, "names more than one generator", "the rows says 'sd_img2img'", "'tiny_ddpm'")


def extra_column(table):
    return table.append_column("extra", pa.array(["x"] * table.num_rows))


def string_score(table):
    at = table.schema.get_field_index("text_score")
    return table.set_column(at, "text_score", pa.array(["1.0"] * table.num_rows))


SHARDS = {  # a shard → what the one line says
    "an extra column": (extra_column, "has unknown column(s) extra"),
    "a string score": (string_score, "text_score is string, not double"),
    "truncated": (b"cut", "is no readable parquet file"),
    "random bytes": (b"random", "is no readable parquet file"),
    "empty": (b"", "is no readable parquet file"),
}


@pytest.mark.parametrize("case", list(SHARDS))
def test_a_shard_that_is_no_pool_shard_is_refused(export, workdir, tmp_path, capsys, case):
    change, says = SHARDS[case]
    if isinstance(change, bytes):
        pool = hostile(export, tmp_path / "pool")
        data = (pool / SHARD).read_bytes()
        cut = {b"cut": data[: len(data) // 2], b"random": np.random.default_rng(0).bytes(5000), b"": b""}[change]
        (pool / SHARD).write_bytes(cut)
    else:
        pool = hostile(export, tmp_path / "pool", table_change=change)
    refused(workdir, pool, capsys, SHARD, says)


METAS = {  # harness_pool.json → what the one line says
    "a string class list": ("CLASS_NAMES", "class_names: Input should be a valid list"),
    "a string max_tries": ("MAX_TRIES", "max_tries: Input should be a valid integer"),
}


@pytest.mark.parametrize("case", list(METAS))
def test_pool_metadata_that_is_not_valid_is_refused(export, workdir, tmp_path, capsys, case):
    text, says = METAS[case]
    pool = hostile(export, tmp_path / "pool")
    meta = json.loads((pool / "harness_pool.json").read_text())
    if text == "CLASS_NAMES":
        text = json.dumps(meta | {"class_names": "zero one"})
    elif text == "MAX_TRIES":
        text = json.dumps(meta | {"max_tries": "1"})
    (pool / "harness_pool.json").write_text(text)
    refused(workdir, pool, capsys, "harness_pool.json", says)


def test_a_card_with_bad_yaml_is_refused(export, workdir, tmp_path, capsys):
    pool = hostile(export, tmp_path / "pool")
    (pool / "README.md").write_text("---\nconfigs: [unclosed\n---\n# a card\n")
    refused(workdir, pool, capsys, "README.md has a YAML header that does not parse")


def imported(workdir: Path, pool: Path, *sets: str):
    from harness.phases.pipeline import prepare

    cfg = load_config("digits_lt_tiny", [f"spectrum.pool={pool}", *sets])
    return prepare(cfg, workdir, ["discl_diverse_to_specific"], progress=False)


def black_pool(export: Path, out: Path) -> Path:
    def black(rows):
        for i, r in enumerate(rows):
            set_image(rows, i, png())
            r["text_score"] = 1.0

    return hostile(export, out, black)


def test_black_images_scored_one_by_the_pool_are_rescored_here(export, workdir, tmp_path, caplog):
    pool = black_pool(export, tmp_path / "black")
    prep = imported(workdir, pool)
    assert (prep.pool.pool_text_score == 1.0).all() and prep.pool.keep.sum() < len(prep.pool) // 2
    assert "this experiment's scorer disagrees with the pool's scores" in caplog.text
    trusted = imported(workdir, pool, "spectrum.pool_scores=trust")  # today's behaviour, for those who ask
    assert trusted.pool.keep.all() and trusted.pool_dir != prep.pool_dir


def test_two_pools_in_one_workdir_each_train_on_their_own_images(export, workdir, tmp_path, tiny_prepared):
    clean, black = imported(workdir, export), imported(workdir, black_pool(export, tmp_path / "black"))
    assert len({clean.pool_dir, black.pool_dir, tiny_prepared.pool_dir}) == 3
    assert clean.pool_source["digest"] != black.pool_source["digest"]
    first = read_manifest(black.pool_dir).file.iloc[0]
    assert not np.asarray(Image.open(black.pool_dir / first)).any()
    assert np.asarray(Image.open(clean.pool_dir / first)).any()


def test_a_shard_replaced_with_the_same_mtime_is_read_anew(export, workdir, tmp_path):
    pool = hostile(export, tmp_path / "pool")
    clean = imported(workdir, pool)
    stat = (pool / SHARD).stat()
    shutil.copy(black_pool(export, tmp_path / "black") / SHARD, pool / SHARD)
    os.utime(pool / SHARD, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    black = imported(workdir, pool)
    assert black.pool_source["digest"] != clean.pool_source["digest"] and black.pool_dir != clean.pool_dir
    first = read_manifest(black.pool_dir).file.iloc[0]
    assert not np.asarray(Image.open(black.pool_dir / first)).any()


def test_the_imported_data_is_in_the_pool_key(export, tmp_path):
    def key(*sets):
        return pool_key(load_config("digits_lt_tiny", list(sets)))

    other = hostile(export, tmp_path / "pool", every_row("prompt", "another"))
    keys = [key(), key(f"spectrum.pool={export}"), key(f"spectrum.pool={other}")]
    keys.append(key(f"spectrum.pool={export}", "spectrum.pool_scores=trust"))
    assert len(set(keys)) == 4


def test_a_run_on_an_imported_pool_logs_where_it_came_from_without_the_setting(cached_workdir, monkeypatch):
    """A pool folder imported before the digest was in the key (or copied in): a run whose config does not name
    spectrum.pool still records the import it trains on."""
    from harness.core.io import read_json, write_json
    from harness.runs import runner

    (pool_dir,) = (cached_workdir / "cache" / "pool").iterdir()
    complete = read_json(pool_dir / "complete.json")
    origin = {"source": "someone/pool", "path": "/pools/x", "revision": "abc", "digest": "d1g35t"}
    write_json(pool_dir / "complete.json", complete | {"generator": {**complete["generator"], "imported_from": origin}})
    seen = []

    def run_one(cfg, workdir, prep, method, seed, *rest):
        seen.append(prep.pool_source)
        return {"method": method, "seed": seed, "run_id": None, "cached": False}

    monkeypatch.setattr(runner, "run_one", run_one)
    todo = [("discl_diverse_to_specific", 0, "h", None)]  # (method, seed, config hash, no finished run)
    monkeypatch.setattr(runner, "finished_runs", lambda cfg, wd, methods, seeds, force: todo)
    monkeypatch.setattr(runner, "spectrum_grid_file", lambda prep, folder: None)
    runner.run_experiment(load_config("digits_lt_tiny"), cached_workdir, ["discl_diverse_to_specific"], [0], False)
    assert seen == [origin]


def test_an_image_folder_export_imports_through_the_same_checks(tiny_prepared, workdir, tmp_path):
    from harness.pool.export import export_pool

    export_pool(tiny_prepared, tmp_path / "folder", fmt="imagefolder")
    prep = imported(workdir, tmp_path / "folder")
    assert sorted(prep.pool.key) == sorted(tiny_prepared.pool.key)
    first = read_manifest(prep.pool_dir).file.iloc[0]
    ours, theirs = Image.open(prep.pool_dir / first), Image.open(tiny_prepared.pool_dir / first)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def hub_snapshot(export: Path, hub: Path, outside: Path | None = None) -> str:
    """``export`` as the local Hugging Face cache holds a dataset repo: snapshot files that link into blobs/."""
    repo, revision = hub / "datasets--someone--pool", "0" * 39 + "1"
    for n, path in enumerate(p for p in sorted(export.rglob("*")) if p.is_file()):
        blob, link = repo / "blobs" / f"blob{n}", repo / "snapshots" / revision / path.relative_to(export)
        blob.parent.mkdir(parents=True, exist_ok=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, blob)
        link.symlink_to(os.path.relpath(outside if outside and path.suffix == ".parquet" else blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return "someone/pool"


def test_a_hub_snapshot_imports_and_its_links_must_stay_in_the_repo(export, workdir, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    prep = imported(workdir, hub_snapshot(export, tmp_path / "hub"))
    assert prep.pool_source["revision"] == "0" * 39 + "1" and prep.pool.keep.any()
    black = black_pool(export, tmp_path / "black") / SHARD
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub2"))
    refused(workdir, hub_snapshot(export, tmp_path / "hub2", outside=black), capsys, "outside the pool's folder")
