"""A checkpoint or weights file cut short (a kill, a full disk), garbage, or holding pickled objects: a one-line
error naming the file and what to do, not torch's RuntimeError naming no file."""

import pytest
import torch

from harness.core.errors import DataError
from harness.models.base import load_weights
from harness.phases.fine_tune import Checkpointer


class Pickled:
    """Not a tensor nor a plain type: ``weights_only`` refuses it."""


def truncated(path):
    torch.save({"epoch": 3, "trainer": {"model": {"w": torch.zeros(64, 64)}}}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    "content",
    [lambda p: truncated(p), lambda p: p.write_bytes(b"\x00garbage" * 50), lambda p: torch.save(Pickled(), p)],
    ids=["truncated", "garbage", "pickled-object"],
)
def test_an_unreadable_checkpoint_is_one_line_naming_it(tmp_path, content):
    from harness.core.io import load_torch

    path = tmp_path / "checkpoint.pt"
    content(path)
    with pytest.raises(DataError, match=rf"^{path}: not a readable torch checkpoint \(.*\); do this$") as e:
        load_torch(path, "do this")
    assert "\n" not in str(e.value)


def test_resuming_from_a_truncated_run_checkpoint_says_to_delete_it(tmp_path):
    truncated(tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match=r"checkpoint.pt: not a readable .*delete it to retrain this run"):
        Checkpointer(tmp_path).resume(None, None, None)


def test_truncated_model_weights_name_the_file(tmp_path):
    path = truncated(tmp_path / "weights.pt")
    with pytest.raises(DataError, match=rf"^{path}: not a readable torch checkpoint .*a state dict saved with"):
        load_weights(path)
