from harness.api import Curriculum, register_method


@register_method("text_only")
class TextOnly(Curriculum):
    """Synthetic images generated from the text prompt alone (λ = 0) throughout the curriculum."""

    def n_stages(self, levels, curriculum_epochs):
        return 1

    def stage_levels(self, stage, ctx):
        return (0.0,)

    def levels_needed(self, levels):
        return (0.0,)
