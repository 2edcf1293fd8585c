"""Cheap strong baselines measured on a run's selected model after its test, with no training (``train.post_hoc``):

- **WiSE-FT** (Wortsman et al., CVPR 2022), for a model with zero-shot weights (``zero_shot``: FLYP's CLIP) fine-tuned
  from them (``train.init: pretrained``): the weights ``(1 − α)·θ_zero-shot + α·θ_fine-tuned``.
- **τ-normalisation** (Kang et al., ICLR 2020, "Decoupling representation and classifier"), for a classifier with a
  linear head and no zero-shot head (SmallCNN, the ResNets): each class's weight vector divided by its L2 norm to the
  power τ.

Each value on ``GRID`` is tried on the validation split and the one with the best ``train.select_on`` metric is
kept (never test); ties keep the model as trained (α = 1, τ = 0 are tried first). Its test metrics are returned
under the variant's prefix, named as the run's own (``wise/test_ood/f1_macro``, ``taunorm/test/acc``), with the
chosen value (``wise/alpha``, ``taunorm/tau``) and its validation metric (``wise/val/f1_macro``). Every DDP rank
evaluates in lockstep (``evaluate_split(distributed=True)`` gathers the same metrics on each), so every rank picks
the same value; only rank 0 logs. The model leaves with the weights it came with.

The zero-shot weights are a CPU copy of the model as built, taken before the first epoch and only when WiSE-FT
applies (``zero_shot_state``): reloading them with ``from_config`` at the end would read the hub copy a second time
and, for a run resumed from a checkpoint, is no cheaper; the copy costs the model's size in host memory.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from harness.engine.evaluate import class_probs, evaluate_split

log = logging.getLogger("harness")

GRID = tuple(round(0.1 * i, 1) for i in range(11))  # α and τ: 0, 0.1, …, 1


def wise_applies(cfg, model) -> bool:
    """WiSE-FT: asked for, a model whose pretrained weights classify (``zero_shot``), fine-tuned from them."""
    return "wise" in cfg.train.post_hoc and model.zero_shot and cfg.train.init == "pretrained"


def linear_head(model) -> nn.Linear | None:
    head = getattr(model, "head", None)
    return head if isinstance(head, nn.Linear) else None


def taunorm_applies(cfg, model) -> bool:
    """τ-normalisation: asked for, a model whose classes are the rows of a linear head (not a zero-shot head)."""
    return "taunorm" in cfg.train.post_hoc and not model.zero_shot and linear_head(model) is not None


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def zero_shot_state(cfg, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The model's weights as built (its zero-shot weights) on the CPU, only when WiSE-FT will need them."""
    return cpu_state(model) if wise_applies(cfg, model) else None


def interpolate(zero_shot: dict, fine_tuned: dict, alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT's weights ``(1 − α)·zero_shot + α·fine_tuned``; tensors that are not floating point (counters, token
    ids) are the fine-tuned model's."""
    return {
        k: torch.lerp(zero_shot[k].to(v.dtype), v, alpha) if v.is_floating_point() else v for k, v in fine_tuned.items()
    }


def tau_normalised(weight: torch.Tensor, bias: torch.Tensor | None, tau: float):
    """Each class's row of ``weight`` divided by its L2 norm to the power ``tau``, and its bias by the same factor,
    so each class's logit ``w·f + b`` is scaled as a whole: τ = 0 is the model as trained, τ = 1 gives unit-norm
    class vectors. Kang et al.'s code drops the bias (logits ``f·w/‖w‖^τ``); scaling it instead keeps τ = 0 the
    trained model, a candidate on the grid that validation can keep."""
    scale = weight.norm(dim=1).clamp_min(1e-12).pow(-tau)
    return weight * scale[:, None], None if bias is None else bias * scale


class Variant:
    """One post-hoc variant: its metric prefix, the name of its knob, the grid in the order tried (the model as
    trained first), and how the knob's value is applied to the model (``set``) and undone (``restore``)."""

    prefix: str
    knob: str
    order: tuple[float, ...]

    def set(self, model: nn.Module, value: float) -> None:
        raise NotImplementedError

    def restore(self, model: nn.Module) -> None:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, data, split: str, device, amp) -> dict[str, float]:
        """The metrics of ``split`` with the value last ``set``: the model evaluated as it now is."""
        metrics, _ = evaluate_split(model, data, split, device, data.num_workers, amp, distributed=True)
        return metrics


