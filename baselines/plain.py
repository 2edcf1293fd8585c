from harness.api import Curriculum, register_method


@register_method("plain")
class Plain(Curriculum):
    """Fine-tune on the real training data as it is: no synthetic images, no re-balancing."""

    synthetic = False
    rebalance = False

    def n_stages(self, levels, curriculum_epochs):
        return 1

    def stage_levels(self, stage, ctx):
        return ()
