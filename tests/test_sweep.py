"""`harness sweep`: study + MLflow parent, trials as child runs, pruning, a killed worker, concurrent workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from workdirs import copy_workdir

from harness import sweep as sw
from harness.config import ConfigError, load_config, validate

# Two epochs per trial; heartbeats fast enough for a test to see a dead worker's trial go stale.
FAST = [
    "train.epochs=2",
    "train.curriculum_epochs=2",
    "sweep.heartbeat_interval=1",
    "sweep.grace_period=3",
    "sweep.pruner=none",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_prepared, warm_workdir):
    """One workdir for the module, its own MLflow store and Optuna database; the phase caches (base model,
    synthetic pool, scores) are the session's warm workdir's (hard links), so they are built once per session."""
    from harness.phases.pipeline import prepare

    wd = copy_workdir(warm_workdir, tmp_path_factory.mktemp("sweep"))
    cfg = load_config("digits_lt_tiny", FAST)
    prepare(cfg, wd, methods=sw.sweep_methods(cfg), progress=False)
    return wd


def make(workdir, study, extra=(), storage=None) -> sw.Sweep:
    return sw.make_sweep("digits_lt_tiny", FAST + list(extra), workdir, storage, study)


def runs_of(workdir, experiment: str, study: str):
    """(parent runs, active child runs) of one study, from MLflow."""
    from harness.runs.tracking import client

    c = client(workdir)
    exp = c.get_experiment_by_name(experiment)
    parents = c.search_runs([exp.experiment_id], f"tags.study = '{study}' and tags.sweep = 'true'")
    children = c.search_runs([exp.experiment_id], f"tags.sweep = '{study}'")
    return c, parents, children


def assert_exactly(workdir, sweep: sw.Sweep, n: int) -> list:
    """N finished trials, one parent, one child run per finished trial and no other but the FAILED run of a trial
    that raised, no trial twice."""
    study = sw.load_study(sweep)
    finished = [t for t in study.get_trials() if t.state in sw.FINISHED]
    assert len(finished) == n
    assert len({t.number for t in finished}) == n
    c, parents, children = runs_of(workdir, sweep.cfg.name, sweep.study_name)
    assert len(parents) == 1
    assert study.user_attrs[sw.PARENT_ATTR] == parents[0].info.run_id
    numbers = [int(r.data.tags["sweep_trial"]) for r in children]
    assert len(numbers) == len(set(numbers))  # no trial logged twice
    failed = {t.number for t in study.get_trials() if t.state == TrialState.FAIL}
    assert sorted(n for n in numbers if n not in failed) == sorted(t.number for t in finished)
    for r in children:  # a trial whose config could not train (a sampled filter too strict) keeps its FAILED run
        assert int(r.data.tags["sweep_trial"]) not in failed or (r.info.status == "FAILED" and r.data.tags["error"])
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    return finished


# --------------------------------------------------------------------------- config and search space


def test_sweep_config_is_typed_and_refuses_test_objectives():
    with pytest.raises(ConfigError, match="never a test metric"):
        load_config("digits_lt_tiny", ["sweep.objective=test/acc_few"])
    with pytest.raises(ConfigError, match="never a test metric"):
        load_config("digits_lt_tiny", ["sweep.multi_objective=[val/acc_few, test/acc_many]"])
    with pytest.raises(ConfigError, match="sweep.pruner"):
        load_config("digits_lt_tiny", ["sweep.pruner=asha"])
    with pytest.raises(ConfigError, match="no key 'sweep.space.ordering'"):
        load_config("digits_lt_tiny", ["sweep.space.ordering=[random]"])
    cfg = load_config("digits_lt_discl")
    assert sw.objective_names(cfg) == ["val/acc_few"]
    assert cfg.sweep.space.curriculum_fraction.high == 1.0


def test_paper_params_reproduce_the_experiments_own_schedule():
    cfg = load_config("digits_lt_discl")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(sw.paper_params(cfg))
    params = sw.suggest(study.ask(), cfg)
    tcfg, method = sw.trial_config(cfg, params)
    assert method == "discl_diverse_to_specific"
    assert tcfg.curriculum_levels == cfg.curriculum_levels
    for key in ("curriculum_epochs", "synthetic_scale", "undersample", "loss", "epochs"):
        assert getattr(tcfg.train, key) == getattr(cfg.train, key)
    assert tcfg.filter.threshold == cfg.filter.threshold


def test_empty_level_subset_runs_real_only_and_adaptive_gets_its_levels():
    cfg = load_config("digits_lt_tiny")
    base = {
        "curriculum_fraction": 0.5,
        "synthetic_scale": 1.0,
        "undersample": 0.5,
        "filter_threshold": 0.1,
        "loss": "balanced_softmax",
    }
    _, method = sw.trial_config(cfg, {**base, "ordering": "random", "levels": []})
    assert method == sw.NO_SYNTHETIC_METHOD
    tcfg, method = sw.trial_config(cfg, {**base, "ordering": "adaptive", "levels": [0.5, 0.9], "statistic": "median"})
    assert method == "discl_adaptive" and tcfg.curriculum.adaptive_levels == [0.5, 0.9]
    assert tcfg.curriculum.adaptive.statistic == "median" and tcfg.train.curriculum_epochs == 2
    assert tcfg.train.loss == "balanced_softmax"


def test_a_tail_share_experiment_searches_no_synthetic_scale():
    """With ``train.tail_share`` (ImageNet-LT) a trial must not set ``train.synthetic_scale``, which the config
    refuses beside a tail share."""
    cfg = load_config("imagenet_lt_discl_tiny")
    assert cfg.train.tail_share is not None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        params = sw.suggest(trial, cfg)
        assert "synthetic_scale" not in trial.params
        tcfg, method = sw.trial_config(cfg, params)
        assert tcfg.train.synthetic_scale is None
        validate(tcfg, "trial", [method])  # the config check accepts the trial's config
    assert "synthetic_scale" not in sw.paper_params(cfg)


def test_rerun_command_rebuilds_each_trials_config(tmp_path):
    """The `--set` lines printed for the best trial give `harness run` the very config the trial trained."""
    import shlex

    cfg = load_config("digits_lt_discl")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    study.enqueue_trial(sw.paper_params(cfg))
    for _ in range(12):
        trial = study.ask()
        tcfg, method = sw.trial_config(cfg, sw.suggest(trial, cfg))
        overrides = sw.trial_overrides(cfg, trial.params)
        assert load_config("digits_lt_discl", overrides).to_dict() == tcfg.to_dict()
        study.tell(trial, 0.0)
    assert sw.trial_overrides(cfg, sw.paper_params(cfg)) == ["methods=[discl_diverse_to_specific]"]
    sweep = sw.make_sweep("digits_lt_discl", ["train.epochs=10"], tmp_path, None, "s")
    words = shlex.split(sw.rerun_command(sweep, study.trials[1].params))
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    rerun = load_config(words[words.index("--experiment") + 1], sets)
    expected, _ = sw.trial_config(sweep.cfg, sw.suggest(optuna.trial.FixedTrial(study.trials[1].params), sweep.cfg))
    assert sweep.seed == 0 and rerun.seeds == [1, 2, 3]  # fresh seeds: never the one the sweep tuned on
    assert rerun.name == "digits_lt_discl_best" and rerun.train.epochs == 10
    assert words[words.index("--workdir") + 1] == str(sweep.workdir)  # the same caches and MLflow store
    assert {**rerun.to_dict(), "seeds": None, "name": None} == {**expected.to_dict(), "seeds": None, "name": None}


# --------------------------------------------------------------------------- sweeps


@pytest.mark.slow
def test_few_trial_sweep_logs_parent_children_best_and_plots(workdir):
    from harness.runs.finished import finished_run
    from harness.runs.paths import run_config_hash

    sweep = make(workdir, "few")
    out = sw.run_sweep(sweep, 3, say=lambda line: None)
    finished = assert_exactly(workdir, sweep, 3)
    study = out["study"]
    assert study.trials[0].user_attrs["schedule"] == "paper"
    assert study.trials[0].params["ordering"] == "diverse_to_specific"
    c, parents, children = runs_of(workdir, sweep.cfg.name, "few")
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["study"] == "few"
    artifacts = {f.path for f in c.list_artifacts(parent.info.run_id, "plots")}
    assert {
        "plots/optimization_history.png",
        "plots/parallel_coordinate.png",
        "plots/param_importances.png",
    } <= artifacts
    best = [r for r in children if r.data.tags.get("best") == "true"]
    assert len(best) == 1 and best[0].info.run_id == out["best"][0].user_attrs["mlflow_run_id"]
    for r in children:
        assert "method" not in r.data.tags and "config_hash" not in r.data.tags
        assert r.data.params["ordering"] in sw.ORDERING_METHODS
        assert len(c.get_metric_history(r.info.run_id, "val/acc_few")) == 2  # one value per epoch
    trial = next(t for t in finished if t.number == 0)
    method = trial.user_attrs["method"]
    tcfg, _ = sw.trial_config(sweep.cfg, sw.suggest(optuna.trial.FixedTrial(trial.params), sweep.cfg))
    assert finished_run(workdir, tcfg, method, sweep.seed, run_config_hash(tcfg, method)) is None
    # Running again resumes the finished study: nothing new, still one parent.
    sw.run_sweep(sweep, 3, say=lambda line: None)
    assert_exactly(workdir, sweep, 3)


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


@pytest.mark.slow
def test_pruned_trial_ends_killed_with_a_tag(workdir):
    from harness.phases.pipeline import prepare

    sweep = make(workdir, "pruned")
    study = sw.init_study(sweep)
    study.pruner = AlwaysPrune()
    prep = prepare(sweep.cfg, workdir, methods=sw.sweep_methods(sweep.cfg), progress=False)
    study.optimize(lambda trial: sw.run_trial(sweep, study, trial, prep), n_trials=1)  # what a worker runs
    (frozen,) = study.trials
    assert frozen.state == TrialState.PRUNED and list(frozen.intermediate_values) == [0]
    c, _, children = runs_of(workdir, sweep.cfg.name, "pruned")
    (run,) = children
    assert run.info.status == "KILLED" and run.data.tags["pruned"] == "true"


def test_changed_config_cannot_resume_a_study(tmp_path):
    sw.init_study(make(tmp_path, "fixed"))
    with pytest.raises(sw.SweepError, match="another config"):
        sw.load_study(make(tmp_path, "fixed", ["train.lr=0.01"]))


def wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_killed_worker_trial_is_retried_once(workdir, storage):
    """SQLite: Optuna's heartbeat check fails the dead worker's trial and re-queues it (any machine would); the
    journal file has no heartbeat: a worker on the same host finds the dead process and does the same."""
    name = f"kill-{storage}"
    url = f"journal:{workdir / 'kill-journal.log'}" if storage == "journal" else None
    # Longer trials, so the kill lands mid-trial.
    sweep = make(workdir, name, ["train.epochs=12", "train.curriculum_epochs=8"], storage=url)
    study = sw.init_study(sweep)
    worker = subprocess.Popen(sw.worker_command(sweep, 2, 0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: runs_of(workdir, sweep.cfg.name, name)[2], 120, "a trial's MLflow run")
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    (killed,) = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if storage == "sqlite":
        time.sleep(sweep.cfg.sweep.grace_period + 1)
        optuna.storages.fail_stale_trials(study)
        assert [t.state for t in study.get_trials(deepcopy=False)[killed.number :]] == [
            TrialState.FAIL,
            TrialState.WAITING,
        ]
    counts = sw.work(sweep, 2, say=lambda line: None)
    assert counts.finished == 2 and counts.retried == 1
    trials = sw.load_study(sweep).get_trials()
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retries) == 1 and retries[0].state in sw.FINISHED
    assert retries[0].params == killed.params
    assert trials[killed.number].state == TrialState.FAIL
    assert_exactly(workdir, sweep, 2)  # the dead trial's run was retired: one child per finished trial


def test_interrupted_trial_is_requeued(workdir, monkeypatch):
    """Ctrl-C in a worker: Optuna fails the running trial; the worker re-queues it, as a dead worker's, so the
    resumed sweep runs it again."""
    from harness.sweep import worker

    sweep = make(workdir, "interrupted")
    sw.init_study(sweep)

    def interrupted(sweep, study, trial, prep):
        sw.suggest(trial, sweep.cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(worker, "run_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sw.work(sweep, 2, say=lambda line: None)
    first, retry = sw.load_study(sweep).get_trials()
    assert first.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == first.number
    assert retry.params == first.params and sw.count_trials([first, retry]).retried == 1


# No worker dies in the concurrent tests: a grace period long enough that a loaded machine's late heartbeat never
# makes a live trial stale (a stale trial is retried while its worker still logs it: one MLflow run too many). What
# they count is trials and runs, not models: no logged model and no system metrics, ~2.5 s less per worker process
# (a process's first logged model pays for MLflow's requirement check and torch.export's imports).
LIVE = ["sweep.grace_period=30", "tracking.log_model=never", "tracking.system_metrics=false"]


def run_concurrent(workdir, sweep: sw.Sweep, n: int, k: int, monkeypatch) -> None:
    import functools

    # the parent looks at its workers every 0.5 s, not 3 s: the test waits for the trials, not for a poll
    monkeypatch.setattr(sw, "run_workers", functools.partial(sw.run_workers, poll_s=0.5))
    lines: list[str] = []
    out = sw.run_sweep(sweep, n, k, say=lines.append)
    assert out["finished"] == n
    assert any(f"finished {n}/{n}" in line for line in lines)
    assert_exactly(workdir, sweep, n)


@pytest.mark.slow
def test_four_workers_on_a_journal_file_finish_exactly_n(workdir, monkeypatch):
    sweep = make(workdir, "journal", LIVE, storage=f"journal:{workdir / 'optuna-journal.log'}")
    run_concurrent(workdir, sweep, 5, 4, monkeypatch)


def postgres_url() -> str:
    url = os.environ.get("HARNESS_TEST_POSTGRES_URL")
    candidate = url or "postgresql://harness:harness@localhost/harness_test"
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(sw.rdb_url(candidate))
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as e:
        if url:  # CI sets the variable: a server that does not answer is a failure, not a skip
            pytest.fail(f"HARNESS_TEST_POSTGRES_URL={url} does not answer: {e}")
        pytest.skip("no PostgreSQL server: set HARNESS_TEST_POSTGRES_URL (.ci/run starts one)")
    return candidate


@pytest.mark.slow
def test_four_workers_on_postgresql_finish_exactly_n(workdir, monkeypatch):
    url = postgres_url()
    study = f"pg-{os.getpid()}-{int(time.time())}"  # the database outlives the test's workdir
    run_concurrent(workdir, make(workdir, study, LIVE, storage=url), 5, 4, monkeypatch)


def test_local_workers_split_the_cores(monkeypatch):
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert sw.worker_env(1)["OMP_NUM_THREADS"] == str(cores)
    assert sw.worker_env(4 * cores)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert sw.worker_env(4)["OMP_NUM_THREADS"] == "3"  # the user's choice wins


def test_local_workers_start_warm(tmp_path, monkeypatch):
    """With K local workers the shared phases are built once in the parent, with every core, before any worker
    starts (each worker gets cores // K threads)."""
    events = []
    monkeypatch.setattr(sw, "prepare", lambda cfg, wd, methods, progress: events.append(("prepare", methods)))
    monkeypatch.setattr(sw, "run_workers", lambda *a, **k: events.append(("workers",)))
    with pytest.raises(sw.SweepError):  # the stubbed workers ran no trial
        sw.run_sweep(make(tmp_path, "warm-start"), n_trials=2, n_workers=2, say=lambda line: None)
    assert [e[0] for e in events] == ["prepare", "workers"]
    assert events[0][1] == sw.sweep_methods(make(tmp_path, "warm-start").cfg)
