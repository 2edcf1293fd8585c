"""Generators register themselves on import."""
from harness.generators import sd_img2img, tiny_ddpm  # noqa: F401
from harness.generators.base import GenerationItem, Generator  # noqa: F401
