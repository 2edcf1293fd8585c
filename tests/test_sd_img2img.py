"""The sd_img2img generator on a tiny random-weight SDXL-refiner-like pipeline (CPU, 32×32, a few steps)."""

import math
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from harness.config import load_config
from harness.data.base import DataError
from harness.generators.base import GenerationItem, denoising_steps
from harness.generators.sd_img2img import SDImg2Img, SDImg2ImgParams, img2img_strength, load_pipeline


def make_generator(scheduler="ddim", steps=4, size=32, extra=()):
    cfg = load_config(
        "digits_lt_tiny",
        [
            "generator.name=sd_img2img",
            f"generator.params={{tiny: true, width: {size}, height: {size}}}",
            f"spectrum.scheduler={scheduler}",
            f"spectrum.steps={steps}",
            "spectrum.guidance_scale=10",
            *extra,
        ],
    )
    return SDImg2Img.from_config(cfg, data=None, cache=None, device="cpu")


def source(color, size=32):
    rng = np.random.default_rng(sum(color))
    pixels = np.clip(np.array(color) + rng.integers(-40, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def items(seeds, sources=None, prompt="a photo of a cat"):
    sources = sources or [source((200, 40, 40))] * len(seeds)
    return [GenerationItem(f"img{i}", src, 0, prompt, seed) for i, (seed, src) in enumerate(zip(seeds, sources))]


def arrays(images):
    return [np.asarray(im, dtype=np.int16) for im in images]


@pytest.fixture(scope="module")
def gen():
    return make_generator()


def test_batch_equals_one_at_a_time_and_seeds_matter(gen):
    batch = arrays(gen.generate(items([11, 22, 33]), lam=0.5))
    alone = [arrays(gen.generate(items([s]), lam=0.5))[0] for s in (11, 22, 33)]
    assert [b.shape for b in batch] == [(32, 32, 3)] * 3
    for b, a in zip(batch, alone):
        assert np.abs(b - a).max() <= 1  # an image does not depend on its batch-mates
    assert np.abs(batch[0] - batch[1]).mean() > 1  # different seeds, different images
    again = arrays(gen.generate(items([11]), lam=0.5))[0]
    assert np.array_equal(again, alone[0])


@pytest.mark.slow  # a whole run (or several) for one check; the fast lane keeps unit tests
def test_same_images_as_one_pipeline_call_per_item_and_each_source_encoded_once():
    """The harness encodes each distinct source once and draws each item's posterior sample from the item's own
    generator, so its images are the ones diffusers gives for one call per (image, λ, seed)."""
    import torch
    from PIL import Image

    gen = make_generator(steps=5)
    red, blue = source((220, 30, 30)), source((30, 30, 220))
    work = [GenerationItem(f"src{i % 2}", (red, blue)[i % 2].copy(), 0, "a photo of a cat", 100 + i) for i in range(6)]
    calls = []
    encode = gen.pipe.vae.encode
    gen.pipe.vae.encode = lambda x, *a, **k: calls.append(len(x)) or encode(x, *a, **k)
    try:
        ours = {lam: arrays(gen.generate(work, lam)) for lam in (0.4, 0.8)}
    finally:
        gen.pipe.vae.encode = encode
    assert calls == [2]  # two distinct sources, one batch, reused for the second λ
    gen.posteriors.clear()
    gen.cached_bytes, gen.cache_bytes = 0, 0  # a full cache: each batch still encodes each source once
    calls.clear()
    gen.pipe.vae.encode = lambda x, *a, **k: calls.append(len(x)) or encode(x, *a, **k)
    try:
        uncached = arrays(gen.generate(work, 0.4)) + arrays(gen.generate(work, 0.8))
    finally:
        gen.pipe.vae.encode = encode
    assert calls == [2, 2] and all(np.array_equal(a, b) for a, b in zip(uncached, ours[0.4] + ours[0.8]))
    for lam, images in ours.items():
        for it, image in zip(work, images):
            ref = gen.pipe(
                prompt=it.prompt,
                image=it.source.resize(gen.size, Image.BICUBIC),
                strength=img2img_strength(gen.steps, lam),
                num_inference_steps=gen.steps,
                guidance_scale=gen.guidance_scale,
                generator=torch.Generator().manual_seed(it.seed),
            ).images[0]
            assert np.abs(image - np.asarray(ref, dtype=np.int16)).max() <= 1


def test_lambda_zero_ignores_the_source_and_high_lambda_stays_close(gen):
    red, blue = source((220, 30, 30)), source((30, 30, 220))
    text_only = arrays(gen.generate(items([5, 5], [red, blue]), lam=0.0))
    assert np.abs(text_only[0] - text_only[1]).max() <= 1  # true text-only: the source plays no part
    guided = arrays(gen.generate(items([5, 5], [red, blue]), lam=0.9))
    assert np.abs(guided[0] - guided[1]).mean() > 5  # with image guidance the source shows through


def test_zero_guidance_img2img_is_diffusers_img2img_at_strength_one():
    """The authors' λ = 0 (strength 1.0 in gene_img.py): the source noised to the first timestep, so it shows
    faintly; the images are the pipeline's own img2img at strength 1.0."""
    import torch

    gen = make_generator(extra=["spectrum.zero_guidance=img2img"])
    red, blue = source((220, 30, 30)), source((30, 30, 220))
    ours = arrays(gen.generate(items([5, 5], [red, blue]), lam=0.0))
    assert np.abs(ours[0] - ours[1]).mean() > 0.5  # the source shows through, faintly
    for src, image in zip((red, blue), ours):
        ref = gen.pipe(
            prompt="a photo of a cat",
            image=src.resize(gen.size, Image.BICUBIC),
            strength=1.0,
            num_inference_steps=gen.steps,
            guidance_scale=gen.guidance_scale,
            generator=torch.Generator().manual_seed(5),
        ).images[0]
        assert np.abs(image - np.asarray(ref, dtype=np.int16)).max() <= 1
    assert gen.describe()["zero_guidance"] == "img2img"


def paper_steps(steps, lam):
    """⌊(1 − λ)·steps⌋ in exact arithmetic, at least 1: the step count a λ must run."""
    return max(1, math.floor(steps * (1 - Fraction(str(lam)))))


@pytest.mark.parametrize("scheduler, steps", [("ddim", 50), ("euler", 20), ("default", 10), ("dpm", 7)])
def test_each_lambda_runs_its_share_of_the_denoising_steps(scheduler, steps):
    """Counted UNet calls (classifier-free guidance batches cond + uncond into one): λ = 0.9 at 50 steps runs 5,
    not the 4 that strength = 1 − λ = 0.0999… gives in diffusers."""
    import torch

    gen = make_generator(scheduler=scheduler, steps=steps, size=16)
    calls = []

    def unet(sample, *args, return_dict=True, **kwargs):  # counts, and predicts zero noise (no compute)
        calls.append(len(sample))
        return (torch.zeros_like(sample),) if not return_dict else None

    gen.pipe.unet.forward = unet
    counts = {}
    for lam in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9):
        calls.clear()
        gen.generate(items([3, 4], [source((120, 60, 200), size=16)] * 2), lam)
        assert set(calls) <= {4}  # cond + uncond of both items in one call
        counts[lam] = len(calls)
    assert counts == {lam: paper_steps(steps, lam) for lam in counts}


def test_strength_gives_the_step_count_for_any_lambda_and_step_count():
    """What diffusers' ``get_timesteps`` runs for the strength we pass, over a grid of λ and step counts."""
    for steps in range(1, 101):
        for k in range(0, 100):
            lam = k / 100
            strength = img2img_strength(steps, lam)
            assert 0 < strength <= 1
            assert min(int(steps * strength), steps) == denoising_steps(steps, lam) == paper_steps(steps, lam)


def test_describe_records_settings():
    gen = make_generator(scheduler="euler", steps=3, size=40)
    d = gen.describe()
    assert d["scheduler"] == "EulerDiscreteScheduler" and d["steps"] == 3 and d["guidance_scale"] == 10
    assert d["dtype"] == "torch.float32" and d["size"] == [40, 40] and d["pipeline"].startswith("StableDiffusionXL")
    assert make_generator("ddim").describe()["scheduler"] == "DDIMScheduler"
    assert gen.generate(items([1]), lam=0.9)[0].size == (40, 40)  # λ = 0.9 with 3 steps still runs one step


def test_missing_weights_is_one_line_error(tmp_path):
    for model in (str(tmp_path / "no-such-folder"), "someone/not-in-the-cache"):
        with pytest.raises(DataError) as err:
            load_pipeline(SDImg2ImgParams(model=model), dtype=None)
        msg = str(err.value)
        assert "\n" not in msg and model in msg and "download" in msg and "generator.params.model" in msg


def test_unknown_scheduler_is_an_error():
    with pytest.raises(ValueError, match="spectrum.scheduler"):
        make_generator(scheduler="warp")


def test_aspect_keep_keeps_each_sources_shape_in_multiples_of_the_vae_scale_one_call_per_size():
    """The authors pass each image as read; diffusers rounds its size down to multiples of the VAE's scale factor
    (8 for SDXL, 2 for the tiny pipeline). Items of one size share a pipeline call, the images come back in the
    items' order, and an image equals its own call's."""
    gen = make_generator(steps=2, extra=["generator.params.aspect=keep"])
    wide, tall = source((200, 40, 40), size=32).resize((43, 21)), source((40, 40, 200), size=32).resize((20, 35))
    calls = []
    pipe = gen.pipe.__class__.__call__
    gen.pipe.__class__.__call__ = lambda self, *a, **k: calls.append(len(k["prompt"])) or pipe(self, *a, **k)
    try:
        images = gen.generate(items([1, 2, 3], [wide, tall, wide]), lam=0.5)
    finally:
        gen.pipe.__class__.__call__ = pipe
    assert gen.pipe.vae_scale_factor == 2
    assert [im.size for im in images] == [(42, 20), (20, 34), (42, 20)]
    assert sorted(calls) == [1, 2]  # one call per size
    alone = gen.generate(items([2], [tall]), lam=0.5)[0]
    assert np.abs(arrays([alone])[0] - arrays([images[1]])[0]).max() <= 1
    assert [im.size for im in make_generator(steps=2).generate(items([1], [wide]), 0.5)] == [(32, 32)]  # squash
    assert gen.describe()["size"].startswith("source")


def test_unknown_aspect_is_a_config_error():
    from harness.config import ConfigError

    with pytest.raises(ConfigError, match="generator.params.aspect"):
        make_generator(extra=["generator.params.aspect=crop"])
