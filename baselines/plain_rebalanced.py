from harness.curriculum import Curriculum
from harness.registry import register_method


@register_method("plain_rebalanced")
class PlainRebalanced(Curriculum):
    """The control the paper lacks: DisCL's extra epochs and head-class undersampling, real images only."""

    synthetic = False

    def n_stages(self, levels, curriculum_epochs):
        return 1

    def stage_levels(self, stage, ctx):
        return ()
