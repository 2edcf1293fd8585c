from baselines.plain import Plain
from harness.api import register_method


@register_method("base")
class Base(Plain):
    """The base model as trained, evaluated with no fine-tuning: the paper's CE row on ImageNet-LT (its abstract:
    DisCL "improves the base model's tail-class accuracy from 4.4%"). ``plain`` stays the fine-tuned control.

    It trains on nothing: no synthetic images, no re-balancing, and no epochs (``fine_tunes = False``: phase 5
    evaluates the base model on the validation and test splits, as it evaluates a fine-tuned run's selection)."""

    fine_tunes = False  # plain's data and stages, never trained on
