"""A complete pool whose manifest got a torn, garbage or ``{}`` line makes those images again (from the image
store) instead of shrinking; a truncated checkpoint is one line naming its file."""

import json

import pytest
import torch

from harness.config import load_config
from harness.core.errors import DataError
from harness.phases.pipeline import prepare
from harness.phases.spectrum import read_manifest

METHODS = ["discl_diverse_to_specific"]


@pytest.mark.parametrize("bad", ['{"key": "torn', "garbage \x00 line", "{}", "[]", '{"key": 5}'])
def test_a_bad_manifest_line_in_a_complete_pool_is_made_again(cached_workdir, tiny_prepared, bad):
    (pool_dir,) = (cached_workdir / "cache" / "pool").iterdir()
    manifest = pool_dir / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    lost = lines[len(lines) // 2]
    lines[len(lines) // 2] = bad
    manifest.write_text("\n".join(lines) + "\n")
    assert (pool_dir / "complete.json").exists() and len(read_manifest(pool_dir)) == len(tiny_prepared.pool) - 1
    prep = prepare(load_config("digits_lt_tiny"), cached_workdir, METHODS, progress=False)
    assert sorted(prep.pool.key) == sorted(tiny_prepared.pool.key)
    assert (pool_dir / read_manifest(pool_dir).set_index("key").file[json.loads(lost)["key"]]).is_file()


def test_a_truncated_checkpoint_is_one_line_naming_it(tmp_path):
    from harness.core.io import load_torch
    from harness.phases.fine_tune import Checkpointer

    path = tmp_path / "checkpoint.pt"
    torch.save({"trainer": {"step": 1}, "state": {}}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError) as err:
        Checkpointer(tmp_path).resume(None, None, None)
    assert str(path) in str(err.value) and "delete it" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="checkpoint.pt: not a readable torch checkpoint"):
        load_torch(path, "delete it")
