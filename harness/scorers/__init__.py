"""Scorers: each registers with ``@register_scorer`` and is listed in the package's entry points."""

from harness.scorers.base import Scorer  # noqa: F401
