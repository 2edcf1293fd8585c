"""One file per method; each registers itself with ``@register_method``."""
from baselines import (  # noqa: F401
    all_levels,
    discl_adaptive,
    discl_diverse_to_specific,
    discl_random,
    discl_specific_to_diverse,
    fixed_guidance,
    plain,
    plain_rebalanced,
    text_only,
)
