"""``harness status`` on a workdir others can write to: a launcher record that is not one (invalid JSON, wrong
fields, a job id that is not a job id) is left out with a warning naming it, and a record pointing at a result file
never makes status unpickle it."""

import json
import logging
import os
import pickle
from pathlib import Path

import pytest

from harness.config import load_config
from harness.launch.records import read_records
from harness.launch.status import shared_phases_line, submitted_jobs


class Crafted:
    """A result file a crafted record points at: unpickling it writes ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "ran"))


GOOD = {
    "launcher": "slurm",
    "experiment": "digits_lt_tiny",
    "folder": "",
    "phases": [{"name": "base", "job_id": "21"}],
    "runs": [{"method": "plain", "seed": 0, "config_hash": "abc", "job_id": "22_0"}],
}
BAD = {
    "a-invalid.json": "{not json",
    "b-list.json": "[]",
    "c-wrong-type.json": json.dumps({**GOOD, "runs": [{"method": "plain", "seed": "zero", "config_hash": "abc"}]}),
    "d-job-id.json": json.dumps({**GOOD, "runs": [{**GOOD["runs"][0], "job_id": "../../../x"}]}),
    "e-launcher.json": json.dumps({**GOOD, "launcher": "ssh"}),
    "f-bytes.json": b"\xff\xfe\x00",
}


@pytest.fixture
def records(tmp_path):
    folder = tmp_path / "launcher" / "digits_lt_tiny"
    folder.mkdir(parents=True)
    for name, text in BAD.items():
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    (folder / "z-good.json").write_text(json.dumps(GOOD))
    return tmp_path


def test_files_that_are_not_records_are_left_out_with_a_warning(records, caplog):
    caplog.set_level(logging.WARNING)
    assert [r["runs"][0]["job_id"] for r in read_records(records, "digits_lt_tiny")] == ["22_0"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(BAD) and all("not a launcher record, left out" in w for w in warned)
    assert all(any(name in w for w in warned) for name in BAD), "each warning names its file"
    assert any("runs[0].job_id" in w for w in warned) and all("\n" not in w for w in warned)


def test_status_reads_what_is_left(records, monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\nprintf '21|RUNNING\\n'\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = load_config("digits_lt_tiny")
    assert submitted_jobs(records, cfg) == {("plain", 0, "abc"): ("slurm", "22_0", "")}
    assert shared_phases_line(records, cfg) == "base 21: running"


def empty_queue(bin_dir, monkeypatch) -> None:
    """An ``squeue`` on the PATH that lists no job (every job has left the queue)."""
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_record_pointing_at_a_result_file_never_runs_it(tmp_path, monkeypatch):
    bin_dir, folder, ran = tmp_path / "bin", tmp_path / "elsewhere", tmp_path / "ran"
    empty_queue(bin_dir, monkeypatch)
    folder.mkdir()
    for job in ("21", "22_0"):
        (folder / f"{job}_0_result.pkl").write_bytes(pickle.dumps(("success", Crafted(ran))))
    (folder / "22_0_result.pkl").write_bytes(pickle.dumps(("success", Crafted(ran))))
    record = {**GOOD, "folder": str(folder)}
    (tmp_path / "launcher" / "digits_lt_tiny").mkdir(parents=True)
    (tmp_path / "launcher" / "digits_lt_tiny" / "x.json").write_text(json.dumps(record))
    cfg = load_config("digits_lt_tiny")
    from harness.launch.status import queue_states

    assert queue_states(list(submitted_jobs(tmp_path, cfg).values())) == {"22_0": "ended"}
    assert shared_phases_line(tmp_path, cfg) == "base 21: ended"
    assert not ran.exists(), "a crafted result file ran code in harness status"


def test_waiting_on_jobs_reads_their_outcome_without_unpickling(tmp_path, monkeypatch):
    from harness.launch.job_state import job_states

    bin_dir, folder, ran = tmp_path / "bin", tmp_path / "logs", tmp_path / "ran"
    empty_queue(bin_dir, monkeypatch)
    folder.mkdir()
    (folder / "31_0_result.pkl").write_bytes(pickle.dumps(("success", Crafted(ran))))
    (folder / "32_0_result.pkl").write_bytes(pickle.dumps(("error", Crafted(ran))))
    (folder / "33_0_result.pkl").write_bytes(pickle.dumps(("success", {"x": 1}))[:5])  # being written
    jobs = dict.fromkeys(["31", "32", "33"], folder)
    assert job_states(jobs, read_results=True) == {"31": "done", "32": "failed"}
    assert not ran.exists(), "a result file planted in the jobs' folder ran code in the waiting launcher"


def test_the_jobs_folder_is_private_and_a_writable_one_is_refused(tmp_path):
    from harness.core.errors import FileSystemError
    from harness.launch.slurm import private_folder

    made = private_folder(tmp_path / "a" / "logs")
    assert made.is_dir() and made.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(FileSystemError, match=r"shared: SLURM jobs would run the pickles .* others can write to it"):
        private_folder(shared)
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o755)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(FileSystemError, match="another user owns it"):
            private_folder(theirs)
