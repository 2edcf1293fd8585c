"""The smallest settings that still exercise each experiment family: one list per family, shared by every test that
runs an experiment. A test that relies on a particular value (an epoch count its assertions count) states it itself,
after the shared list, so a later override wins."""

from __future__ import annotations

# digits_lt_tiny / digits_field_tiny: two λ levels, two seeds, four denoising steps; the generator, the judge and the
# base model trained for a step or an epoch (the pool: the tiny few-shot sources × 2 levels × 2 seeds)
DIGITS_GENERATION = (
    "base.epochs=1",
    "generator.params.train_steps=3",
    "scorer.params.epochs=1",
    "spectrum.seeds=2",
    "spectrum.steps=4",
    "spectrum.batch_size=16",
    "spectrum.levels=[0.0, 0.5]",
    "curriculum.levels=[0.0, 0.5]",
    "curriculum.adaptive_levels=[0.5]",
)

# fine-tuning: one curriculum epoch, then one on the real images
SHORT_TRAINING = ("train.epochs=2", "train.curriculum_epochs=1")

DIGITS = (*DIGITS_GENERATION, *SHORT_TRAINING)

# imagenet_lt_discl_tiny on tests/fakes.py's tree (counts (25, 22, 12, 10, 6, 3)): a few-shot split of the fakes,
# one base epoch, one seed of four denoising steps, two curriculum epochs (the adaptive method needs two stages)
IMAGENET_LT = (
    "data.shot_groups={many: 20, few: 8}",
    "base.epochs=1",
    "spectrum.seeds=1",
    "spectrum.steps=4",
    "train.epochs=2",
    "train.curriculum_epochs=2",
)

# iwildcam_discl_tiny on tests/fakes.py's tree
IWILDCAM = ("base.epochs=1", "spectrum.seeds=1", "spectrum.steps=4", *SHORT_TRAINING)


def as_sets(overrides) -> list[str]:
    """``--set`` arguments for the CLI."""
    return [arg for setting in overrides for arg in ("--set", setting)]
