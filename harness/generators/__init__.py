"""Generators register themselves on import."""
from harness.generators import tiny_ddpm  # noqa: F401
from harness.generators.base import GenerationItem, Generator  # noqa: F401
