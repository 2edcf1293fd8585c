from harness.curriculum import Curriculum
from harness.registry import register_method


@register_method("discl_adaptive")
class Adaptive(Curriculum):
    """DisCL for low-quality data: at each stage, the level whose held-out hard images gained most.

    ``ctx.probe`` measures the true-class probability on each level's guidance-validation images, trains a
    short while, measures again, and returns the summarized gain per level (see ``curriculum.adaptive``).
    """

    adaptive = True

    def n_stages(self, levels, curriculum_epochs):
        return curriculum_epochs  # a choice at every epoch of the curriculum

    def stage_levels(self, stage, ctx):
        gains = ctx.probe(ctx.levels)
        return (max(ctx.levels, key=lambda lam: gains[lam]),)
