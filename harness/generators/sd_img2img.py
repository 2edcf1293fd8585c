"""``sd_img2img``: the paper's generator. Stable Diffusion XL img2img (default: the SDXL refiner) through
diffusers, loaded from a local folder or the local Hugging Face cache only.

One pipeline call per (λ, batch): every item of a call shares λ, hence strength = 1 − λ and the timestep schedule,
and has its own ``torch.Generator`` seeded from ``item.seed``, so an image does not depend on its batch-mates
(up to floating-point differences between batch sizes on some GPU kernels).

λ = 0 is true text-only generation: instead of letting img2img noise the source to the first timestep (at
strength 1.0 diffusers still keeps a faint √ᾱ_t share of the source latents, ᾱ ≈ 0.005 for 50 leading-spaced
steps), we hand the pipeline pure-noise latents scaled by ``scheduler.init_noise_sigma``, as the text-to-image
pipeline does; the source image then only fixes the output size. ``spectrum.zero_guidance: img2img`` runs it as
the authors do instead: img2img from the source at strength 1.0.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from harness.config import ConfigError, build
from harness.core.registry import register_generator
from harness.generators.base import GenerationItem, Generator, Sampling, denoising_steps

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/stable-diffusion-xl-refiner-1.0"
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
}


def rounded_to_scale(width: int, height: int, scale: int) -> tuple[int, int]:
    """A size rounded down to multiples of the VAE's scale factor (8 for SDXL), as diffusers rounds it."""
    return max(scale, width // scale * scale), max(scale, height // scale * scale)


@dataclass
class SDImg2ImgParams:
    model: str = DEFAULT_MODEL  # a hub id (found in the local HF cache) or a folder
    width: int = 480
    height: int = 270  # rounded down to a multiple of the VAE's scale factor (8): 270 → 264
    # squash: every source resized to width × height | keep: each at its own size rounded down to multiples of the
    # VAE's scale factor, aspect kept, as the authors' pipeline's image processor does with the image they pass
    # as read (data_generation/ImageNet_LT/gene_img.py:247); one pipeline call per output size
    aspect: str = "squash"
    dtype: str = "auto"  # auto (float16 on CUDA, float32 on CPU) | float16 | bfloat16 | float32
    variant: str | None = None  # "fp16" when the copy holds only the fp16 variant files (model.fp16.safetensors)
    negative_prompt: str | None = None
    aesthetic_score: float = 6.0  # the refiner's conditioning (its defaults)
    negative_aesthetic_score: float = 2.5
    tiny: bool = False  # a tiny random-weight pipeline built in-process (tests, *_tiny experiments)
    tiny_seed: int = 0
    # torch.compile the UNet (CUDA only). Pays off for large spectra: 1.34x per denoising step measured on an H100
    # (SDXL-refiner shape, fp16, 480x264), after about 126 s of compilation and warm-up per process.
    compile: bool = False


ASPECTS = ("squash", "keep")


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def load_pipeline(p: SDImg2ImgParams, dtype: torch.dtype):
    """From a local folder or the local hub cache; never the network. A missing model is a one-line error."""
    if p.tiny:
        from harness.weights.tiny import tiny_sdxl_img2img

        return tiny_sdxl_img2img(p.tiny_seed, sample_size=max(p.width, p.height))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import AutoPipelineForImage2Image

    from harness.weights.local import load_error

    path = Path(p.model).expanduser()
    source = str(path) if path.exists() else p.model
    try:  # fp16-variant files load into float32 too: diffusers casts to torch_dtype. low_cpu_mem_usage (accelerate):
        # the weights go straight into empty modules, no random init first (seconds and GBs for SDXL)
        return AutoPipelineForImage2Image.from_pretrained(
            source,
            torch_dtype=dtype,
            variant=p.variant,
            local_files_only=True,
            add_watermarker=False,
            low_cpu_mem_usage=True,
        )
    except (OSError, ValueError) as e:
        raise load_error(p.model, p.variant, e, "generator.params.model", "holding the pipeline") from None


def img2img_strength(steps: int, lam: float) -> float:
    """The ``strength`` that makes diffusers' img2img run exactly ``denoising_steps(steps, λ)`` steps. Its
    ``get_timesteps`` runs ``min(int(steps * strength), steps)``; passing 1 − λ itself loses a step to float
    error (λ = 0.9 at 50 steps: 4 steps, not 5), so pass the middle of the interval that truncates to the count
    (diffusers rejects strength > 1; the full schedule is 1.0)."""
    return min(1.0, (denoising_steps(steps, lam) + 0.5) / steps)


def set_scheduler(pipe, name: str) -> None:
    """``default`` keeps the pipeline's own scheduler; otherwise one of SCHEDULERS built from its config."""
    if name == "default":
        return
    if name not in SCHEDULERS:
        raise ValueError(f"spectrum.scheduler must be default or one of {', '.join(SCHEDULERS)}, got {name!r}")
    import diffusers

    pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)


