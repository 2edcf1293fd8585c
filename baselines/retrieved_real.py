from baselines.discl_diverse_to_specific import DiverseToSpecific
from harness.api import register_method


@register_method("retrieved_real")
class RetrievedReal(DiverseToSpecific):
    """Would retrieved real images do as well (Geng et al., NeurIPS 2024)? DisCL diverse→specific's epochs, stages,
    undersampling and schedule, with each stage's synthetic images replaced by as many real images retrieved for the
    training hard sources: the nearest of each source's class in ``retrieval.source`` by the scorer's image
    embedding, near duplicates of validation and test images dropped (``harness.phases.retrieval``)."""

    synthetic = False
    real_stand_in = True
    retrieves = True
