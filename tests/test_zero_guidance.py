"""``spectrum.zero_guidance``: λ = 0 from pure noise (ours) or as img2img at strength 1.0 (the authors'); a generator
that cannot run the latter refuses the setting in one line; the setting enters the pool and image-store keys only
when set."""

import numpy as np
import pytest
import torch
from PIL import Image

from harness.config import ConfigError, load_config
from harness.config.keys import image_store_key, pool_key
from harness.generators.base import GenerationItem
from harness.generators.tiny_ddpm import TinyDDPM, build_unet


def tiny_ddpm(zero_guidance):
    torch.manual_seed(0)
    return TinyDDPM(build_unet(16, 3, 4, [16, 16, 32]), 4, steps=4, guidance_scale=2.0, zero_guidance=zero_guidance)


def two_sources(lam, gen):
    red, blue = (Image.new("RGB", (16, 16), c) for c in ((230, 20, 20), (20, 20, 230)))
    items = [GenerationItem(f"s{i}", src, 1, "a photo", 7) for i, src in enumerate((red, blue))]
    return [np.asarray(im, dtype=np.int16) for im in gen.generate(items, lam)]


def test_tiny_ddpm_honours_img2img_at_lambda_zero():
    pure = two_sources(0.0, tiny_ddpm("pure_noise"))
    assert np.array_equal(pure[0], pure[1])  # pure noise: the source plays no part
    kept = two_sources(0.0, tiny_ddpm("img2img"))
    assert np.abs(kept[0] - kept[1]).max() > 0  # the first timestep keeps a trace of each source
    assert tiny_ddpm("img2img").describe()["zero_guidance"] == "img2img"


def test_a_generator_that_cannot_run_img2img_at_zero_refuses_the_setting(monkeypatch):
    monkeypatch.setattr(TinyDDPM, "zero_guidance_img2img", False)
    with pytest.raises(ConfigError) as e:
        load_config("digits_lt_tiny", ["spectrum.zero_guidance=img2img"])
    assert ": spectrum.zero_guidance: " in str(e.value) and "\n" not in str(e.value)


def test_zero_guidance_enters_the_pool_and_store_keys_only_when_set():
    ours = load_config("imagenet_lt_discl_tiny")
    theirs = load_config("imagenet_lt_discl_tiny", ["spectrum.zero_guidance=img2img"])
    assert pool_key(ours, 1) != pool_key(theirs, 1)
    assert image_store_key(ours) != image_store_key(theirs)
    with pytest.raises(ConfigError):
        load_config("imagenet_lt_discl_tiny", ["spectrum.zero_guidance=noise"])
