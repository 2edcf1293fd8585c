from harness.api import Curriculum, register_method


@register_method("base")
class Base(Curriculum):
    """The base model as trained, evaluated with no fine-tuning: the paper's CE row on ImageNet-LT (its abstract:
    DisCL "improves the base model's tail-class accuracy from 4.4%"). ``plain`` stays the fine-tuned control.

    It trains on nothing: no synthetic images, no re-balancing, and no epochs (``fine_tunes = False``: phase 5
    evaluates the base model on the validation and test splits, as it evaluates a fine-tuned run's selection)."""

    synthetic = False
    rebalance = False
    fine_tunes = False

    def n_stages(self, levels, curriculum_epochs):
        return 1

    def stage_levels(self, stage, ctx):
        return ()
