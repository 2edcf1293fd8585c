"""A new workdir's MLflow store is a copy of one migrated empty store, and behaves as one MLflow built itself."""

import sqlite3

import mlflow.store.db.utils as db_utils
import pytest

from harness.runs import store
from harness.runs.tracking import client, experiment_id


def test_the_second_new_workdir_copies_the_migrated_store_instead_of_migrating(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    client(tmp_path / "first")
    assert store.template_path().exists()

    def no_migrations(engine):
        raise AssertionError("a seeded store must not run MLflow's migrations")

    monkeypatch.setattr(db_utils, "_initialize_tables", no_migrations)
    c = client(tmp_path / "second")
    default = c.get_experiment("0")
    assert default.name == "Default"
    assert str(tmp_path / "cache") not in default.artifact_location, "made again on opening, not copied"
    exp = experiment_id(c, tmp_path / "second", "digits")
    run = c.create_run(exp)
    c.log_metric(run.info.run_id, "test/acc", 0.5)
    assert c.get_run(run.info.run_id).data.metrics == {"test/acc": 0.5}


def test_the_template_holds_no_experiment_of_the_folder_it_was_built_in(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    path = store.empty_store()
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    con.close()


def test_an_existing_store_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    c = client(tmp_path / "wd")
    exp = experiment_id(c, tmp_path / "wd", "digits")
    c2 = client(tmp_path / "wd")
    assert c2.get_experiment(exp).name == "digits"


@pytest.mark.parametrize("uri", ["postgresql://u@h/db", "sqlite:////elsewhere/mlflow.db"])
def test_a_store_elsewhere_is_left_to_mlflow(tmp_path, uri):
    store.seed_store(tmp_path, uri)
    assert not (tmp_path / "mlflow.db").exists()
