"""Scorers register themselves on import."""
from harness.scorers import judge  # noqa: F401
from harness.scorers.base import Scorer  # noqa: F401
