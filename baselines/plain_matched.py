from baselines.plain import Plain
from harness.api import register_method


@register_method("plain_matched")
class PlainMatched(Plain):
    """The step-budget control: ``plain`` (the natural data, no synthetic images, no re-balancing) trained for DisCL's
    budget: each curriculum epoch as many steps as DisCL's under ``train.epoch_length: real_rows`` (floor of the
    natural rows less the hold-out that the curriculum methods leave out, over the batch; iWildCam: 255,618 / 256 =
    998), each later epoch a pass over those rows (999), its batches running on across epochs, under the cosine
    span of the curriculum methods (``train.schedule_epochs``). Its share of DisCL's gain is the step budget's."""

    matches_curriculum_steps = True
