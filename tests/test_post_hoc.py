"""The post-hoc baselines on a run's selected model: WiSE-FT's interpolation and τ-normalisation's head, the grid value
chosen on validation, the metrics a finished run logs, and the report's rows for them."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from harness.config import load_config
from harness.models.base import HarnessModel, build_model
from harness.phases import post_hoc
from harness.phases.post_hoc import TauNorm, Variant, Wise, interpolate, measure, tau_normalised
from reports.post_hoc import with_post_hoc_rows

NAMES = ["zebra", "wild boar", "tiger"]


def cfg_for(model: str, params: str = "{}", *more: str):
    return load_config("digits_lt_tiny", [f"model.name={model}", f"model.params={params}", *more])


@pytest.fixture(scope="module")
def flyp():
    torch.manual_seed(0)
    return build_model(cfg_for("clip_flyp", "{tiny: true}"), len(NAMES), 3, NAMES)


def logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def test_wise_alpha_zero_is_the_zero_shot_model_and_one_the_fine_tuned(flyp):
    x = torch.rand(4, 3, 32, 32)
    zero_shot = post_hoc.cpu_state(flyp)
    expected_zero_shot = logits(flyp, x)
    with torch.no_grad():  # "fine-tuning": every weight moves
        for p in flyp.parameters():
            p.add_(0.05 * torch.randn_like(p))
    expected_fine_tuned = logits(flyp, x)
    assert not torch.allclose(expected_zero_shot, expected_fine_tuned)
    wise = Wise(flyp, zero_shot)
    try:
        wise.set(flyp, 0.0)
        torch.testing.assert_close(logits(flyp, x), expected_zero_shot)
        wise.set(flyp, 1.0)
        torch.testing.assert_close(logits(flyp, x), expected_fine_tuned)
        wise.set(flyp, 0.5)
        halfway = logits(flyp, x)
        assert not torch.allclose(halfway, expected_zero_shot) and not torch.allclose(halfway, expected_fine_tuned)
    finally:
        wise.restore(flyp)
    torch.testing.assert_close(logits(flyp, x), expected_fine_tuned)  # it leaves with the fine-tuned weights


def test_interpolation_keeps_integer_tensors_of_the_fine_tuned_model():
    zero, tuned = {"w": torch.zeros(2), "n": torch.tensor(1)}, {"w": torch.ones(2), "n": torch.tensor(7)}
    mixed = interpolate(zero, tuned, 0.3)
    torch.testing.assert_close(mixed["w"], torch.full((2,), 0.3))
    assert mixed["n"].item() == 7


def test_tau_zero_keeps_the_logits_and_tau_one_gives_unit_norm_class_vectors():
    torch.manual_seed(0)
    model = build_model(cfg_for("small_cnn", "{width: 8}"), num_classes=5, channels=1)
    with torch.no_grad():
        model.head.weight.mul_(torch.arange(1, 6, dtype=torch.float)[:, None])  # class norms far apart
    x = torch.rand(16, 1, 28, 28)
    before = logits(model, x)
    tau = TauNorm(model)
    tau.set(model, 0.0)
    torch.testing.assert_close(logits(model, x), before)
    assert torch.equal(logits(model, x).argmax(1), before.argmax(1))
    tau.set(model, 1.0)
    torch.testing.assert_close(model.head.weight.norm(dim=1), torch.ones(5))
    assert not torch.allclose(logits(model, x), before)
    tau.restore(model)
    torch.testing.assert_close(logits(model, x), before)


def test_tau_scales_each_class_logit_as_a_whole():
    weight, bias = torch.tensor([[3.0, 4.0], [0.0, 2.0]]), torch.tensor([1.0, -1.0])
    w, b = tau_normalised(weight, bias, 0.5)
    scale = torch.tensor([5.0, 2.0]) ** -0.5
    torch.testing.assert_close(w, weight * scale[:, None])
    torch.testing.assert_close(b, bias * scale)


class Recorded(Variant):
    """A variant whose value the fake evaluation reads off the model."""

    prefix, knob, order = "fake", "value", (0.0, 0.5, 1.0)

    def set(self, model, value):
        model.value = value

    def restore(self, model):
        model.value = None


class FakeData:
    val_split, test_splits, num_workers = "val", {"test": "test"}, 0


def fake_evaluation(scores: dict[str, dict[float, float]]):
    def evaluate_split(model, data, split, *args, **kwargs):
        return {"acc": scores[split][model.value]}, None

    return evaluate_split


def test_the_grid_value_is_chosen_on_validation_not_test(monkeypatch):
    scores = {"val": {0.0: 0.2, 0.5: 0.9, 1.0: 0.4}, "test": {0.0: 0.1, 0.5: 0.3, 1.0: 0.8}}
    monkeypatch.setattr(post_hoc, "evaluate_split", fake_evaluation(scores))
    model = nn.Identity()
    out = measure(Recorded(), model, FakeData(), "cpu", None, "val/acc")
    assert out == {"fake/value": 0.5, "fake/val/acc": 0.9, "fake/test/acc": 0.3}  # test's best (1.0) is not taken
    assert model.value is None  # restored


def test_a_tie_on_validation_keeps_the_first_value_tried(monkeypatch):
    scores = {"val": {0.0: 0.5, 0.5: 0.5, 1.0: float("nan")}, "test": {0.0: 0.1, 0.5: 0.3, 1.0: 0.8}}
    monkeypatch.setattr(post_hoc, "evaluate_split", fake_evaluation(scores))
    assert measure(Recorded(), nn.Identity(), FakeData(), "cpu", None, "val/acc")["fake/value"] == 0.0
    assert Wise.order[0] == 1.0 and TauNorm.order[0] == 0.0  # the model as trained is tried first


def test_which_variants_apply(flyp):
    cnn = build_model(cfg_for("small_cnn", "{width: 8}"), 3, 1)
    resnet = build_model(cfg_for("resnet10"), 3, 3)
    clip_pretrained = cfg_for("clip_flyp", "{tiny: true}", "train.init=pretrained")
    assert post_hoc.wise_applies(clip_pretrained, flyp) and not post_hoc.taunorm_applies(clip_pretrained, flyp)
    assert not post_hoc.wise_applies(cfg_for("clip_flyp", "{tiny: true}"), flyp)  # from the base model: no zero-shot
    for model in (cnn, resnet):
        assert post_hoc.taunorm_applies(cfg_for("small_cnn"), model)
        assert not post_hoc.wise_applies(clip_pretrained, model)
    assert not post_hoc.taunorm_applies(cfg_for("small_cnn", "{}", "train.post_hoc=[]"), cnn)
    assert post_hoc.zero_shot_state(clip_pretrained, flyp) is not None
    assert post_hoc.zero_shot_state(cfg_for("small_cnn"), cnn) is None  # no copy where WiSE-FT does not apply

    class NoHead(HarnessModel, nn.Sequential):
        pass

    assert not post_hoc.taunorm_applies(cfg_for("small_cnn"), NoHead(nn.Linear(2, 2)))


def test_post_hoc_is_in_no_run_key():
    from harness.config.keys import run_key

    on, off = cfg_for("small_cnn"), cfg_for("small_cnn", "{}", "train.post_hoc=[]")
    assert on.train.post_hoc == ["wise", "taunorm"] and off.train.post_hoc == []
    assert run_key(on, "plain") == run_key(off, "plain")


def test_an_unknown_post_hoc_variant_is_refused():
    from harness.config import ConfigError

    with pytest.raises(ConfigError, match="post_hoc"):
        cfg_for("small_cnn", "{}", "train.post_hoc=[wise, tau]")


def fake_runs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d"],
            "method": ["plain", "plain", "discl", "discl"],
            "loss": "ce",
            "label": ["plain", "plain", "discl", "discl"],
            "seed": [0, 1, 0, 1],
            "test/acc": [0.5, 0.6, 0.7, 0.8],
            "taunorm/tau": [0.3, 0.4, 0.5, 0.6],
            "taunorm/val/acc": [0.1, 0.1, 0.1, 0.1],
            "taunorm/test/acc": [0.55, 0.65, float("nan"), float("nan")],
        }
    )


def test_report_rows_sit_beside_their_method_with_the_post_hoc_metrics():
    runs, order = with_post_hoc_rows(fake_runs(), ["plain", "discl"])
    assert order == ["plain", "plain + τ-norm", "discl"]  # discl logged no τ-norm test metrics
    rows = runs[runs.label == "plain + τ-norm"]
    assert list(rows["test/acc"]) == [0.55, 0.65] and list(rows.seed) == [0, 1]
    assert (rows.method == "plain + τ-norm").all()


def test_a_report_over_runs_without_post_hoc_metrics_is_unchanged():
    plain = fake_runs().drop(columns=["taunorm/tau", "taunorm/val/acc", "taunorm/test/acc"])
    runs, order = with_post_hoc_rows(plain, ["plain", "discl"])
    assert runs is plain and order == ["plain", "discl"]


def test_results_table_shows_the_post_hoc_rows():
    from reports.tables import difference_table, results_table

    runs, order = with_post_hoc_rows(fake_runs(), ["plain", "discl"])
    table = results_table(runs, order)
    assert list(table.cells.index) == ["plain", "plain + τ-norm", "discl"]
    assert table.cells.loc["plain + τ-norm", "Overall"] == "60.00 (7.07)"
    diffs = difference_table(runs, "plain", order)
    assert "plain + τ-norm" in diffs.cells.index  # the τ-norm gain over plain itself, paired by seed


@pytest.mark.slow  # reads the session's finished runs (conftest's tiny_runs) and builds a report
def test_a_small_cnn_run_logs_taunorm_and_the_report_shows_its_rows(tiny_runs, tmp_path):
    from mlflow.tracking import MlflowClient
    from workdirs import copy_workdir

    from harness.cli import main

    client = MlflowClient(f"sqlite:///{tiny_runs / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits_lt_tiny").experiment_id])
    method_runs = [r for r in runs if "method" in r.data.tags and r.data.tags.get("report") != "true"]
    assert method_runs
    for r in method_runs:
        metrics = r.data.metrics
        assert 0 <= metrics["taunorm/tau"] <= 1 and "taunorm/val/acc" in metrics
        assert {"taunorm/test/acc", "taunorm/test/acc_few"} <= set(metrics)
        assert not any(k.startswith("wise/") for k in metrics)  # SmallCNN has no zero-shot weights
    wd = copy_workdir(tiny_runs, tmp_path / "wd")  # the report logs a run: a copy, tiny_runs stays as it is
    out = tmp_path / "report"
    assert main(["report", "-e", "digits_lt_tiny", "--workdir", str(wd), "--out", str(out)]) == 0
    table = pd.read_csv(out / "tables" / "results.csv", index_col="method")
    assert list(table.index[:2]) == ["plain", "plain + τ-norm"]
    assert "discl_diverse_to_specific + τ-norm" in table.index
    assert "plain + τ-norm" in (out / "tables" / "results.md").read_text()


def test_tau_from_the_trained_logits_equals_evaluating_the_normalised_head(tiny_prepared):
    """τ-norm's shortcut: one pass per split, then each τ's predictions from the trained logits divided by ‖w‖^τ,
    give the metrics a pass with the τ-normalised weights gives."""
    data = tiny_prepared.data
    torch.manual_seed(0)
    model = build_model(tiny_prepared.cfg, data.num_classes, data.channels)
    with torch.no_grad():
        model.head.weight.mul_(torch.linspace(0.2, 3.0, data.num_classes)[:, None])  # class norms far apart
    tau, seen = TauNorm(model), []
    for value in (0.0, 0.5, 1.0):
        tau.set(model, value)
        shortcut = tau.evaluate(model, data, data.val_split, torch.device("cpu"), None)
        assert shortcut == Variant.evaluate(tau, model, data, data.val_split, torch.device("cpu"), None), value
        seen.append(shortcut)
    assert seen[0] != seen[-1]  # τ changes the predictions here: the comparison is not between equal models
    tau.restore(model)
