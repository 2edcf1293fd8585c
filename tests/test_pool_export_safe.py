"""`harness pool export` is safe to run twice at once (a private folder per process, a lock on --out, an atomic
rename: one wins, the other says so in one line, nothing is left behind), refuses every --out it cannot use in one
line before any work, and never removes anything the user owns."""

import os
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest
from test_pool_share import noise_pool

from harness.cli import main
from harness.core.errors import HarnessError
from harness.pool.export import export_pool

EXPORTER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd
    from PIL import Image

    from harness.config import load_config
    from harness.core.errors import HarnessError
    from harness.pool.export import export_pool

    pool_dir, out, go = map(Path, sys.argv[1:4])
    (pool_dir / "images").mkdir(parents=True)
    rows, rng = [], np.random.default_rng(0)
    for i in range(120):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(pool_dir / f"images/{i}.png")
        rows.append({"key": f"s{i}|0.5000|0", "source_index": i, "source_id": f"s{i}", "label": i % 10, "lam": 0.5,
                     "seed_index": 0, "seed": i, "try": 0, "prompt": "p", "file": f"images/{i}.png",
                     "text_score": 0.5, "image_score": 0.5, "keep": True})
    names = [str(c) for c in range(10)]
    prep = SimpleNamespace(cfg=load_config("digits_lt_tiny"), pool=pd.DataFrame(rows), pool_dir=pool_dir,
                           data=SimpleNamespace(class_names=names))
    while not go.exists():
        time.sleep(0.005)
    try:
        print(export_pool(prep, out, rows_per_group=8).rows)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        sys.exit(2)
    """
)


@pytest.mark.slow  # two processes that import the harness (~8 s on 2 loaded cores)
def test_two_exports_to_one_out_at_once_one_wins_the_other_says_so(tmp_path):
    script = tmp_path / "exporter.py"
    script.write_text(EXPORTER)
    out, go = tmp_path / "shared" / "pool", tmp_path / "go"
    mine = tmp_path / "shared" / ".pool.partial"  # a folder of the user's that looks like an old staging folder
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"pool{i}"), str(out), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"pool{i}" / "images" / "119.png").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()
    results = sorted((p.wait(120), *p.communicate()) for p in procs)
    (won, lost) = results
    assert won[0] == 0 and won[1].strip() == "120", won
    assert lost[0] == 2 and lost[2].strip().count("\n") == 0, lost
    assert f"pool export --out: {out} exists and is not an empty folder" in lost[2]
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")) == [".pool.partial", "pool"]
    assert (mine / "notes.txt").read_text() == "mine"
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in (out / "data").iterdir()) == 120
    assert (out / "README.md").is_file() and (out / "harness_pool.json").is_file()


def unusable_out(kind: str, tmp_path):
    if kind == "a file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file"
    if kind == "a folder that holds a file":
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        return tmp_path / "full"
    if kind == "a link":
        (tmp_path / "empty").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "empty")
        return tmp_path / "link"
    if kind == "a folder under a file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "pool"
    return {".": "." if kind == "." else "..", "..": ".."}[kind]


SAYS = {
    "a file": "exists and is not an empty folder",
    "a folder that holds a file": "exists and is not an empty folder",
    "a link": "is a symbolic link",
    "a folder under a file": "is a file, not a folder",
    ".": "names no new folder",
    "..": "names no new folder",
}


@pytest.mark.parametrize("kind", list(SAYS))
def test_an_unusable_out_is_one_line_before_any_work(tmp_path, tiny_cfg, monkeypatch, capsys, kind):
    prep = noise_pool(tmp_path / "pool", tiny_cfg, 4)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # `.` and `..`: an empty folder and its parent
    out = unusable_out(kind, tmp_path)
    monkeypatch.setattr("harness.pool.export.export_rows", lambda *a, **k: pytest.fail("the export began"))
    with pytest.raises(HarnessError) as err:
        export_pool(prep, out)
    assert "\n" not in str(err.value) and SAYS[kind] in str(err.value)
    monkeypatch.setattr("harness.phases.pipeline.prepare", lambda *a, **k: pytest.fail("the pool was prepared"))
    argv = ["pool", "export", "-e", "digits_lt_tiny", "--workdir", str(tmp_path / "wd"), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("harness: error: pool export --out: ") and SAYS[kind] in line
    assert not [p for p in tmp_path.rglob("*.partial")]
    if kind == "a link":
        assert (tmp_path / "link").is_symlink() and not any((tmp_path / "empty").iterdir())


def test_an_export_leaves_the_users_folders_that_look_like_staging_alone(tmp_path, tiny_cfg):
    prep = noise_pool(tmp_path / "pool", tiny_cfg, 4)
    mine = tmp_path / ".out.partial"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert export_pool(prep, tmp_path / "out").rows == 4
    assert (mine / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [".out.partial", "out", "pool"]
