"""What a generator provides: image-guided generation of one λ level for a batch of (source, prompt, seed)."""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass
class GenerationItem:
    source_id: str
    source: Image.Image  # the real image at full resolution
    label: int
    prompt: str
    seed: int  # from harness.seeding.sample_seed(source_id, λ, seed index)


class Generator:
    """``generate(items, lam)`` returns one image per item. λ = 0 is text-only; λ → 1 reproduces the source."""

    name = "generator"

    def generate(self, items: list[GenerationItem], lam: float) -> list[Image.Image]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Settings recorded with the pool (scheduler, steps, guidance, …)."""
        return {}


def strength_timesteps(timesteps, steps: int, lam: float):
    """The tail of a ``steps``-step schedule an SDEdit start at guidance λ runs (diffusers' strength = 1 − λ).

    At least one step, so a high λ with few steps still denoises rather than returning noised input."""
    run = max(1, min(int(round(steps * (1.0 - lam), 6)), steps))
    return timesteps[steps - run:]
