from harness.api import Curriculum, register_method


@register_method("all_levels")
class AllLevels(Curriculum):
    """Every λ level mixed together in every curriculum epoch: synthetic data without a curriculum."""

    def n_stages(self, levels, curriculum_epochs):
        return 1

    def stage_levels(self, stage, ctx):
        return ctx.levels
