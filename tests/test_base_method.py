"""The ``base`` method: the base model as trained, evaluated with no fine-tuning (the paper's CE row), registered
like every method and logged with the same test metrics as a fine-tuned run."""

import re
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.core import registry

GROUP = "discl_harness.methods"


@pytest.fixture
def declared_methods(monkeypatch):
    """The methods as this checkout's pyproject.toml declares them (what installing it registers), in a fresh
    METHODS registry, so the test holds before and after the package is reinstalled."""
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()  # Python 3.10 has no tomllib
    section = text.split(f'[project.entry-points."{GROUP}"]', 1)[1].split("\n[", 1)[0]
    declared = dict(re.findall(r'^(\w+) = "([^"]+)"', section, re.MULTILINE))
    found = [(EntryPoint(name, value, GROUP), "discl-harness") for name, value in declared.items()]
    real = registry.component_entry_points
    monkeypatch.setattr(registry, "component_entry_points", lambda group: found if group == GROUP else real(group))
    monkeypatch.setattr(registry.METHODS, "_entries", {})
    monkeypatch.setattr(registry.METHODS, "_loaded", False)
    return declared


def test_base_is_an_entry_point_and_harness_list_shows_it(declared_methods, capsys):
    from harness.cli import main

    assert declared_methods["base"] == "baselines.base:Base"
    assert main(["list"]) == 0
    methods = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("methods:"))
    assert "base" in methods.split(":", 1)[1].replace(",", " ").split()
    method = registry.get_method("base")
    assert not method.fine_tunes and not method.synthetic and not method.real_stand_in
    from harness.config import load_config
    from harness.runs.describe import method_description

    assert "no fine-tuning, the base model after its 3 epochs" in method_description(
        load_config("digits_lt_tiny"), "base"
    )


def test_base_is_the_base_model_evaluated_with_no_epochs(declared_methods, tiny_prepared):
    from harness.models.base import build_model
    from harness.phases.pipeline import evaluate_final, fine_tune

    result = fine_tune(tiny_prepared, "base", seed=0, progress=False)
    assert result.history == [] and result.stages == [] and result.best_epoch == -1
    # the test metrics every fine-tuned run logs (tests/test_methods.py)
    assert set(result.test_metrics) == {"test/acc", "test/acc_many", "test/acc_medium", "test/acc_few"}
    assert set(result.val_metrics) == {f"val/{k}" for k in ("acc", "acc_many", "acc_medium", "acc_few")}
    data = tiny_prepared.data
    model = build_model(tiny_prepared.cfg, data.num_classes, data.channels, data.class_names)
    model.load_state_dict(tiny_prepared.base_state)
    expected, _ = evaluate_final(model, data, torch.device("cpu"))
    assert result.test_metrics == pytest.approx(expected)
    assert np.isclose(result.test_metrics["test/acc"], expected["test/acc"])


@pytest.mark.slow  # one tracked run through `harness run`
def test_harness_run_logs_the_base_row_like_any_method(declared_methods, cached_workdir):
    from harness.cli import main
    from harness.runs.tracking import client

    wd = str(cached_workdir)
    assert main(["run", "-e", "digits_lt_tiny", "--workdir", wd, "--quiet", "-m", "base", "-s", "0"]) == 0
    runs = client(cached_workdir).search_runs(
        [e.experiment_id for e in client(cached_workdir).search_experiments()], "tags.method = 'base'"
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics = runs[0].data.metrics
    assert {"test/acc", "test/acc_few", "best/val/acc"} <= set(metrics) and metrics["best/epoch"] == -1


def test_the_plan_shows_no_epochs_for_base(declared_methods):
    from harness.config import load_config
    from harness.plan.epochs import make_plan
    from harness.plan.output import format_plan

    plan = make_plan(load_config("digits_lt_tiny"), ["base", "plain"])
    assert plan["methods"]["base"]["total_steps"] == 0 and plan["methods"]["plain"]["total_steps"] > 0
    assert "base: 0 steps in all\n  no epochs: the base model, evaluated as trained" in format_plan(plan)
