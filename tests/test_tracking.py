"""What a run records in MLflow beyond params and metrics, read back through MLflow's own client: the experiment
kind, dataset inputs, source tags and description, the logged model (reloaded and re-evaluated by `harness
evaluate`), system metrics; and a workdir pointed at another store (or with its mlflow.db gone) logs there without
crashing."""

import re
import shutil
import sys
from unittest.mock import patch

import pytest
from mlflow.tracking import MlflowClient
from workdirs import copy_workdir

from harness.cli import main

METHODS = ["plain", "discl_diverse_to_specific"]
ARGV = ["run", "--experiment", "digits_lt_tiny", "--seed", "0", "--quiet"] + [
    a for m in METHODS for a in ("--method", m)
]
FAST = ["--set", "tracking.log_model=never", "--set", "tracking.system_metrics=false"]


def method_runs(client: MlflowClient):
    """The experiment and its seed-0 run of each method."""
    exp = client.get_experiment_by_name("digits_lt_tiny")
    found = client.search_runs([exp.experiment_id], filter_string="tags.method != '' and tags.seed = '0'")
    return exp, {r.data.tags["method"]: r for r in found}


@pytest.fixture(scope="module")
def store(tiny_runs):
    """The session's finished runs (conftest's ``tiny_runs``), seed 0 of each method."""
    client = MlflowClient(f"sqlite:///{tiny_runs / 'mlflow.db'}")
    exp, runs = method_runs(client)
    assert sorted(runs) == sorted(METHODS)
    return client, exp, runs


