"""`harness run` end to end on the tiny experiment, then the MLflow store checked against the design's contract; and
the same config giving the same metrics in fresh processes (another hash seed each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from histories import metric_histories
from mlflow.tracking import MlflowClient
from workdirs import TINY_RUNS, copy_workdir, inlt_overrides

from harness.cli import main

METHODS = ["plain", "discl_diverse_to_specific"]


@pytest.fixture(scope="module")
def store(tiny_runs):
    """The session's finished runs (conftest's ``tiny_runs``: each method on seeds 0 and 1), read through MLflow."""
    client = MlflowClient(f"sqlite:///{tiny_runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits_lt_tiny")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.method != ''")
    argv = ["run", "-e", "digits_lt_tiny", "--quiet", *TINY_RUNS]
    return client, runs, argv


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_one_finished_run_per_method_and_seed(store):
    _, runs, _ = store
    assert sorted(r.info.run_name for r in runs) == sorted(f"{m}-seed{s}" for m in METHODS for s in (0, 1))
    assert {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert {"method", "dataset", "seed", "git_commit", "generator", "scorer"} <= set(r.data.tags)
        assert r.data.params["train.epochs"] == "5" and r.data.params["spectrum.levels"] == str(
            [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
        )


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
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


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_logged_accuracy_recomputes_from_predictions(store, tmp_path):
    client, runs, _ = store
    for r in runs:
        path = client.download_artifacts(r.info.run_id, "predictions/test.csv", str(tmp_path / r.info.run_id))
        preds = pd.read_csv(path)
        assert list(preds.columns[:3]) == ["index", "id", "y_true"] and "y_pred" in preds
        assert (preds.y_true == preds.y_pred).mean() == pytest.approx(r.data.metrics["test/acc"])
        assert len(preds) == 400


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_rerun_reuses_finished_runs(store, tiny_runs, tmp_path, capsys):
    _, runs, argv = store
    wd = copy_workdir(tiny_runs, tmp_path / "wd")
    assert main([*argv, "--workdir", str(wd)]) == 0
    out = capsys.readouterr().out
    assert "test/acc" in out and all(r.info.run_id in out for r in runs)
    client = MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits_lt_tiny")
    assert len(client.search_runs([exp.experiment_id], filter_string="tags.method != ''")) == len(runs)


# --------------------------------------------------------------------------- the same numbers in every process


def cold_run(workdir, overrides) -> subprocess.Popen:
    """A fresh process (one torch thread, as this one) that runs the tiny ImageNet-LT experiment into ``workdir`` and
    prints each run's metric histories as JSON (read them with ``cold_run_metrics``)."""
    code = (
        "import json, sys; from pathlib import Path; from harness.config import load_config; "
        "from harness.runs.runner import run_experiment; "
        "cfg = load_config('imagenet_lt_discl_tiny', sys.argv[2:]); "
        "run_experiment(cfg, Path(sys.argv[1]), progress=False); "
        "from histories import metric_histories; print(json.dumps(metric_histories(Path(sys.argv[1]))))"
    )
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONHASHSEED": "random", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), env.get("PYTHONPATH", "")) if p)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(workdir), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def cold_run_metrics(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=280)
    assert proc.returncode == 0, err[-3000:]
    return comparable(json.loads(out.strip().splitlines()[-1]))


def comparable(metrics: dict) -> dict:
    """The metric histories less the timings and system metrics, which differ between any two processes."""
    for run in metrics.values():
        run.pop("system/cpu_utilization_percentage", None)
        for name in [k for k in run if k.startswith("time/") or k.startswith("system/")]:
            run.pop(name)
    return metrics


@pytest.mark.slow
def test_same_config_same_metrics_in_a_fresh_process(imagenet_lt_tiny_runs, tmp_path):
    """The session's cold ImageNet-LT runs (made in a pytest process) and the same config run cold again in a fresh
    process, with another hash seed and another import order, give the same metric histories."""
    root, workdir = imagenet_lt_tiny_runs
    first = comparable(metric_histories(workdir))
    second = cold_run_metrics(cold_run(tmp_path / "fresh", inlt_overrides(root)))
    assert set(first) == {"plain", "discl_diverse_to_specific"}
    assert "test/acc" in first["plain"] and "curriculum/tail_share" in first["plain"]
    assert first == second
