"""Generators: each registers with ``@register_generator`` and is listed in the package's entry points."""

from harness.generators.base import GenerationItem, Generator  # noqa: F401
