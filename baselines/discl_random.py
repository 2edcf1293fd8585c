from harness.api import Curriculum, register_method


@register_method("discl_random")
class RandomLevel(Curriculum):
    """A level drawn at random (with the run's seed) for each stage; a stage per curriculum epoch, so the level
    changes as often as ``discl_adaptive``'s does."""

    def n_stages(self, levels, curriculum_epochs):
        return curriculum_epochs

    def stage_levels(self, stage, ctx):
        return (float(ctx.rng.choice(ctx.levels)),)
