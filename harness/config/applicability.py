"""Settings that apply only to some components or choices: a setting given a value of its own (other than its
default) where no code path reads it is refused at config load, in one line naming it, before any data is read.

Each rule is (setting, applies-when, why). ``applies`` reads the chosen components' declared capabilities (class
attributes on their base classes: ``Classifier.own_loss``, ``Generator.takes_scheduler``) and the config's own
choices. ``tests/test_applicability.py`` walks every experiment's resolved config against this table.

Not a rule on purpose: ``spectrum.description_prefix`` without ``spectrum.descriptions`` (the ImageNet-LT recipes
ship the paper's prefix for the descriptions file the user supplies with ``--set spectrum.descriptions=...``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.config.schema import Config
from harness.core import registry


@dataclass(frozen=True)
class Rule:
    key: str  # dotted setting
    applies: Callable[[Config], bool]
    why: Callable[[Config], str]  # what the user is told when it does not apply


def own_loss(cfg: Config) -> bool:
    return registry.get_model(cfg.model.name).own_loss


def _own_loss_why(key: str) -> Callable[[Config], str]:
    return lambda cfg: (
        f"model {cfg.model.name!r} trains with its own loss (model.own_loss), so {key} has no effect; leave it out"
    )


RULES: list[Rule] = [
    Rule("train.loss", lambda c: not own_loss(c), _own_loss_why("train.loss")),
    Rule("base.loss", lambda c: not own_loss(c), _own_loss_why("base.loss")),
    Rule("base.mixup_alpha", lambda c: not own_loss(c), _own_loss_why("base.mixup_alpha")),
    *(
        Rule(
            f"base.{key}",
            lambda c: c.base.optimizer == "sgd",
            lambda c: f"read only by base.optimizer: sgd ({c.base.optimizer})",
        )
        for key in ("momentum", "nesterov")
    ),
    *(
        Rule(
            f"base.{key}",
            lambda c: c.base.schedule == "step",
            lambda c: f"read only by base.schedule: step ({c.base.schedule})",
        )
        for key in ("milestones", "gamma", "warmup_epochs")
    ),
    Rule(
        "hard.threshold",
        lambda c: c.hard.rule == "low_prob",
        lambda c: f"read only by hard.rule: low_prob (this config has {c.hard.rule})",
    ),
    Rule(
        "hard.k", lambda c: c.hard.rule == "k_hardest", lambda c: f"read only by hard.rule: k_hardest ({c.hard.rule})"
    ),
    Rule(
        "spectrum.scheduler",
        lambda c: registry.get_generator(c.generator.name).takes_scheduler,
        lambda c: f"generator {c.generator.name!r} runs its own fixed scheduler (generator.takes_scheduler is false)",
    ),
    Rule(
        "spectrum.zero_guidance",
        lambda c: registry.get_generator(c.generator.name).zero_guidance_img2img,
        lambda c: f"generator {c.generator.name!r} cannot run λ = 0 as img2img (zero_guidance_img2img is false)",
    ),
    Rule(
        "tracking.max_model_mb",
        lambda c: c.tracking.log_model == "auto",
        lambda c: f"read only by tracking.log_model: auto ({c.tracking.log_model})",
    ),
    Rule(
        "tracking.system_metrics_interval_s",
        lambda c: c.tracking.system_metrics,
        lambda c: "tracking.system_metrics is false",
    ),
    *(
        Rule(
            f"sweep.{key}",
            # `none` is the off switch: one `--set sweep.pruner=none` turns an experiment's median pruner off
            lambda c: c.sweep.pruner in ("median", "none"),
            lambda c: f"read only by sweep.pruner: median ({c.sweep.pruner})",
        )
        for key in ("pruner_startup_trials", "pruner_warmup_epochs")
    ),
]


def value(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


DEFAULTS = Config()


def inapplicable(cfg: Config) -> list[tuple[str, str]]:
    """(setting, why) for every setting given its own value where nothing reads it."""
    return [(r.key, r.why(cfg)) for r in RULES if value(cfg, r.key) != value(DEFAULTS, r.key) and not r.applies(cfg)]
