"""Scorers register themselves on import."""
from harness.scorers import clip, judge  # noqa: F401
from harness.scorers.base import Scorer  # noqa: F401
