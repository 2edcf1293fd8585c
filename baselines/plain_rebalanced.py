from baselines.discl_diverse_to_specific import DiverseToSpecific
from harness.api import register_method


@register_method("plain_rebalanced")
class PlainRebalanced(DiverseToSpecific):
    """The control the paper lacks: DisCL diverse→specific's epochs, undersampling and tail share, with each stage's
    synthetic images replaced by as many real hard images drawn with replacement (the authors' ``baseline``)."""

    synthetic = False
    real_stand_in = True
