from harness.api import Curriculum, register_method


@register_method("discl_diverse_to_specific")
class DiverseToSpecific(Curriculum):
    """DisCL for long-tail: one stage per λ in increasing order, text-only (diverse) to near-real (specific)."""

    def stage_levels(self, stage, ctx):
        return (ctx.levels[stage * len(ctx.levels) // ctx.n_stages],)