@pytest.mark.slow  # reads the session's finished runs (conftest's tiny_runs)
def test_experiment_opens_on_training_runs(store):
    _, exp, _ = store
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow  # reads the session's finished runs (conftest's tiny_runs)
def test_dataset_inputs_with_contexts(store):
    _, _, runs = store
    seen = {}
    for method, r in runs.items():
        inputs = {
            (d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
            for d in r.inputs.dataset_inputs
        }
        assert {("digits_lt/train", "training"), ("digits_lt/val", "validation"), ("digits_lt/test", "test")} <= inputs
        assert (("synthetic_pool", "training") in inputs) == method.startswith("discl")
        for d in r.inputs.dataset_inputs:
            seen.setdefault(d.dataset.name, set()).add(d.dataset.digest)
    assert all(len(digests) == 1 for digests in seen.values())  # both methods saw the same real splits
    pool = next(
        d.dataset for d in runs["discl_diverse_to_specific"].inputs.dataset_inputs if d.dataset.name == "synthetic_pool"
    )
    import json

    profile = json.loads(pool.profile)
    assert profile["generated"] >= profile["kept"] == profile["num_rows"] > 0
    assert profile["levels"] == [0.0, 0.1, 0.3, 0.5, 0.7, 0.9] and pool.digest.startswith(profile["cache_key"])


@pytest.mark.slow  # reads the session's finished runs (conftest's tiny_runs)
def test_source_tags_and_description(store):
    _, _, runs = store
    for r in runs.values():
        tags = r.data.tags
        assert tags["mlflow.source.name"].split()[0].endswith(("harness", "pytest", "py.test", "__main__.py", "python"))
        assert tags["mlflow.source.git.commit"] == tags["git_commit"]
        assert "/" not in tags["mlflow.source.name"] and tags["command"].startswith(tags["mlflow.source.name"])
    from harness.runs.tracking import command_line, short_source

    assert short_source("harness run -e digits_lt_tiny --workdir /tmp/w --quiet") == "harness run -e digits_lt_tiny"
    with patch.object(sys, "argv", ["-c"]):  # a pytest-xdist worker, `python -c CODE`
        assert command_line() == "python -c"
    desc = runs["discl_diverse_to_specific"].data.tags["mlflow.note.content"]
    assert "diverse" in desc and "λ 0, .1, .3, .5 over the first 4 of 5 epochs" in desc, desc
    assert "real images only, 5 epochs" in runs["plain"].data.tags["mlflow.note.content"]


@pytest.mark.slow  # reads the session's finished runs (conftest's tiny_runs)
def test_logged_model_reloads_and_reproduces_the_logged_test_metrics(store, tiny_runs, tmp_path, capsys):
    """Each run's logged model is READY with its weights and card; `harness evaluate` reloads it from MLflow and
    prints the test metrics it gives now beside the logged ones: the same numbers. An unknown run is one line."""
    from harness.runs.logged_model import evaluate_logged_model

    client, _, runs = store
    wd = copy_workdir(tiny_runs, tmp_path / "wd")
    for r in runs.values():
        [out] = r.outputs.model_outputs
        model = client.get_logged_model(out.model_id)
        assert model.source_run_id == r.info.run_id and str(model.status) in ("READY", "LoggedModelStatus.READY")
        files = {f.path for f in client.list_logged_model_artifacts(out.model_id)}
        assert {"MLmodel", "model.safetensors", "harness_model.yaml"} <= files
        capsys.readouterr()
        assert main(["evaluate", "--run", r.info.run_id, "--workdir", str(wd)]) == 0
        printed = re.findall(r"^\s+(test/\S+)\s+(\S+)\s+logged (\S+)$", capsys.readouterr().out, flags=re.M)
        rows = {k: (float(now), float(logged)) for k, now, logged in printed}
        assert {"test/acc", "test/acc_few"} <= set(rows)
        for now, logged in rows.values():
            assert now == pytest.approx(logged, abs=1e-4)
    r = runs["discl_diverse_to_specific"]
    metrics = evaluate_logged_model(r.info.run_id, wd)  # to the last digit
    assert metrics["test/acc"] == pytest.approx(r.data.metrics["test/acc"], abs=1e-9)
    assert metrics["test/acc_few"] == pytest.approx(r.data.metrics["test/acc_few"], abs=1e-9)
    assert main(["evaluate", "--run", "0" * 32, "--workdir", str(wd)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error: run 000") and "\n" not in err


def test_model_over_the_size_limit_is_not_logged(tiny_cfg, tmp_path):
    from types import SimpleNamespace

    from harness.runs.logged_model import log_selected_model

    cfg = tiny_cfg.model_copy(update={"tracking": tiny_cfg.tracking.model_copy(update={"max_model_mb": 1e-6})})
    tags = {}
    run = SimpleNamespace(set_tags=tags.update)
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    import torch

    torch.save({"state": {"best_state": {"w": torch.zeros(1000)}}, "trainer": {}}, ckpt / "checkpoint.pt")
    result = SimpleNamespace(method="plain", seed=0)
    log_selected_model(run, cfg, tmp_path, None, result, ckpt)  # would fail on prep=None if it went on
    assert tags["model_logged"].startswith("no:")


@pytest.mark.slow  # reads the session's finished runs (conftest's tiny_runs)
def test_system_metrics(store):
    _, _, runs = store
    for r in runs.values():
        keys = set(r.data.metrics)
        assert "system/cpu_utilization_percentage" in keys and "system/system_memory_usage_megabytes" in keys


@pytest.mark.slow
def test_another_store_logs_there(store, tiny_runs, tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI at a fresh store: the cache's run ids are the old store's; new runs, from the cache."""
    old_client, exp, old_runs = store
    wd = copy_workdir(tiny_runs, tmp_path / "wd")
    uri = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(ARGV + FAST + ["--workdir", str(wd)]) == 0
    new = MlflowClient(uri)
    _, runs = method_runs(new)
    assert sorted(runs) == sorted(METHODS) and {r.info.status for r in runs.values()} == {"FINISHED"}
    for m, r in runs.items():
        assert r.info.run_id != old_runs[m].info.run_id
        assert sorted(x.step for x in new.get_metric_history(r.info.run_id, "val/acc")) == list(range(5))
        assert r.data.metrics["test/acc"] == pytest.approx(old_runs[m].data.metrics["test/acc"])
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    _, again = method_runs(old_client)  # the old store still resolves to its own runs
    assert {m: r.info.run_id for m, r in again.items()} == {m: r.info.run_id for m, r in old_runs.items()}


@pytest.mark.slow
def test_copied_cache_and_deleted_store(tiny_runs, tmp_path):
    """A cache copied to a new workdir, then that workdir's mlflow.db deleted: each time, new runs there. (The
    second run is a new process, read back with sqlite3: in one process MLflow keeps one engine per store URI,
    open on the deleted file.)"""
    import os
    import sqlite3
    import subprocess
    import sys

    wd = copy_workdir(tiny_runs, tmp_path / "copy")
    (wd / "mlflow.db").unlink()  # the cache alone
    shutil.rmtree(wd / "mlartifacts")
    argv = ARGV + FAST + ["--workdir", str(wd)]
    assert main(argv) == 0
    client = MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    _, runs = method_runs(client)
    assert sorted(runs) == sorted(METHODS) and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert all(len(client.get_metric_history(r.info.run_id, "train/loss")) == 5 for r in runs.values())
    first = {r.info.run_id for r in runs.values()}

    (wd / "mlflow.db").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", *argv],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(wd / "mlflow.db") as db:
        rows = db.execute(
            "SELECT r.run_uuid, r.status, count(m.step) FROM runs r JOIN latest_metrics l "
            "ON l.run_uuid = r.run_uuid AND l.key = 'train/loss' JOIN metrics m ON "
            "m.run_uuid = r.run_uuid AND m.key = 'train/loss' GROUP BY r.run_uuid"
        ).fetchall()
    assert len(rows) == 2 and {(status, n) for _, status, n in rows} == {("FINISHED", 5)}
    assert not first & {run_id for run_id, _, _ in rows}
    assert all(run_id in done.stdout for run_id, _, _ in rows)


@pytest.mark.slow  # a sweep's study and MLflow parent
def test_sweep_parent_links_its_study_and_moves_to_another_store(tmp_path, monkeypatch):
    """The parent run names the Optuna study and the optuna-dashboard command; a study whose parent run is in
    another store gets a new parent in the store it is given."""
    from harness import sweep as sw

    sweep = sw.make_sweep("digits_lt_tiny", [], tmp_path, None, "linked")
    study = sw.init_study(sweep)
    first = study.user_attrs[sw.PARENT_ATTR]
    parent = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(first)
    command = f"optuna-dashboard sqlite:///{tmp_path / 'optuna.db'}"
    assert parent.data.tags["optuna.dashboard"].startswith(command)
    assert command in parent.data.tags["mlflow.note.content"] and "linked" in parent.data.tags["mlflow.note.content"]
    assert sw.public_url("postgresql://me:secret@db/optuna") == "postgresql://me:***@db/optuna"

    uri = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    again = sw.init_study(sw.make_sweep("digits_lt_tiny", [], tmp_path, None, "linked"))
    second = again.user_attrs[sw.PARENT_ATTR]
    assert second != first and MlflowClient(uri).get_run(second).data.tags["study"] == "linked"


@pytest.mark.slow
def test_optuna_dashboard_opens_the_sweep_storage(tmp_path):
    pytest.importorskip("optuna_dashboard")
    import json
    import socket
    import subprocess
    import time
    import urllib.request

    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="shown", storage=storage)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("optuna-dashboard") or pytest.skip("no optuna-dashboard command")
    proc = subprocess.Popen(
        [exe, storage, "--host", "127.0.0.1", "--port", str(port)],  # as the README says
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("optuna-dashboard did not answer in 60 s")
        assert [s["study_name"] for s in studies] == ["shown"]
    finally:
        proc.kill()  # its server does not stop on SIGTERM
        proc.wait(10)
