"""What a generator provides: image-guided generation of one λ level for a batch of (source, prompt, seed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass
class GenerationItem:
    source_id: str
    source: Image.Image  # the real image at full resolution
    label: int
    prompt: str
    seed: int  # from harness.engine.seeding.sample_seed(source_id, λ, seed index)


@dataclass(frozen=True)
class Sampling:
    """The spectrum's sampler settings a generator runs with, the part of ``cfg.spectrum`` it needs."""

    steps: int  # denoising steps of a full (λ = 0) trajectory
    guidance_scale: float  # classifier-free text guidance
    scheduler: str = "default"  # read only by a generator that ``takes_scheduler``
    zero_guidance: str = "pure_noise"  # λ = 0: pure_noise | img2img (strength 1.0), see ``spectrum.zero_guidance``

    @classmethod
    def from_config(cls, cfg) -> Sampling:
        s = cfg.spectrum
        return cls(s.steps, s.guidance_scale, s.scheduler, s.zero_guidance)


class Generator:
    """``generate(items, lam)`` returns one image per item. λ = 0 is text-only; λ → 1 reproduces the source.

    ``from_config(cfg, data, cache, device)`` is the one place a generator reads the experiment config: it builds
    the typed params of ``generator.params`` and hands them, with the explicit inputs the generator needs (e.g. a
    ``Sampling``), to a constructor or loader that never sees ``cfg``."""

    name = "generator"
    takes_scheduler = False  # whether spectrum.scheduler applies (a generator that runs one fixed scheduler: no)
    # whether it can run λ = 0 as img2img at strength 1.0 (``spectrum.zero_guidance: img2img``); the config refuses
    # that setting for a generator that cannot, rather than it falling back to pure noise
    zero_guidance_img2img = False

    @classmethod
    def from_config(cls, cfg, data, cache: Path | None, device="cpu") -> Generator:
        raise NotImplementedError(f"{cls.__name__}.from_config")

    @classmethod
    def prepare(cls, cfg, data, cache: Path) -> Path | None:
        """The generator's own training, if it has one (the embedded ones train on the dataset's pool): a cached
        pipeline step that the pipeline runs, and times, before ``from_config``; returns the weights' path. Built
        once per cache key under a lock; ``from_config`` then only loads. Default: nothing to train."""
        return None

    @classmethod
    def output_size(cls, cfg) -> tuple[int, int]:
        """The (width, height) of the images it makes from ``cfg`` (an imported pool's images must have it).
        Default: the dataset's image size."""
        return (cfg.data.image_size, cfg.data.image_size)

    def generate(self, items: list[GenerationItem], lam: float) -> list[Image.Image]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Settings recorded with the pool (scheduler, steps, guidance, …)."""
        return {}


def denoising_steps(steps: int, lam: float) -> int:
    """How many steps of a ``steps``-step schedule an SDEdit start at guidance λ runs: ⌊(1 − λ)·steps⌋, the
    paper's t(λ), computed so that float error cannot drop a step (in floats (1 − 0.9)·50 is 4.99…, which
    diffusers' ``int(steps * strength)`` truncates to 4), and at least 1, so a high λ with few steps still
    denoises rather than returning the noised input. Every generator uses this one definition."""
    return max(1, min(int(round(steps * (1.0 - lam), 6)), steps))


def strength_timesteps(timesteps, steps: int, lam: float):
    """The tail of a ``steps``-step schedule an SDEdit start at guidance λ runs (diffusers' strength = 1 − λ)."""
    return timesteps[steps - denoising_steps(steps, lam) :]
