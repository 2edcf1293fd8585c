from harness.api import Curriculum, register_method


@register_method("discl_specific_to_diverse")
class SpecificToDiverse(Curriculum):
    """The reverse ablation: one stage per λ in decreasing order, near-real first."""

    def stage_levels(self, stage, ctx):
        levels = ctx.levels[::-1]
        return (levels[stage * len(levels) // ctx.n_stages],)
