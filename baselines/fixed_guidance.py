from harness.api import Curriculum, register_method


@register_method("fixed_guidance")
class FixedGuidance(Curriculum):
    """One image-guidance level λ throughout the curriculum (``method_params.fixed_guidance.lam``)."""

    def __init__(self, lam: float = 0.5):
        self.lam = float(lam)

    def n_stages(self, levels, curriculum_epochs):
        return 1

    def stage_levels(self, stage, ctx):
        return (self.lam,)

    def levels_needed(self, levels):
        return (self.lam,)

    def describe(self):
        return {"lam": self.lam}