class Wise(Variant):
    prefix, knob, order = "wise", "alpha", tuple(reversed(GRID))

    def __init__(self, model: nn.Module, zero_shot: dict):
        self.zero_shot, self.fine_tuned = zero_shot, cpu_state(model)

    def set(self, model: nn.Module, value: float) -> None:
        model.load_state_dict(interpolate(self.zero_shot, self.fine_tuned, value))

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.fine_tuned)


class TauNorm(Variant):
    """Each split is run through the model once: τ-normalising a class's weights and bias divides its logit by
    ‖w‖^τ, so every τ's predictions come from the trained model's logits (``evaluate``), not from a pass per τ."""

    prefix, knob, order = "taunorm", "tau", GRID

    def __init__(self, model: nn.Module):
        head = linear_head(model)
        self.weight = head.weight.detach().clone()
        self.bias = None if head.bias is None else head.bias.detach().clone()
        self.norms = self.weight.float().norm(dim=1).clamp_min(1e-12).cpu().numpy()
        self.value, self.logits = 0.0, {}

    def evaluate(self, model: nn.Module, data, split: str, device, amp) -> dict[str, float]:
        if split not in self.logits:  # the trained head's logits, once per split
            value = self.value
            self.set(model, 0.0)
            images = data.splits[split]
            self.logits[split] = class_probs(
                model, images, device, workers=data.num_workers, transform=data.eval_transform, amp=amp,
                distributed=True, loaders=data.loaders, logits=True,
            )  # fmt: skip
            self.set(model, value)
        predicted = (self.logits[split] / self.norms**self.value).argmax(1)
        return data.evaluate(np.asarray(data.splits[split].labels), predicted)

    def set(self, model: nn.Module, value: float) -> None:
        self.value = value
        head = linear_head(model)
        weight, bias = tau_normalised(self.weight, self.bias, value)
        with torch.no_grad():
            head.weight.copy_(weight)
            if bias is not None:
                head.bias.copy_(bias)

    def restore(self, model: nn.Module) -> None:
        self.set(model, 0.0)  # τ = 0 is the trained head (its norms to the power 0 are 1)


def choose_on_val(variant: Variant, model, data, device, amp, select_on: str) -> tuple[float, float]:
    """The grid value with the best ``select_on`` validation metric (the first of ``variant.order`` on a tie; a NaN
    never wins) and that metric."""
    best, best_score = variant.order[0], float("-inf")
    for value in variant.order:
        variant.set(model, value)
        metrics = variant.evaluate(model, data, data.val_split, device, amp)
        score = {f"val/{k}": v for k, v in metrics.items()}.get(select_on, float("nan"))
        if score > best_score:
            best, best_score = value, float(score)
    return best, best_score


def measure(variant: Variant, model, data, device, amp, select_on: str) -> dict[str, float]:
    """A variant's chosen value, its validation metric and its test metrics, under the variant's prefix."""
    try:
        value, score = choose_on_val(variant, model, data, device, amp, select_on)
        variant.set(model, value)
        out = {f"{variant.prefix}/{variant.knob}": value, f"{variant.prefix}/{select_on}": score}
        for name, split in data.test_splits.items():
            metrics = variant.evaluate(model, data, split, device, amp)
            out.update({f"{variant.prefix}/{name}/{k}": v for k, v in metrics.items()})
    finally:
        variant.restore(model)
    log.info(
        "post-hoc %s: %s = %g chosen on validation (%s %.4f)", variant.prefix, variant.knob, value, select_on, score
    )
    return out


def post_hoc_metrics(cfg, model, data, device, amp=None, zero_shot: dict | None = None) -> dict[str, float]:
    """Every variant that applies to this run (``train.post_hoc``), measured on the selected ``model``;
    ``zero_shot``: the weights ``zero_shot_state`` kept before training (None: WiSE-FT is not measured)."""
    variants: list[Variant] = []
    if zero_shot is not None and wise_applies(cfg, model):
        variants.append(Wise(model, zero_shot))
    if taunorm_applies(cfg, model):
        variants.append(TauNorm(model))
    out: dict[str, float] = {}
    for variant in variants:
        out.update(measure(variant, model, data, device, amp, cfg.train.select_on))
    return out
