"""`harness run` end to end on the tiny experiment, then the MLflow store checked against the design's contract."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main

METHODS = ["plain", "discl_diverse_to_specific"]


@pytest.fixture(scope="module")
def store(tiny_workdir, capsys_module=None):
    argv = [
        "run",
        "--experiment",
        "digits_lt_tiny",
        "--workdir",
        str(tiny_workdir),
        "--seed",
        "0",
        "--seed",
        "1",
        "--quiet",
    ] + [a for m in METHODS for a in ("--method", m)]
    assert main(argv) == 0
    client = MlflowClient(f"sqlite:///{tiny_workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits_lt_tiny")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.method != ''")
    return client, runs, argv


def test_one_finished_run_per_method_and_seed(store):
    _, runs, _ = store
    assert sorted(r.info.run_name for r in runs) == sorted(f"{m}-seed{s}" for m in METHODS for s in (0, 1))
    assert {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert {"method", "dataset", "seed", "git_commit", "generator", "scorer"} <= set(r.data.tags)
        assert r.data.params["train.epochs"] == "5" and r.data.params["spectrum.levels"] == str(
            [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
        )


def test_contract_metrics_and_artifacts(store):
    client, runs, _ = store
    for r in runs:
        assert {"test/acc", "test/acc_many", "test/acc_medium", "test/acc_few"} <= set(r.data.metrics)
        lam = client.get_metric_history(r.info.run_id, "curriculum/lambda")
        assert sorted(m.step for m in lam) == list(range(5))
        assert len(client.get_metric_history(r.info.run_id, "val/acc")) == 5
        paths = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"config.yaml", "predictions", "plots", "curriculum.yaml"} <= paths
        if r.data.tags["method"].startswith("discl"):
            assert {a.path for a in client.list_artifacts(r.info.run_id, "spectrum")} >= {"spectrum/grid.png"}


def test_logged_accuracy_recomputes_from_predictions(store, tmp_path):
    client, runs, _ = store
    for r in runs:
        path = client.download_artifacts(r.info.run_id, "predictions/test.csv", str(tmp_path / r.info.run_id))
        preds = pd.read_csv(path)
        assert list(preds.columns[:3]) == ["index", "id", "y_true"] and "y_pred" in preds
        assert (preds.y_true == preds.y_pred).mean() == pytest.approx(r.data.metrics["test/acc"])
        assert len(preds) == 400


def test_rerun_reuses_finished_runs(store, capsys):
    client, runs, argv = store
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test/acc" in out and all(r.info.run_id in out for r in runs)
    exp = client.get_experiment_by_name("digits_lt_tiny")
    assert len(client.search_runs([exp.experiment_id], filter_string="tags.method != ''")) == len(runs)


def test_bad_input_is_one_line_and_exit_2(tiny_workdir, capsys):
    assert main(["run", "--experiment", "no_such_experiment", "--workdir", str(tiny_workdir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error: no experiment 'no_such_experiment'") and "\n" not in err
    assert (
        main(["run", "--experiment", "digits_lt_tiny", "--set", "train.lr=fast", "--workdir", str(tiny_workdir)]) == 2
    )
    assert "train.lr: expected a number" in capsys.readouterr().err
