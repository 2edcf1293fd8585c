"""The recipe as a checked table (`harness recipe`), and the settings it checks that change ours: iWildCam's train
crop, ImageNet-LT's weight decay and FLYP's fp32 logits under autocast."""

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode, v2

from harness.config import load_config
from harness.config.transforms import build_transform

# --------------------------------------------------------------------------- iWildCam's train crop


@pytest.mark.parametrize("experiment", ["iwildcam_discl", "iwildcam_suite"])
def test_iwildcam_trains_on_flyps_random_resized_crop(experiment):
    cfg = load_config(experiment)
    train = build_transform(cfg.data.train_transform, cfg.data.image_size)
    crops = [t for t in train.transforms if isinstance(t, v2.RandomResizedCrop)]
    assert len(crops) == 1 and not any(isinstance(t, v2.CenterCrop) for t in train.transforms)
    crop = crops[0]
    assert tuple(crop.size) == (224, 224)
    assert tuple(crop.scale) == (0.9, 1.0)
    assert crop.interpolation == InterpolationMode.BICUBIC
    # a 4:3 image (a 16:9 one is outside the crop's ratio range at scale ≥ 0.9, and torchvision then takes the
    # same fixed 4:3 centre crop every time, in FLYP's code too)
    image = torch.randint(0, 255, (3, 300, 400), dtype=torch.uint8)
    torch.manual_seed(0)
    a, b = train(image), train(image)
    assert a.shape == b.shape == (3, 224, 224) and a.dtype == torch.uint8
    assert not torch.equal(a, b)  # random, unlike the eval centre crop
    evaluate = build_transform(cfg.data.eval_transform, cfg.data.image_size)
    assert torch.equal(evaluate(image), evaluate(image))


# --------------------------------------------------------------------------- ImageNet-LT's optimizer


@pytest.mark.parametrize("experiment", ["imagenet_lt_discl", "imagenet_lt_suite", "imagenet_lt_bs_suite"])
def test_imagenet_lt_fine_tunes_with_adam_and_weight_decay_1e_5(experiment):
    from harness.engine.train import make_optimizer

    cfg = load_config(experiment)
    optimizer = make_optimizer(torch.nn.Linear(3, 2), cfg.train)
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


# --------------------------------------------------------------------------- FLYP's logits in fp32


def tiny_flyp():
    from harness.models.base import build_model

    cfg = load_config("digits_lt_tiny", ["model.name=clip_flyp", "model.params={tiny: true}", "train.init=base"])
    return build_model(cfg, 3, 3, ["cat", "dog", "bird"])


