from harness.api import REAL, Curriculum, register_method


@register_method("discl_adaptive")
class Adaptive(Curriculum):
    """DisCL for low-quality data: at each stage, the level whose held-out hard images gained most.

    ``ctx.probe`` evaluates the normally trained model on the guidance-validation set (no training of its own) and
    returns each candidate's summarized gain in true-class probability since its previous evaluation, as the
    authors' ``progress_eval``; the largest wins. Decisions from the authors' code (``src/models/training.py``):
    the set is evaluated when a stage's data is used up, here at the start of every stage (a stage is an epoch);
    the first stage has no previous evaluation and trains on the lowest level (their ``list_guidance[0]``; their
    first comparison is then against zeros, ours against the evaluation before the first stage); the real images
    (their guidance 100) are a candidate (``curriculum.adaptive.include_real``), and choosing them makes the stage
    real data only.
    """

    adaptive = True

    def n_stages(self, levels, curriculum_epochs):
        return curriculum_epochs  # a choice at every epoch of the curriculum

    def stage_levels(self, stage, ctx):
        gains = ctx.probe(ctx.levels)
        if gains is None:
            return (ctx.levels[0],)
        best = max(gains, key=lambda lam: gains[lam])
        return () if best == REAL else (best,)
