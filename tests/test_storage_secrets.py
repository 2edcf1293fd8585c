"""A sweep's storage URL may hold a password: masked wherever it is printed or logged, and handed to workers by
their environment rather than their command line (world-readable) or a SLURM job's pickle (in the workdir). A study
name holding quotes still finds its MLflow runs; one that would name a folder outside the workdir is refused."""

import logging
import pickle

import optuna
import pytest
from mlflow import MlflowClient

from harness import sweep as sw
from harness.cli import main

URL = "postgresql://me:s3cr3t@db.example/optuna"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for this module's tests (its schema is built once: seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments(max_results=1)
    return uri


@pytest.fixture
def memory_storage(monkeypatch):
    """Optuna's in-memory storage where the sweep would connect to ``URL`` (no database server in the tests)."""
    storage = optuna.storages.InMemoryStorage()
    monkeypatch.setattr("harness.sweep.study.open_storage", lambda sweep: storage)
    return storage


@pytest.mark.slow
def test_sweep_init_prints_and_logs_the_url_with_its_password_masked(
    tmp_path, memory_storage, store, monkeypatch, capsys, caplog
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    caplog.set_level(logging.INFO)
    assert main(["sweep", "init", "-e", "digits_lt_tiny", "--storage", URL, "--workdir", str(tmp_path)]) == 0
    said = capsys.readouterr().out + capsys.readouterr().err + caplog.text
    assert "postgresql://me:***@db.example/optuna" in said and "s3cr3t" not in said


def test_a_missing_study_names_the_url_without_its_password(tmp_path, memory_storage):
    sweep = sw.make_sweep("digits_lt_tiny", [], tmp_path, URL, "nowhere")
    with pytest.raises(sw.SweepError, match=r"no study 'nowhere' in postgresql://me:\*\*\*@db.example") as e:
        sw.load_study(sweep)
    assert "s3cr3t" not in str(e.value)


def test_local_workers_get_the_url_by_environment_not_argv(tmp_path):
    sweep = sw.make_sweep("digits_lt_tiny", [], tmp_path, URL, "secret")
    command = sw.worker_command(sweep, 3, 0)
    assert not any("s3cr3t" in arg for arg in command) and "--storage" not in command
    assert sw.worker_env(1, sweep.storage_url)[sw.STORAGE_ENV] == URL
    journal = sw.make_sweep("digits_lt_tiny", [], tmp_path, f"journal:{tmp_path / 'j.log'}", "plain")
    assert f"journal:{tmp_path / 'j.log'}" in sw.worker_command(journal, 3, 0), "no password: stays on the command line"


def test_a_worker_reads_the_url_from_its_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(sw.STORAGE_ENV, URL)
    assert sw.make_sweep("digits_lt_tiny", [], tmp_path, None, "x").storage_url == URL
    assert sw.make_sweep("digits_lt_tiny", [], tmp_path, "journal:j", "x").storage_url == "journal:j", "--storage wins"


def test_slurm_workers_get_the_url_through_sbatchs_environment_not_their_pickle(tmp_path, monkeypatch):
    from harness.launch import slurm
    from harness.launch.records import Phase
    from harness.launch.slurm_jobs import SweepWorkerJob

    submitted = {}

    def fake_submit(cfg, folder, name, after, jobs, tasks):
        import os

        submitted["env"], submitted["pickles"] = os.environ.get(sw.STORAGE_ENV), [pickle.dumps(j) for j in jobs]
        for i, t in enumerate(tasks):
            t.job_id = f"9_{i}"

    monkeypatch.delenv(sw.STORAGE_ENV, raising=False)
    monkeypatch.setattr(sw, "init_study", lambda sweep: None)
    monkeypatch.setattr(slurm, "submit_phases", lambda *a: [Phase("base", "8")])
    monkeypatch.setattr(slurm, "submit_array", fake_submit)
    sweep = sw.make_sweep("digits_lt_tiny", [], tmp_path, URL, "secret")
    assert slurm.launch_sweep_slurm(sweep, 3, 2, wait=False, say=lambda line: None)
    assert submitted["env"] == URL, "sbatch hands its environment to the jobs"
    assert not any(b"s3cr3t" in p for p in submitted["pickles"])
    import os

    assert sw.STORAGE_ENV not in os.environ, "the submitting process's environment is restored"
    job = pickle.loads(submitted["pickles"][0])
    with pytest.raises(sw.SweepError, match=f"{sw.STORAGE_ENV}, which this job did not get"):
        job.work()
    assert isinstance(job, SweepWorkerJob)


def test_runs_are_found_by_tag_values_holding_quotes(store):
    from harness.runs.search import search_tagged

    c = MlflowClient(store)
    exp = c.create_experiment("quotes")
    names = ["it's", 'say "hi"', "both '\"", "trailing\\", "plain"]
    for value in [*names, "other", "it'sx"]:
        c.create_run(exp, tags={"sweep": value, "sweep_trial": "1"})
    for name in names:
        found = search_tagged(c, [exp], {"sweep": name, "sweep_trial": 1})
        assert [r.data.tags["sweep"] for r in found] == [name]
        assert len(search_tagged(c, [exp], {"sweep": name}, "attributes.status = 'RUNNING'", max_results=1)) == 1


@pytest.mark.parametrize("name", ["../../elsewhere", "a/b", ".."])
def test_a_study_name_that_would_leave_the_workdir_is_refused(tmp_path, name):
    with pytest.raises(sw.SweepError, match="names a folder in the workdir"):
        sw.make_sweep("digits_lt_tiny", [], tmp_path, None, name)