def test_flyp_logits_loss_and_probe_are_fp32_under_bf16_autocast():
    from harness.data.base import TensorImages
    from harness.engine.evaluate import class_probs

    model = tiny_flyp()
    x = torch.rand(4, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.train()
        loss = model.loss(x, y, torch.zeros_like(y))  # each sample's template index
        model.eval()
        logits = model(x)
    assert logits.dtype == torch.float32
    assert loss.dtype == torch.float32
    with torch.no_grad():
        reference = model(x)  # fp32 throughout
    # the features still come from bf16 matmuls; the scaled cosines themselves lose no digits to bf16
    assert torch.allclose(logits.detach(), reference, atol=0.5)
    probs = class_probs(
        model, TensorImages(x, np.array([0, 1, 2, 0]), list("abcd")), torch.device("cpu"), amp=torch.bfloat16
    )
    assert probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


# --------------------------------------------------------------------------- `harness recipe`

PAPER_EXPERIMENTS = [
    name
    for name in __import__("harness.config", fromlist=["list_experiments"]).list_experiments()
    if name.startswith(("imagenet_lt_", "iwildcam_")) and not name.endswith("_tiny")
]
COVERED = {  # the settings every family's recipe must have a row for
    "generator",
    "scheduler",
    "denoising steps",
    "text guidance scale",
    "seeds per (image, λ)",
    "generated image size",
    "hard samples",
    "prompts",
    "class names",
    "CLIP filter",
    "regeneration tries",
    "model",
    "init",
    "epochs",
    "curriculum epochs",
    "optimizer",
    "learning rate",
    "weight decay",
    "batch size",
    "schedule / warm-up",
    "undersampling",
    "real hard images in stages",
    "adaptive hold-out",
    "adaptive measurement",
    "adaptive levels (real a candidate)",
    "train transform",
    "eval transform",
    "precision",
    "model selection",
}
COVERED |= {
    "generator seeds",
    "λ = 0",
    "hold-out scope",
    "adaptive rule's first comparison",
    "epoch length and LR span",
}
FAMILY_ONLY = {
    "imagenet_lt": {
        "image guidance levels (text vs code)",
        "stage schedule",
        "tail share",
        "synthetic scale",
        "post-curriculum epochs",
        "Balanced Softmax prior",
        "loss",
        "base model recipe",
        "shot groups",
        "the CE row (base model evaluated)",
        "generator input aspect",
        "CLIP scoring precision and prompt",
        "all_levels schedule",
        "adaptive training data",
    },
    "iwildcam": {
        "image guidance levels",
        "fixed guidance λ",
        "FLYP epoch definition",
        "all_levels volume",
        "step-budget control",
        "image decoding",
        "CLIP scoring precision",
        "real non-hard images in stages",
        "post-curriculum epochs",
        "non-adaptive curriculum",
        "adaptive decision point",
    },
}


def test_the_paper_experiments_are_found():
    assert {
        "imagenet_lt_discl",
        "imagenet_lt_suite",
        "imagenet_lt_bs_suite",
        "iwildcam_discl",
        "iwildcam_suite",
        "imagenet_lt_suite_code",
        "iwildcam_suite_code",
    } <= set(PAPER_EXPERIMENTS)


@pytest.mark.parametrize("experiment", PAPER_EXPERIMENTS)
def test_every_paper_experiment_has_its_recipe_and_every_deviation_a_reason(experiment):
    from harness.plan.recipe import COLUMNS, STATUSES, recipe, unexplained

    table = recipe(experiment)
    assert list(table.columns) == COLUMNS
    assert set(table.status) <= set(STATUSES)
    assert unexplained(table) == []
    assert table.setting.is_unique
    family = "imagenet_lt" if experiment.startswith("imagenet_lt") else "iwildcam"
    assert COVERED | FAMILY_ONLY[family] <= set(table.setting)
    assert (table.loc[table.status == "same", "reason"] == "").all()
    assert table.paper.str.len().gt(0).all() and table.authors.str.len().gt(0).all()


def row(table, setting):
    return table.set_index("setting").loc[setting]


def test_status_is_computed_from_the_resolved_config():
    from harness.plan.recipe import NO_REASON, recipe, unexplained

    assert row(recipe("imagenet_lt_discl"), "weight decay").status == "same"
    changed = recipe("imagenet_lt_discl", ["train.weight_decay=0.0", "train.lr=0.01"])
    assert row(changed, "weight decay").status == "deviation"
    assert row(changed, "weight decay").ours == "train.weight_decay = 0"
    assert row(changed, "learning rate").reason == NO_REASON
    assert unexplained(changed) == ["learning rate", "weight decay"]  # no reason recorded for either
    assert row(recipe("imagenet_lt_bs_suite"), "loss").status == "same"  # the BS rows expect Balanced Softmax
    assert row(recipe("imagenet_lt_discl", ["train.loss=balanced_softmax"]), "loss").status == "deviation"
    assert row(recipe("iwildcam_discl"), "fixed guidance λ").ours == "method_params.fixed_guidance.lam = 0.7"
    assert row(recipe("imagenet_lt_discl"), "adaptive hold-out").ours.startswith("curriculum.adaptive.holdout = ")


def test_a_key_that_does_not_exist_reads_not_implemented_and_needs_a_reason(monkeypatch):
    from harness.plan import recipe as r

    facts = r.recipe_facts()
    facts["imagenet_lt"] = [
        {"setting": "future", "paper": "p", "authors": "a.py", "keys": ["train.not_yet"], "expect": [1]},
        {"setting": "gone", "paper": "p", "authors": "a.py", "keys": ["train.not_yet"], "expect": ["<absent>"]},
        {"setting": "chosen", "paper": "p", "authors": "a.py", "keys": ["train.lr"], "reason": "our choice"},
    ]
    monkeypatch.setattr(r, "recipe_facts", lambda: facts)
    table = r.recipe("imagenet_lt_discl")
    assert row(table, "future").ours == "train.not_yet = not implemented"
    assert row(table, "future").status == "deviation"
    assert row(table, "gone").status == "same"
    assert row(table, "chosen").status == "deviation" and row(table, "chosen").reason == "our choice"
    assert r.unexplained(table) == ["future"]


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    import json

    from harness.cli import main

    out = tmp_path / "recipe.json"
    assert main(["recipe", "-e", "imagenet_lt_suite", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| setting | paper | authors | ours | status | reason |" in printed
    assert "regeneration tries" in printed
    rows = json.loads(out.read_text())
    assert rows and all(list(r) == ["setting", "paper", "authors", "ours", "status", "reason"] for r in rows)
    assert {r["status"] for r in rows} == {"same", "deviation", "cannot reproduce"}
    assert main(["recipe", "-e", "digits_lt_tiny"]) == 2  # no paper recipe: one line, not a traceback
    assert "no paper recipe" in capsys.readouterr().err


def test_the_paper_recipe_pages_settings_table_is_the_generated_one(tmp_path):
    from pathlib import Path

    from harness.plan.recipe import BEGIN, END, doc_block, main, replace_block

    page = Path(__file__).resolve().parent.parent / "docs" / "paper-recipe.md"
    text = page.read_text()
    section = text[text.index("## The settings, the paper's against ours") :]
    assert BEGIN in section and END in section
    assert replace_block(text, doc_block()) == text, "run: python -m harness.plan.recipe --write docs/paper-recipe.md"
    stale = tmp_path / "paper-recipe.md"
    stale.write_text(text.replace("| weight decay |", "| weight-decay |", 1))
    assert main(["--check", str(stale)]) == 1
    assert main(["--write", str(stale)]) == 0 and stale.read_text() == text
