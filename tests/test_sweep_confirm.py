"""`harness sweep confirm`: the tuning seed refused, fresh seeds by default and in the printed rerun command, the
three schedules it reruns, and one confirmation of a tiny study end to end."""

from __future__ import annotations

import shlex

import optuna
import pandas as pd
import pytest
from workdirs import copy_workdir

from harness import sweep as sw
from harness.cli import main
from harness.config import load_config

# two epochs per run; the phase caches are the warm workdir's
FAST = ["train.epochs=2", "train.curriculum_epochs=1", "sweep.pruner=none"]


def test_confirm_refuses_the_tuning_seed_in_one_line(tmp_path, capsys):
    argv = ["sweep", "confirm", "-e", "digits_lt_tiny", "--workdir", str(tmp_path), "--seeds", "3", "0"]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed 0 is the sweep's tuning seed (sweep.seed)" in err
    assert "--seeds 1 2" in err  # what to give instead
    assert not (tmp_path / "optuna.db").exists()  # refused before any study was opened
    assert main([*argv[:-3], "--set", "sweep.seed=3", "--seeds", "3"]) != 0  # the tuning seed is sweep.seed


def test_fresh_seeds_never_hold_the_tuning_seed(tmp_path):
    assert sw.fresh_seeds(0) == [1, 2, 3] and sw.fresh_seeds(2) == [0, 1, 3] and sw.fresh_seeds(1, 5) == [0, 2, 3, 4, 5]
    sweep = sw.make_sweep("digits_lt_tiny", ["sweep.seed=1"], tmp_path, None, "s")
    assert sw.confirm_seeds(sweep, None) == [0, 2, 3]
    assert sw.confirm_seeds(sweep, [4, 2, 4]) == [4, 2]


def test_the_printed_rerun_command_runs_on_fresh_seeds(tmp_path):
    sweep = sw.make_sweep("digits_lt_tiny", ["sweep.seed=1"], tmp_path, None, "s")
    words = shlex.split(sw.rerun_command(sweep, sw.paper_params(sweep.cfg)))
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    assert load_config("digits_lt_tiny", sets).seeds == [0, 2, 3]


def told_study(sweep: sw.Sweep, params: dict) -> optuna.trial.FrozenTrial:
    """The sweep's study with two completed trials and made-up values, no training: the paper's trial (enqueued
    first), then ``params``, the best."""
    study = sw.init_study(sweep)
    study.enqueue_trial(params)
    for value in (0.4, 0.5):
        trial = study.ask()
        sw.suggest(trial, sweep.cfg)
        study.tell(trial, value)
    return study.trials[-1]


def test_confirm_arms_are_the_best_schedule_the_papers_and_plain(tmp_path):
    sweep = sw.make_sweep("digits_lt_tiny", FAST, tmp_path, None, "s")
    with pytest.raises(sw.SweepError, match="no study 's'"):
        sw.confirm_arms(sweep, [1])
    sw.init_study(sweep)
    with pytest.raises(sw.SweepError, match="no completed trial"):
        sw.confirm_arms(sweep, [1])
    params = {**sw.paper_params(sweep.cfg), "lambda_0": False}  # the paper's schedule without λ = 0
    trial = told_study(sweep, params)
    best, paper, plain = sw.confirm_arms(sweep, [1, 2])
    assert best.label == f"best trial {trial.number}" and best.method == "discl_diverse_to_specific"
    assert best.cfg.name == "digits_lt_tiny_best" and best.cfg.curriculum.levels == [0.1, 0.3, 0.5]
    assert paper.label == "paper discl_diverse_to_specific" and paper.cfg.name == "digits_lt_tiny"
    assert paper.cfg.curriculum.levels == sweep.cfg.curriculum.levels != best.cfg.curriculum.levels
    assert plain.method == "plain" and all(arm.cfg.seeds == [1, 2] for arm in (best, paper, plain))
    assert all(arm.cfg.train.epochs == 2 for arm in (best, paper, plain))  # the sweep's own overrides kept


@pytest.mark.slow
def test_a_tiny_confirmation_reports_the_three_schedules_on_a_fresh_seed(tiny_prepared, warm_workdir, tmp_path):
    wd = copy_workdir(warm_workdir, tmp_path / "wd")
    sweep = sw.make_sweep("digits_lt_tiny", FAST, wd, None, "s")
    told_study(sweep, {**sw.paper_params(sweep.cfg), "lambda_0": False})
    sets = [a for text in FAST for a in ("--set", text)]
    argv = ["sweep", "confirm", "-e", "digits_lt_tiny", "--study", "s", "--workdir", str(wd), "--quiet", *sets]
    assert main([*argv, "--seeds", "1"]) == 0
    tables = wd / "reports" / "s-confirm"
    contrasts = pd.read_csv(tables / "contrasts.csv")
    assert set(contrasts.label) == {
        "best trial 1 − plain",
        "paper discl_diverse_to_specific − plain",
        "best trial 1 − paper discl_diverse_to_specific",
    }
    assert (contrasts.seeds.astype(str) == "1").all()
    images = pd.read_csv(tables / "contrasts_images.csv")
    assert (images.seeds == 1).all() and images.boot_low.notna().all()  # one seed: the images still give an interval


def test_the_printed_confirm_command_names_the_study_workdir_and_overrides(tmp_path):
    from harness.cli.app import parser
    from harness.cli.sweep import confirm_command

    sweep = sw.make_sweep("digits_lt_tiny", ["train.epochs=6"], tmp_path, None, "s")
    args = parser().parse_args(shlex.split(confirm_command(sweep))[1:])
    assert (args.action, args.experiment, args.study) == ("confirm", "digits_lt_tiny", "s")
    assert args.workdir == str(tmp_path) and args.overrides == ["train.epochs=6"]
