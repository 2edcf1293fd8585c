"""The paper's training recipe at scale (issue "Paper-faithful at scale"): transforms, the starting point, the
re-balancing control's epochs, the adaptive guidance-validation set, S_λ, base-model resume and same numbers in
every process."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from fakes import write_fake_imagenet_lt, write_fake_iwildcam
from torchvision.transforms import v2

import harness.phases.fine_tune as phase5
from harness.config import ConfigError, load_config
from harness.core.registry import get_method
from harness.data.base import FileImages
from harness.engine.evaluate import class_probs
from harness.engine.train import Part, batches
from harness.phases.base_model import train_base
from harness.phases.curriculum import epoch_parts, probe_sets, split_guidance_val
from harness.phases.pipeline import fine_tune, prepare

COUNTS = (25, 22, 12, 10, 6, 3)
QUICK = [
    "base.epochs=1",
    "train.epochs=2",
    "train.curriculum_epochs=2",
    "spectrum.seeds=1",
    "spectrum.steps=4",
    "data.shot_groups={many: 20, few: 8}",
]


def with_train(prep, **changes):
    """The prepared experiment with other ``train`` settings (the pool and base model stay)."""
    cfg = prep.cfg.model_copy(update={"train": prep.cfg.train.model_copy(update=changes)})
    return dataclasses.replace(prep, cfg=cfg)


# --------------------------------------------------------------------------- item 2: transforms


def test_paper_transforms_are_config():
    lt = load_config("imagenet_lt_discl")
    assert [next(iter(s)) if isinstance(s, dict) else s for s in lt.data.train_transform] == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "ColorJitter",
    ]
    assert lt.data.eval_transform == [{"Resize": {"size": 256}}, {"CenterCrop": {"size": 224}}]
    wild = load_config("iwildcam_discl")
    assert wild.data.eval_transform == [
        {"Resize": {"size": 224, "interpolation": "bicubic"}},
        {"CenterCrop": {"size": 224}},
    ]
    assert wild.data.train_transform == [
        {"RandomResizedCrop": {"size": 224, "scale": [0.9, 1.0], "interpolation": "bicubic"}}
    ]  # FLYP's train crop (issue 19 item 6)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("[{RandomResizedCrp: {size: 16}}]", "did you mean RandomResizedCrop"),
        ("[{RandomResizedCrop: {size: 12}}]", "must end in uint8 images of 16×16"),
        ("[{Resize: {size: 16, interpolation: bicubc}}]", "interpolation 'bicubc'"),
        ("[{CenterCrop: {sise: 16}}]", "CenterCrop"),
    ],
)
def test_bad_transform_is_one_line(spec, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config("digits_lt_tiny", [f"data.train_transform={spec}"])
    assert "\n" not in str(e.value)


def test_real_and_synthetic_training_images_take_the_train_transform(tmp_path):
    """Both parts of an epoch, a real image and a synthetic one, reach the model through the same transform,
    as uint8 before the float conversion."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for name in ("real.jpg", "synthetic.png"):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    real = FileImages([paths[0]], [0], ["r"], size=16)
    synthetic = FileImages([paths[1]], [1], ["s"], size=16)
    flip_crop = v2.Compose([v2.CenterCrop(16), v2.RandomHorizontalFlip(p=1.0)])
    seen = {}
    for x, y in batches(
        [Part(real, np.array([0])), Part(synthetic, np.array([0]))],
        2,
        torch.Generator(),
        torch.device("cpu"),
        transform=flip_crop,
    ):
        for xi, yi in zip(x, y):
            seen[int(yi)] = xi
    for label, images in ((0, real), (1, synthetic)):
        expected = flip_crop(images.decode(0)).float() / 255
        assert seen[label].dtype == torch.float32 and torch.equal(seen[label], expected)


def test_evaluation_takes_the_eval_transform(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 30, 3), 7, dtype=np.uint8)).save(tmp_path / "a.png")
    images = FileImages([tmp_path / "a.png"], [0], ["a"], size=16)
    inputs = []

    def model(x):
        inputs.append(x)
        return torch.zeros(len(x), 2)

    model.eval = lambda: None
    class_probs(model, images, torch.device("cpu"), transform=v2.Compose([v2.CenterCrop(16)]))
    assert inputs[0].shape == (1, 3, 16, 16) and torch.allclose(inputs[0], torch.full_like(inputs[0], 7 / 255))


# --------------------------------------------------------------------------- item 3: starting point


