"""Classifiers. Each takes [0, 1] images, normalizes inside, and exposes ``features`` for embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from harness.config import build
from harness.core.errors import MissingFileError
from harness.core.io import load_torch
from harness.core.registry import get_model, register_model

CAPABILITY_FLAGS = ("channels_last", "own_loss", "needs_class_names", "zero_shot")


class HarnessModel:
    """What the trainer, ``build_model``, ``harness plan`` and the config checks read off a model, declared here with
    defaults and read directly (never probed): every registered model inherits it (the model registry refuses one
    that does not). A mixin, so a test's ``nn.Sequential`` can declare them too (``class M(HarnessModel,
    nn.Sequential)``); registered models derive from ``Classifier``."""

    # the trainer keeps the model (and its inputs) channels-last on a GPU (conv nets); never on a CPU
    channels_last: bool = False
    # trains with its own objective, ``loss(x, y, templates)`` (FLYP's contrastive loss): train.loss and base.loss
    # do not apply. A class that defines ``loss`` must say so (checked when the class is made)
    own_loss: bool = False
    # ``from_config`` takes ``class_names`` (CLIP's text prompts)
    needs_class_names: bool = False
    # its pretrained weights classify without training (CLIP's prompt head): WiSE-FT applies after ``train.init:
    # pretrained`` (harness/phases/post_hoc.py)
    zero_shot: bool = False
    # rows of the trainer's epoch per image (FLYP: one per text template; ``loss`` gets each row's template index)
    templates_per_image: int = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for flag in CAPABILITY_FLAGS:
            if not isinstance(getattr(cls, flag), bool):
                raise TypeError(f"{cls.__qualname__}.{flag} must be a bool, got {getattr(cls, flag)!r}")
        defines_loss = cls.loss is not HarnessModel.loss
        if cls.own_loss != defines_loss:
            raise TypeError(
                f"{cls.__qualname__}: own_loss is {cls.own_loss} but the class "
                f"{'defines' if defines_loss else 'does not define'} loss(x, y, templates); declare both or neither"
            )

    def loss(self, x: torch.Tensor, y: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch (only with ``own_loss``); ``templates``: each row's template index in
        ``range(templates_per_image)``."""
        raise NotImplementedError(f"{type(self).__name__} has no loss of its own (own_loss is False)")

    @classmethod
    def rows_per_image(cls, cfg) -> int:
        """``templates_per_image`` from the config alone, without weights (``harness plan``)."""
        return 1

    @classmethod
    def has_pretrained(cls, cfg) -> bool:
        """Whether ``from_config`` starts from pretrained weights (what ``train.init: pretrained`` needs)."""
        return False


class Classifier(HarnessModel, nn.Module):
    """``forward = head(features(x))``; subclasses define ``features`` and ``head``."""

    head: nn.Module

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class SmallCNNParams:
    width: int = 32
    dropout: float = 0.2


@register_model("small_cnn", params_class=SmallCNNParams)
class SmallCNN(Classifier):
    """Three conv blocks and a linear head: the embedded stand-in for ResNet-10."""

    def __init__(self, num_classes: int, channels: int = 1, width: int = 32, dropout: float = 0.2):
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(
            block(channels, w),
            block(w, 2 * w),
            block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - 0.5) / 0.5)

    @classmethod
    def from_config(cls, cfg, num_classes: int, channels: int) -> SmallCNN:
        p = build(SmallCNNParams, cfg.model.params, "model.params")
        return cls(num_classes, channels, p.width, p.dropout)


def build_model(cfg, num_classes: int, channels: int, class_names: list[str] | None = None) -> Classifier:
    """``class_names`` reach models that need them (``needs_class_names``, e.g. CLIP's text prompts)."""
    cls = get_model(cfg.model.name)
    extra = {"class_names": class_names} if cls.needs_class_names else {}
    return cls.from_config(cfg, num_classes, channels, **extra)


def classification_loss(
    logits: torch.Tensor, y: torch.Tensor, kind: str, log_prior: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy, or Balanced Softmax (Ren et al. 2020): CE on logits shifted by the log class prior."""
    if kind == "balanced_softmax":
        logits = logits + log_prior.to(logits.device)
    return F.cross_entropy(logits, y)


def load_weights(path: str | Path) -> dict:
    """A state dict from a ``.safetensors`` file or a torch checkpoint (a bare state dict, or one under
    ``state_dict`` / ``model``)."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"no weights file {p}")
    if p.suffix == ".safetensors":
        return load_file(str(p))
    state = load_torch(p, "give a state dict saved with torch.save, or a .safetensors file")
    return state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
