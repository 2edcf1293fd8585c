"""The schema's building blocks: each choice written once, the constrained numbers, and the strict ``Section`` base
every config section derives from."""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal["cosine", "constant"]
Loss = Literal["ce", "balanced_softmax"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]  # auto: bf16 on CUDA, fp32 on CPU (autocast, training and eval)
# the epochs after the curriculum: still re-balanced | natural data | the real hard images alone (the iWildCam code)
PostCurriculum = Literal["rebalanced", "natural", "hard_real"]
PostHoc = Literal["wise", "taunorm"]  # train.post_hoc: WiSE-FT, τ-normalisation (harness/phases/post_hoc.py)
Init = Literal["base", "pretrained"]  # fine-tune from the base model | from the model's pretrained weights
HardRule = Literal["few_shot", "low_prob", "k_hardest", "misclassified"]
EpochLength = Literal["pass", "real_images", "real_rows"]  # train.epoch_length
HoldoutScope = Literal["adaptive", "synthetic"]  # curriculum.holdout_scope
AdaptiveDecide = Literal["epoch", "stage_exhausted"]
AdaptiveMeasure = Literal["between_evaluations", "natural_pass"]
AdaptiveTrainOn = Literal["chosen", "all_levels"]
Statistic = Literal["mean", "trimmed_mean", "median"]  # the adaptive rule's summary of per-image gains
Ordering = Literal["diverse_to_specific", "specific_to_diverse", "random", "adaptive"]  # sweep orderings
Pruner = Literal["median", "hyperband", "none"]
LogModel = Literal["auto", "always", "never"]  # auto: the selected model when under tracking.max_model_mb
# default: the generator's own scheduler; the others are diffusers schedulers (harness.generators.sd_img2img)
Scheduler = Literal["default", "ddim", "euler", "euler_a", "pndm", "dpm", "lms"]

SWEEP_ORDERINGS = typing.get_args(Ordering)

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def _str_keys(value: Any) -> Any:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


Params = Annotated[dict[str, Any], BeforeValidator(_str_keys)]  # a component's own params (checked by it)


class Section(BaseModel):
    """A config section: unknown keys and loose types are refused. Fields may also be given by position, in
    their declared order (``HardConfig("k_hardest", k=7)``), as the dataclasses before these models allowed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        names = list(type(self).model_fields)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional values")
        super().__init__(**dict(zip(names, args)), **kwargs)


def is_among(lam: float, levels: list[float]) -> bool:
    """``lam`` is one of ``levels`` (up to float rounding)."""
    return any(abs(lam - g) < 1e-9 for g in levels)


def refuse_repeats(values: list, what: str) -> list:
    """``values`` unchanged; a value given twice is a ValueError naming it."""
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise ValueError(f"{what} {', '.join(map(str, repeated))} given twice")
    return values


def per_method(value, method: str, fallback):
    """A setting given once or per method (``{NAME: value, default: value}``)."""
    if isinstance(value, dict):
        return value.get(method, value.get("default", fallback))
    return value