def initial_weights(monkeypatch) -> list[dict]:
    seen = []
    original = phase5.Trainer

    def recording(model, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return original(model, *args, **kwargs)

    monkeypatch.setattr(phase5, "Trainer", recording)
    return seen


def test_iwildcam_fine_tunes_pretrained_clip_not_the_base_model(tmp_path, monkeypatch):
    root = write_fake_iwildcam(tmp_path / "wilds")
    cfg = load_config(
        "iwildcam_discl_tiny",
        [f"data.root={root}", "base.epochs=1", "train.epochs=1", "train.curriculum_epochs=0"],
        methods=["plain"],
    )
    assert cfg.train.init == "pretrained" and load_config("imagenet_lt_discl").train.init == "base"
    prep = prepare(cfg, tmp_path / "wd", methods=["plain"], progress=False)
    seen = initial_weights(monkeypatch)
    fine_tune(prep, "plain", seed=0, progress=False)
    fine_tune(with_train(prep, init="base"), "plain", seed=0, progress=False)
    from harness.models.base import build_model

    fresh = build_model(cfg, prep.data.num_classes, 3, prep.data.class_names).state_dict()
    pretrained, from_base = seen
    assert all(torch.equal(pretrained[k], fresh[k]) for k in fresh)
    assert all(torch.equal(from_base[k], prep.base_state[k]) for k in fresh)
    assert any(not torch.equal(pretrained[k], prep.base_state[k]) for k in fresh)


def test_pretrained_init_without_pretrained_weights_is_refused():
    with pytest.raises(ConfigError, match="no pretrained weights"):
        load_config("digits_lt_tiny", ["train.init=pretrained"])


# --------------------------------------------------------------------------- item 4: the re-balancing control


def recorded_parts(monkeypatch) -> list[list[Part]]:
    from harness.engine.train import Trainer

    seen, original = [], Trainer.train_epoch

    def recording(self, parts, epoch, max_steps=None):
        seen.append(parts)
        return original(self, parts, epoch, max_steps)

    monkeypatch.setattr(Trainer, "train_epoch", recording)
    return seen


@pytest.mark.parametrize("paper", ["imagenet_lt", "iwildcam"])
def test_control_has_disclss_epoch_composition(tiny_prepared, paper, monkeypatch):
    """plain_rebalanced sees DisCL's epochs: the same images per epoch and the same tail share, with real hard
    images standing in for the synthetic ones; on iWildCam's settings (S_λ, no real hard images in stages) too."""
    prep = (
        tiny_prepared
        if paper == "imagenet_lt"
        else with_train(tiny_prepared, synthetic_scale=None, include_hard_real=False)
    )
    cur = prep.cfg.train.curriculum_epochs
    discl = fine_tune(prep, "discl_diverse_to_specific", seed=0, progress=False).history
    parts = recorded_parts(monkeypatch)
    control = fine_tune(prep, "plain_rebalanced", seed=0, progress=False).history
    plain = fine_tune(prep, "plain", seed=0, progress=False).history
    for d, c in zip(discl, control):
        assert c["curriculum/images"] == d["curriculum/images"]
        assert c["curriculum/tail_share"] == pytest.approx(d["curriculum/tail_share"], abs=0.01)
        assert c["curriculum/synthetic"] == 0 and c["curriculum/lambda"] == 1.0
    assert all(d["curriculum/tail_share"] > p["curriculum/tail_share"] for d, p in zip(discl[:cur], plain[:cur]))
    hard = set(np.unique(prep.hard))
    for epoch in parts[:cur]:
        stand_ins = epoch[-1]
        assert stand_ins.images is prep.data.train and set(stand_ins.indices) <= hard
        assert len(stand_ins.indices) > len(set(stand_ins.indices))  # drawn with replacement


# --------------------------------------------------------------------------- item 5: guidance-validation


def test_adaptive_never_trains_on_held_out_sources(tiny_prepared, monkeypatch):
    parts = recorded_parts(monkeypatch)
    result = fine_tune(tiny_prepared, "discl_adaptive", seed=0, progress=False)
    _, held = split_guidance_val(tiny_prepared, get_method("discl_adaptive")(), seed=0)
    assert len(held) and len(parts) == tiny_prepared.cfg.train.epochs  # the probe trains no stretch of its own
    pool = tiny_prepared.pool
    for epoch in parts:
        for part in epoch:
            if part.images is tiny_prepared.pool_images:
                assert not set(pool.source_index.iloc[part.indices]) & set(held)
            else:
                assert not set(part.indices) & set(held)
    assert len(result.stages) == tiny_prepared.cfg.train.curriculum_epochs


def test_every_level_is_probed_on_the_same_kept_sources(tiny_prepared):
    levels = tuple(tiny_prepared.cfg.curriculum.adaptive_levels)
    _, held = split_guidance_val(tiny_prepared, get_method("discl_adaptive")(), seed=0)
    sets = probe_sets(tiny_prepared, held, levels)
    pool = tiny_prepared.pool.set_index("key")
    sources = None
    for lam, images in sets.items():
        rows = pool.loc[images.ids]
        assert rows.keep.all() and np.allclose(rows.lam, lam) and set(rows.source_index) <= set(held)
        assert rows.source_index.is_unique
        sources = sources or list(rows.source_index)
        assert list(rows.source_index) == sources


def test_random_changes_level_as_often_as_adaptive():
    for epochs in (4, 15, 60):
        levels = (0.5, 0.7, 0.9)
        assert (
            get_method("discl_random")().n_stages(levels, epochs)
            == get_method("discl_adaptive")().n_stages(levels, epochs)
            == epochs
        )


def test_rank_zeros_choice_is_taken(tiny_prepared, monkeypatch):
    """Under torchrun every rank computes the stage's levels, and ``distributed.share`` hands out rank 0's."""
    from harness.core import distributed

    monkeypatch.setattr(distributed, "share", lambda obj: (0.9,))
    result = fine_tune(tiny_prepared, "discl_adaptive", seed=0, progress=False)
    assert {tuple(s["levels"]) for s in result.stages} == {(0.9,)}


# --------------------------------------------------------------------------- item 12: S_λ


def test_null_scale_trains_on_every_kept_image_of_the_level(tiny_prepared):
    prep = with_train(tiny_prepared, synthetic_scale=None)
    method = get_method("fixed_guidance")(lam=0.5)
    sources = np.unique(prep.hard)
    parts = epoch_parts(prep, method, (0.5,), True, sources, np.random.default_rng(0))
    pool = prep.pool
    expected = np.flatnonzero((pool.keep & np.isclose(pool.lam, 0.5)).to_numpy())
    assert np.array_equal(parts[-1].indices, expected) and len(expected) > len(sources)  # more than scale 1.0
    assert load_config("iwildcam_discl").train.synthetic_scale is None
    assert load_config("imagenet_lt_discl").train.synthetic_scale is None  # train.tail_share decides (issue 19)


# --------------------------------------------------------------------------- items 10, 11: base model


def base_weights(cfg, workdir):
    from harness.data import load_dataset

    data = load_dataset(cfg)
    state, _ = train_base(cfg, data, workdir / "cache", torch.device("cpu"))
    return state


def test_base_model_does_not_depend_on_the_global_rng_before_it(tiny_cfg, tmp_path):
    torch.manual_seed(123)
    a = base_weights(tiny_cfg, tmp_path / "a")
    torch.manual_seed(456)
    b = base_weights(tiny_cfg, tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_killed_base_training_resumes_to_the_same_weights(tiny_cfg, tmp_path, monkeypatch):
    from harness.engine.train import Trainer

    full = base_weights(tiny_cfg, tmp_path / "full")
    original, calls = Trainer.train_epoch, []

    def dies_at_third_epoch(self, parts, epoch, max_steps=None):
        calls.append(epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, parts, epoch, max_steps)

    monkeypatch.setattr(Trainer, "train_epoch", dies_at_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        base_weights(tiny_cfg, tmp_path / "killed")
    assert list((tmp_path / "killed" / "cache" / "base").glob("*/checkpoint.pt"))
    calls.clear()
    resumed = base_weights(tiny_cfg, tmp_path / "killed")
    assert calls == [2]  # only the epoch the kill interrupted
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert not list((tmp_path / "killed" / "cache" / "base").glob("*/checkpoint.pt"))


def cold_run(root, workdir) -> subprocess.Popen:
    """A fresh process that runs the tiny ImageNet-LT experiment into ``workdir`` and prints each run's metric
    histories as JSON (read them with ``cold_run_metrics``)."""
    code = (
        "import json, sys; from harness.config import load_config; from harness.runs.runner import run_experiment; "
        "from harness.runs.tracking import client; "
        "cfg = load_config('imagenet_lt_discl_tiny', sys.argv[2:]); "
        "res = run_experiment(cfg, __import__('pathlib').Path(sys.argv[1]), progress=False); "
        "c = client(__import__('pathlib').Path(sys.argv[1])); "
        "print(json.dumps({r.method: {k: [(m.step, m.value) for m in c.get_metric_history(r.run_id, k)] "
        "for k in c.get_run(r.run_id).data.metrics} for r in res.itertuples()}))"
    )
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONHASHSEED": "random"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            str(workdir),
            f"data.root={root}",
            *QUICK,
            "methods=[plain, discl_diverse_to_specific]",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def cold_run_metrics(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1500)
    assert proc.returncode == 0, err[-3000:]
    metrics = json.loads(out.strip().splitlines()[-1])
    for run in metrics.values():
        run.pop("system/cpu_utilization_percentage", None)
        for name in [k for k in run if k.startswith("time/") or k.startswith("system/")]:
            run.pop(name)
    return metrics


@pytest.mark.slow
def test_same_config_same_metrics_in_fresh_processes(tmp_path):
    root = write_fake_imagenet_lt(tmp_path / "imagenet", counts=COUNTS, image_size=32)
    # one after the other: at once, two processes on 2 cores took 132 s on CI against 44 s in turn
    first = cold_run_metrics(cold_run(root, tmp_path / "one"))
    second = cold_run_metrics(cold_run(root, tmp_path / "two"))
    assert set(first) == {"plain", "discl_diverse_to_specific"}
    assert "test/acc" in first["plain"] and "curriculum/tail_share" in first["plain"]
    assert first == second
