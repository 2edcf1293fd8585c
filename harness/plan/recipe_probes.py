"""The probes of ``harness recipe``: for a row whose value is not one config key, a function of the resolved config
(and of the code it configures) that says what ours does, in the words the recipe's rows expect
(``harness/resources/recipe.yaml``)."""

from __future__ import annotations

from typing import Any

from harness.config import Config

NOT_IMPLEMENTED = object()  # what a key the config lacks reads as


def lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return NOT_IMPLEMENTED
        node = node[part]
    return node


def probe_class_names(cfg: Config) -> str:
    """``curated``: the dataset names its classes from the names shipped with the harness (ImageNet-LT: one unique,
    unambiguous name per ImageNet-1k id; iWildCam: English common names); else the user's file."""
    key = "class_names" if cfg.data.name == "imagenet_lt" else "common_names"
    given = cfg.data.params.get(key)
    return "curated" if not given else f"data.params.{key} = {given}"


def probe_flyp_epoch(cfg: Config) -> str:
    """What a FLYP epoch passes over: every (image, template) pair (the model's ``rows_per_image``, what the
    trainer's ``templates_per_image`` repeats each image by, is its number of templates) or one template per image."""
    from harness.config import build
    from harness.models.paper import ClipFlyp, FlypParams

    if cfg.model.name != "clip_flyp":
        return f"not FLYP ({cfg.model.name})"
    templates = len(build(FlypParams, cfg.model.params, "model.params").templates)
    return "(image, template) pairs" if ClipFlyp.rows_per_image(cfg) == templates else "one template per image"


def probe_all_levels_volume(cfg: Config) -> str:
    """The synthetic images of one ``all_levels`` epoch: with ``synthetic_scale`` a fixed multiple of the hard
    sources however many levels (one level's volume); with null, what the curriculum's count gives for 300 kept
    images over 3 levels (``harness.phases.curriculum.synthetic_count`` where it exists; else every kept image)."""
    if cfg.train.synthetic_scale is not None:
        return "one level's volume"
    from harness.phases import curriculum

    count = getattr(curriculum, "synthetic_count", None)
    if count is None:
        return "every kept image of all levels"
    try:  # (train, tail count, hard, sources, kept, levels)
        n = count(cfg.train, None, 30, 30, 300, 3)
    except (TypeError, AttributeError, ValueError):
        return "not implemented"
    return "one level's volume" if n == 100 else f"{n} of 300 kept images over 3 levels"


def probe_balanced_softmax_prior(cfg: Config) -> str:
    """The prior Balanced Softmax adds to the logits where ``base.loss`` or ``train.loss`` is Balanced Softmax: what
    ``harness.engine.train.log_prior`` makes of training counts 1 and 3, and whether ``classification_loss`` adds it."""
    if "balanced_softmax" not in {cfg.base.loss, cfg.train.loss}:
        return "not used (cross-entropy)"
    from types import SimpleNamespace

    import torch

    from harness.engine.train import log_prior
    from harness.models.base import classification_loss

    prior = log_prior(SimpleNamespace(train_counts=[1, 3]))
    natural = torch.tensor([0.25, 0.75]).log()
    y = torch.tensor([0])
    added = classification_loss(torch.zeros(1, 2), y, "balanced_softmax", prior)
    if torch.allclose(prior, natural) and torch.isclose(added, torch.nn.functional.cross_entropy(natural[None], y)):
        return "log of the natural training counts"
    return "another prior"


def probe_steps_per_level(cfg: Config) -> list[int]:
    """Denoising steps the generator runs at each curriculum λ (``harness.generators.base.denoising_steps``)."""
    from harness.generators.base import denoising_steps

    return [denoising_steps(cfg.spectrum.steps, lam) for lam in cfg.curriculum_levels]


def probe_generator_seeds(cfg: Config) -> str:
    """How each synthetic image's seed is chosen (``seeding.sample_seed``): its own per (image, λ, index)."""
    from harness.engine.seeding import sample_seed

    own = sample_seed("a", 0.5, 0) != sample_seed("b", 0.5, 0)
    return "sha256(image id, λ, seed index)" if own else "the same seeds for every image"


def probe_adaptive_first_comparison(cfg: Config) -> str:
    """What the adaptive rule's gains are measured against and how they are summarized: with
    ``curriculum.adaptive.measure: natural_pass``, the evaluation just before a pass over natural data; else the
    previous evaluation, which for the first choice is one taken before the first stage (``guidance_val_probe``'s first
    call only records); then ``curriculum.adaptive.statistic`` per level, with or without 1.5×IQR outliers."""
    adaptive = cfg.curriculum.adaptive
    measure = lookup(cfg.model_dump(), "curriculum.adaptive.measure")
    before = "the evaluation just before a pass over natural data" if measure == "natural_pass" else None
    against = before or "an evaluation before the first stage"
    outliers = "1.5×IQR outliers dropped" if adaptive.drop_outliers else "no outliers dropped"
    pending = " (curriculum.adaptive.measure: not implemented)" if measure is NOT_IMPLEMENTED else ""
    return f"against {against}; {adaptive.statistic} gain, {outliers}{pending}"


def method_probe(method: str):
    """A probe that reads whether ``method`` is among the experiment's methods."""

    def probe(cfg: Config) -> str:
        return method if method in cfg.methods else "not among the methods"

    probe.__doc__ = f"Whether {method} is among the experiment's methods."
    return probe


PROBES = {
    "steps_per_level": probe_steps_per_level,
    "generator_seeds": probe_generator_seeds,
    "rebalanced_control": method_probe("plain_rebalanced"),
    "base_evaluated": method_probe("base"),
    "fine_tuned_control": method_probe("plain"),
    "step_budget_control": method_probe("plain_matched"),
    "all_levels_method": method_probe("all_levels"),
    "diverse_to_specific_method": method_probe("discl_diverse_to_specific"),
    "adaptive_first_comparison": probe_adaptive_first_comparison,
    "class_names": probe_class_names,
    "flyp_epoch": probe_flyp_epoch,
    "all_levels_volume": probe_all_levels_volume,
    "balanced_softmax_prior": probe_balanced_softmax_prior,
}
