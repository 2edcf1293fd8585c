"""Image transforms as config: a list of ``torchvision.transforms.v2`` steps, applied to uint8 images before the
float conversion (which happens on the training device).

In YAML each step is a class name of ``torchvision.transforms.v2``, alone or with its keyword arguments::

    train_transform:
      - RandomResizedCrop: {size: 224}
      - RandomHorizontalFlip
      - ColorJitter: {brightness: 0.4, contrast: 0.4, saturation: 0.4}

``interpolation: bicubic`` (or bilinear, nearest, …) names an ``InterpolationMode``. No transform (null) squashes
an image to S×S, S = ``data.image_size``. Every pipeline must end in uint8 C×S×S; this is checked at config load.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

KNOWN = sorted(n for n in dir(v2) if isinstance(getattr(v2, n), type) and issubclass(getattr(v2, n), v2.Transform))


class TransformError(ValueError):
    """A transform spec that torchvision cannot build; the message is one line."""


def parse_step(item: Any, where: str) -> tuple[str, dict]:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        name, kwargs = next(iter(item.items()))
        if kwargs is None:
            kwargs = {}
        if isinstance(name, str) and isinstance(kwargs, dict):
            return name, dict(kwargs)
    raise TransformError(f"{where}: expected a transform name or {{Name: {{arg: value}}}}, got {item!r}")


def build_step(name: str, kwargs: dict, where: str) -> v2.Transform:
    if name not in KNOWN:
        close = difflib.get_close_matches(name, KNOWN, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TransformError(f"{where}: {name!r} is not a torchvision.transforms.v2 transform{hint}")
    if isinstance(kwargs.get("interpolation"), str):
        try:
            kwargs["interpolation"] = InterpolationMode[kwargs["interpolation"].upper()]
        except KeyError:
            modes = ", ".join(m.value for m in InterpolationMode)
            raise TransformError(f"{where}: interpolation {kwargs['interpolation']!r} is not one of {modes}") from None
    try:
        return getattr(v2, name)(**kwargs)
    except (TypeError, ValueError) as e:
        raise TransformError(f"{where}: {name}({kwargs}) failed: {e}") from None


def build_transform(spec: list | None, size: int, where: str = "transform") -> v2.Transform:
    """The transform a spec describes; ``None`` squashes to ``size``×``size`` (antialiased)."""
    if spec is None:
        return v2.Resize([size, size], antialias=True)
    steps = [build_step(*parse_step(item, f"{where}[{i}]"), f"{where}[{i}]") for i, item in enumerate(spec)]
    return v2.Compose(steps)


def check_output(transform: v2.Transform, size: int, where: str) -> None:
    """Run the transform on a dummy uint8 RGB image larger than the target: it must give uint8 3×S×S."""
    probe = torch.zeros(3, size + 61, size + 37, dtype=torch.uint8)
    try:
        out = transform(probe)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TransformError(f"{where} fails on a uint8 image: {e}") from None
    if not isinstance(out, torch.Tensor) or out.dtype != torch.uint8 or tuple(out.shape) != (3, size, size):
        got = f"{getattr(out, 'dtype', type(out).__name__)} {tuple(getattr(out, 'shape', ()))}"
        raise TransformError(f"{where} must end in uint8 images of {size}×{size} (data.image_size); it gives {got}")


def to_float01(x: torch.Tensor) -> torch.Tensor:
    """Model input: float in [0, 1]. uint8 batches are converted here, on whatever device they already are."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x
