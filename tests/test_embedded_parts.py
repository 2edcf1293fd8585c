"""The embedded generator's noise schedule (SDXL's, SNR-shifted) and the judge's broad augmentation."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from harness.config import ConfigError, build, load_config
from harness.data import load_dataset
from harness.generators.tiny_ddpm import TinyDDPM, TinyDDPMParams, build_unet, generator_key, noise_schedule
from harness.scorers.judge import JudgeParams, broad_augment, judge_key, train_judge


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("digits_field_tiny")
    return cfg, load_dataset(cfg).splits["pool"]


def snr(abar: torch.Tensor) -> torch.Tensor:
    return abar / (1 - abar)


def test_the_default_schedule_is_sdxl_scaled_linear_with_its_snr_shifted():
    p = TinyDDPMParams()
    assert (p.beta_schedule, p.beta_start, p.beta_end) == ("scaled_linear", 0.00085, 0.012)
    sdxl = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    unshifted = noise_schedule(TinyDDPMParams(snr_shift=1.0))
    assert torch.allclose(unshifted.alphas_cumprod, sdxl.alphas_cumprod, rtol=1e-4)
    ratio = snr(noise_schedule(p).alphas_cumprod.double()) / snr(sdxl.alphas_cumprod.double())
    assert torch.allclose(ratio, torch.full_like(ratio, p.snr_shift), rtol=1e-3)
    # λ = 0.5 (t = 500) keeps most of the source's signal; the DDPM linear schedule kept 0.28 of it
    assert noise_schedule(p).alphas_cumprod[500].sqrt() > 0.8
    assert DDPMScheduler(num_train_timesteps=1000).alphas_cumprod[500].sqrt() < 0.3


def test_sampling_uses_the_training_schedule_and_describe_reports_it():
    p = TinyDDPMParams(snr_shift=3.0, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    gen = TinyDDPM(build_unet(16, 1, 10, [16, 16, 32]), 10, steps=4, guidance_scale=2.0, params=p)
    assert torch.allclose(gen.scheduler.alphas_cumprod, noise_schedule(p).alphas_cumprod)
    assert type(gen.scheduler).__name__ == "DDIMScheduler"
    described = gen.describe()
    assert {k: described[k] for k in ("beta_schedule", "beta_start", "beta_end", "snr_shift")} == {
        "beta_schedule": "linear",
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "snr_shift": 3.0,
    }


def test_schedule_params_change_the_generator_key(tiny):
    cfg, pool = tiny
    base = generator_key(cfg, pool, TinyDDPMParams())
    for change in ({"snr_shift": 4.0}, {"beta_schedule": "linear"}, {"beta_start": 0.001}, {"beta_end": 0.02}):
        assert generator_key(cfg, pool, TinyDDPMParams(**change)) != base, change
    assert generator_key(cfg, pool, TinyDDPMParams()) == base


def test_bad_schedule_params_are_config_errors(tiny, tmp_path):
    cfg, _ = tiny
    with pytest.raises(ConfigError, match="generator.params.beta_schedule"):
        build(TinyDDPMParams, {"beta_schedule": "cosine"}, "generator.params")
    bad = load_config("digits_field_tiny", ["generator.params.snr_shift=0"])
    with pytest.raises(ConfigError, match="snr_shift"):
        TinyDDPM.from_config(bad, load_dataset(bad), tmp_path)


def test_broad_augment_changes_each_image_on_its_own_and_is_seeded():
    images = torch.zeros(32, 1, 16, 16)
    images[:, :, 4:12, 7:9] = 1.0  # a bar: bright strokes on a dark background
    a = broad_augment(images, torch.Generator().manual_seed(0), 0.6, 1.0)
    b = broad_augment(images, torch.Generator().manual_seed(0), 0.6, 1.0)
    assert torch.equal(a, b) and a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    assert (a - images).abs().mean() > 0.05  # backgrounds, placement, contrast: far from the clean images
    assert len({tuple(x.flatten().tolist()) for x in a}) == 32  # each image its own draws
    assert torch.equal(broad_augment(images, torch.Generator().manual_seed(0), 0.6, 0.0), images)


def test_the_judge_trains_on_augmented_images_and_its_key_knows(tiny, monkeypatch):
    cfg, pool = tiny
    import harness.scorers.judge as judge

    seen = []
    original = judge.broad_augment

    def spy(x, g, strength, p):
        seen.append((strength, p))
        return original(x, g, strength, p)

    monkeypatch.setattr(judge, "broad_augment", spy)
    x, y = torch.rand(40, 1, 16, 16), torch.arange(40) % 10
    train_judge(x, y, 10, JudgeParams(epochs=1, batch_size=20, augment="none"))
    assert seen == []
    train_judge(x, y, 10, JudgeParams(epochs=1, batch_size=20))
    assert seen == [(0.6, 0.8)] * 2
    keys = {judge_key(cfg, pool, JudgeParams(**c)) for c in ({}, {"augment": "none"}, {"augment_strength": 0.9},
                                                            {"augment_p": 0.5})}  # fmt: skip
    assert len(keys) == 4
    with pytest.raises(ConfigError, match="scorer.params.augment"):
        build(JudgeParams, {"augment": "clip"}, "scorer.params")


@pytest.mark.slow  # trains two judges for 15 epochs
def test_augmented_judge_rates_field_like_images_higher_than_the_clean_one():
    """On the tiny pool: the broad judge gives real field images of the right class more probability."""
    cfg = load_config("digits_field_tiny")
    data = load_dataset(cfg)
    pool, val = data.splits["pool"], data.splits["val"]
    x, y = torch.stack([pool.load(i) for i in range(len(pool))]), torch.as_tensor(pool.labels)
    xv, yv = torch.stack([val.load(i) for i in range(len(val))]), torch.as_tensor(val.labels)
    p_true = {}
    for augment in ("none", "broad"):
        model = train_judge(x, y, data.num_classes, JudgeParams(epochs=15, augment=augment))
        with torch.no_grad():
            p_true[augment] = float(model(xv).softmax(-1)[torch.arange(len(yv)), yv].mean())
    assert p_true["broad"] > p_true["none"] + 0.1, p_true
    assert np.isfinite(list(p_true.values())).all()


def test_the_generator_and_the_judge_train_in_their_own_cached_step(tmp_path, monkeypatch):
    """``prepare`` is the training step (cached by key); ``from_config`` after it only loads, and a second
    ``prepare`` trains nothing."""
    from harness.generators import tiny_ddpm
    from harness.scorers import judge
    from harness.scorers.judge import Judge

    cfg = load_config("digits_field_tiny", ["generator.params.train_steps=2", "scorer.params.epochs=1"])
    data = load_dataset(cfg)
    gen_path, judge_path = TinyDDPM.prepare(cfg, data, tmp_path), Judge.prepare(cfg, data, tmp_path)
    assert gen_path.is_file() and gen_path.parent == tmp_path / "generator"
    assert judge_path.is_file() and judge_path.parent == tmp_path / "scorer"
    stamps = gen_path.stat().st_mtime_ns, judge_path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(tiny_ddpm, "train_ddpm", no_training)
    monkeypatch.setattr(judge, "train_judge", no_training)
    assert TinyDDPM.prepare(cfg, data, tmp_path) == gen_path and Judge.prepare(cfg, data, tmp_path) == judge_path
    assert isinstance(TinyDDPM.from_config(cfg, data, tmp_path), TinyDDPM)
    assert isinstance(Judge.from_config(cfg, data, tmp_path), Judge)
    assert (gen_path.stat().st_mtime_ns, judge_path.stat().st_mtime_ns) == stamps
    other = load_config("digits_field_tiny", ["generator.params.train_steps=3", "scorer.params.epochs=1"])
    with pytest.raises(AssertionError, match="trained again"):  # another key is another training
        TinyDDPM.prepare(other, data, tmp_path)


def test_generators_and_scorers_without_training_have_nothing_to_prepare(tmp_path):
    from harness.generators.sd_img2img import SDImg2Img
    from harness.scorers.clip import ClipScorer

    assert SDImg2Img.prepare(None, None, tmp_path) is None and ClipScorer.prepare(None, None, tmp_path) is None