@register_generator("sd_img2img", params_class=SDImg2ImgParams)
class SDImg2Img(Generator):
    name = "sd_img2img"
    takes_scheduler = True  # any of SCHEDULERS, or the pipeline's own (default)
    zero_guidance_img2img = True

    def __init__(
        self,
        pipe,
        p: SDImg2ImgParams,
        steps: int,
        guidance_scale: float,
        device: torch.device,
        zero_guidance: str = "pure_noise",
    ):
        self.pipe, self.p, self.steps, self.guidance_scale = pipe, p, steps, guidance_scale
        self.zero_guidance = zero_guidance  # λ = 0: pure_noise | img2img (strength 1.0)
        if p.compile and torch.device(device).type == "cuda":
            self.pipe.unet = torch.compile(self.pipe.unet)
        self.device = torch.device(device)
        pipe.set_progress_bar_config(disable=True)
        if p.aspect not in ASPECTS:
            raise ConfigError(f"generator.params.aspect must be squash or keep, got {p.aspect!r}")
        self.size = self.multiple_of_scale(p.width, p.height)  # what diffusers will produce
        self.posteriors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # source → VAE (mean, std), CPU
        self.cached_bytes, self.cache_bytes = 0, 2 << 30  # ImageNet-LT's 1643 sources at 512×512: ≈ 215 MB

    @classmethod
    def from_config(cls, cfg, data, cache: Path | None, device="cpu") -> SDImg2Img:
        """The config adapter: ``generator.params`` and the spectrum's sampler settings (no data or cache)."""
        return cls.load(
            build(SDImg2ImgParams, cfg.generator.params, "generator.params"), Sampling.from_config(cfg), device
        )

    @classmethod
    def output_size(cls, cfg) -> tuple[int, int]:
        p = build(SDImg2ImgParams, cfg.generator.params, "generator.params")
        if p.aspect == "keep":  # each image its source's size: no one size an import could check
            raise ConfigError(
                "spectrum.pool with generator.params.aspect: keep is not supported (its images have each source's "
                "own size, which an import cannot check); generate the pool here, or use aspect: squash"
            )
        scale = 2 if p.tiny else 8  # the pipeline's vae_scale_factor: the tiny VAE has 2 blocks, SD's and SDXL's 4
        return rounded_to_scale(p.width, p.height, scale)

    @classmethod
    def load(cls, p: SDImg2ImgParams, sampling: Sampling, device="cpu") -> SDImg2Img:
        """The pipeline of ``p`` (local files only) with ``sampling``'s scheduler, on ``device``."""
        device = torch.device(device)
        dtype = torch_dtype(p.dtype, device)
        pipe = load_pipeline(p, dtype)
        set_scheduler(pipe, sampling.scheduler)
        pipe.to(device)  # a loaded pipeline already has its dtype; casting the tiny one only when asked
        if p.tiny and dtype != torch.float32:
            pipe.to(dtype=dtype)
        return cls(pipe, p, sampling.steps, sampling.guidance_scale, device, sampling.zero_guidance)

    def describe(self) -> dict:
        return {
            "model": "tiny-random" if self.p.tiny else self.p.model,
            "pipeline": type(self.pipe).__name__,
            "scheduler": type(self.pipe.scheduler).__name__,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "dtype": str(self.pipe.unet.dtype),
            "size": "source, rounded down to multiples of the VAE scale"
            if self.p.aspect == "keep"
            else list(self.size),
            "requested_size": [self.p.width, self.p.height],
            "aesthetic_score": self.p.aesthetic_score,
            "negative_prompt": self.p.negative_prompt,
            **({"zero_guidance": self.zero_guidance} if self.zero_guidance != "pure_noise" else {}),
        }

    def multiple_of_scale(self, width: int, height: int) -> tuple[int, int]:
        return rounded_to_scale(width, height, self.pipe.vae_scale_factor)

    def item_size(self, item: GenerationItem) -> tuple[int, int]:
        """(width, height) of an item's image: ``width × height``, or with ``aspect: keep`` its source's own size."""
        return self.multiple_of_scale(*item.source.size) if self.p.aspect == "keep" else self.size

    def text_only_latents(self, generators: list[torch.Generator], size: tuple[int, int]) -> torch.Tensor:
        """Pure noise, one draw per item's generator, scaled as the text-to-image pipelines scale it."""
        from diffusers.utils.torch_utils import randn_tensor

        scale = self.pipe.vae_scale_factor
        channels = self.pipe.unet.config.in_channels
        shape = (len(generators), channels, size[1] // scale, size[0] // scale)
        self.pipe.scheduler.set_timesteps(self.steps, device=self.device)
        noise = randn_tensor(shape, generator=generators, device=self.device, dtype=self.pipe.unet.dtype)
        return noise * self.pipe.scheduler.init_noise_sigma

    @staticmethod
    def source_key(item: GenerationItem) -> tuple:
        """An item's source by content, not only by id: one generator may see two datasets."""
        im = item.source
        return item.source_id, im.mode, im.size, hashlib.blake2b(im.tobytes(), digest_size=16).digest()

    def source_posteriors(
        self, items: list[GenerationItem], size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the VAE posterior of each item's source, one row per item. A spectrum repeats each
        source seeds × levels times; diffusers would encode it once per item, one image at a time. Here each
        distinct source in a batch is encoded once, and kept (on the CPU, up to ``cache_bytes``) for the next λ."""
        by_object: dict[tuple, tuple] = {}  # hash each source object once (the spectrum passes one per real image)
        for it in items:
            if (id(it.source), it.source_id) not in by_object:
                by_object[id(it.source), it.source_id] = self.source_key(it)
        keys = [by_object[id(it.source), it.source_id] for it in items]
        first: dict[tuple, Image.Image] = {}
        for k, it in zip(keys, items):
            first.setdefault(k, it.source)
        found = {k: self.posteriors[k] for k in first if k in self.posteriors}
        missing = [k for k in first if k not in found]
        vae = self.pipe.vae
        upcast = vae.config.force_upcast and vae.dtype == torch.float16  # SDXL's VAE overflows in fp16
        if missing and upcast:
            vae.to(dtype=torch.float32)
        try:
            for start in range(0, len(missing), 16):
                batch = missing[start : start + 16]
                pixels = self.pipe.image_processor.preprocess(
                    [first[k].convert("RGB").resize(size, Image.BICUBIC) for k in batch]
                )
                dist = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
                for k, mean, std in zip(batch, dist.mean.cpu(), dist.std.cpu()):
                    found[k] = (mean, std)
                    if self.cached_bytes + 2 * mean.nbytes <= self.cache_bytes:
                        self.posteriors[k] = (mean, std)
                        self.cached_bytes += 2 * mean.nbytes
        finally:
            if missing and upcast:
                vae.to(dtype=self.pipe.unet.dtype)
        mean, std = zip(*(found[k] for k in keys))
        return torch.stack(mean).to(self.device), torch.stack(std).to(self.device)

    def source_latents(
        self, items: list[GenerationItem], generators: list[torch.Generator], size: tuple[int, int]
    ) -> torch.Tensor:
        """Exactly what the pipeline's ``prepare_latents`` would start from, item by item: a posterior sample
        drawn from the item's own generator (so the noise drawn after it is the same too), then scaled."""
        from diffusers.utils.torch_utils import randn_tensor

        mean, std = self.source_posteriors(items, size)
        draws = torch.cat(
            [randn_tensor((1, *mean.shape[1:]), generator=g, device=mean.device, dtype=mean.dtype) for g in generators]
        )
        latents = (mean + std * draws).to(self.pipe.unet.dtype)
        vae = self.pipe.vae.config  # diffusers' VAE config (SDXL's may carry latent statistics)
        if getattr(vae, "latents_mean", None) is not None and getattr(vae, "latents_std", None) is not None:
            shift = torch.tensor(vae.latents_mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
            spread = torch.tensor(vae.latents_std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
            return (latents - shift) * vae.scaling_factor / spread
        return vae.scaling_factor * latents

    @torch.no_grad()
    def generate(self, items: list[GenerationItem], lam: float) -> list[Image.Image]:
        """One pipeline call per output size (one in all unless ``aspect: keep``), the images in the items' order."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, it in enumerate(items):
            by_size.setdefault(self.item_size(it), []).append(i)
        out: list[Image.Image | None] = [None] * len(items)
        for size, rows in by_size.items():
            for i, image in zip(rows, self.generate_sized([items[i] for i in rows], lam, size)):
                out[i] = image
        return out

    def generate_sized(self, items: list[GenerationItem], lam: float, size: tuple[int, int]) -> list[Image.Image]:
        # CPU generators: the same seed gives the same noise on any device
        generators = [torch.Generator().manual_seed(it.seed) for it in items]
        if lam == 0 and self.zero_guidance == "pure_noise":  # the pipeline starts from our noise, never the image
            latents = self.text_only_latents(generators, size)
            sources = torch.zeros_like(latents)
        else:  # a 4-channel image is taken as the encoded source
            latents, sources = None, self.source_latents(items, generators, size)
        strength = img2img_strength(self.steps, lam)  # exactly denoising_steps(steps, λ) steps, at least 1
        negative = [self.p.negative_prompt] * len(items) if self.p.negative_prompt else None
        out = self.pipe(
            prompt=[it.prompt for it in items],
            image=sources,
            strength=strength,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            negative_prompt=negative,
            generator=generators,
            latents=latents,
            aesthetic_score=self.p.aesthetic_score,
            negative_aesthetic_score=self.p.negative_aesthetic_score,
            output_type="pil",
        )
        return list(out.images)
