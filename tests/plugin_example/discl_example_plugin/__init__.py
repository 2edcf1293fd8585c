"""An example plugin method: every curriculum stage trains on the middle λ level of the curriculum."""

from harness.api import Curriculum


class MiddleLevel(Curriculum):
    """The curriculum's middle level, one stage (registered under its entry point's name, ``middle_level``)."""

    def n_stages(self, levels, curriculum_epochs):
        return 1

    def stage_levels(self, stage, ctx):
        return (ctx.levels[len(ctx.levels) // 2],)
