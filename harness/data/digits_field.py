"""``digits_field``: ``digits_lt`` with its training, val and test images rendered in a "field" domain.

The paper's premise is a gap: Stable Diffusion and CLIP know clean web photos, the target data (iWildCam) are
night-time, blurred, occluded camera-trap frames. Here the generator's pool and the judge stay clean (they play
Stable Diffusion and CLIP) while every real image the classifier trains and is tested on is degraded, each with its
own draws (seeded by ``data.split_seed`` and the image's index, so an image looks the same in whatever split it
lands): a cluttered background, the digit shrunk, shifted and rotated on the canvas, lower contrast, an occluder,
day glare or night darkness, lens blur and sensor noise.

One dial, ``data.params.gap`` in [0, 1], scales every degradation; the random draws do not depend on it, so the
same image moves continuously from clean (``gap: 0``, exactly the ``digits_lt`` images) to the full field domain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import ConfigError, build
from harness.core.registry import register_dataset
from harness.data.base import DatasetBundle, TensorImages
from harness.data.digits_lt import DigitsParams, digits_lt

# the degradations at gap = 1; gap scales each (ranges are per-image uniform draws)
SHRINK = (0.05, 0.2)  # the digit covers 1 − shrink of the canvas side ...
ROTATE = 12.0  # ... rotated by up to ± this many degrees, shifted anywhere that keeps it inside
TEXTURE = 0.15  # amplitude of a smooth background texture (4×4 noise, upsampled)
STROKES = (1, 2, 0.2, 0.4)  # clutter: this many (inclusive range) stray strokes of this intensity range
FADE = (0.1, 0.3)  # the digit's contrast drops by this fraction
OCCLUDE = 0.35  # chance of a bar (a branch) across the canvas, intensity U(0, 0.5), opacity = gap
NIGHT = (0.2, 0.35)  # half the images are night: brightness × (1 − this) ...
GLARE = (0.05, 0.2)  # ... the other half day: washed out towards white by this much
BLUR = (0.25, 0.5)  # Gaussian blur σ in pixels
NOISE = (0.015, 0.03)  # sensor noise σ, day / night


@dataclass
class FieldParams(DigitsParams):
    gap: float = 1.0  # 0 = the clean digits_lt images, 1 = the full field domain


def draw(rng: np.random.Generator, size: int) -> dict:
    """One image's random draws, whatever the gap (so the dial scales the same draws)."""
    return {
        "shrink": rng.uniform(*SHRINK),
        "angle": rng.uniform(-ROTATE, ROTATE),
        "shift": rng.uniform(-1, 1, 2),
        "texture": rng.random((4, 4)),
        "strokes": draw_strokes(rng, size),
        "fade": rng.uniform(*FADE),
        "occlude": rng.random(),
        "bar": rng.uniform(0, 1, 5),
        "night": rng.random() < 0.5,
        "light": rng.random(),
        "sigma": rng.uniform(*BLUR),
        "noise": rng.standard_normal((size, size)),
    }


def draw_strokes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Soft straight strokes, about a pixel wide, at their full intensity (the gap scales them)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    canvas = np.zeros((size, size))
    for _ in range(int(rng.integers(STROKES[0], STROKES[1] + 1))):
        p = rng.uniform(0, size - 1, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(size / 4, size / 2)
        d = length * np.array([np.cos(angle), np.sin(angle)])
        intensity = rng.uniform(STROKES[2], STROKES[3])
        t = np.clip(((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / (d @ d), 0, 1)
        dist = np.hypot(xx - (p[0] + t * d[0]), yy - (p[1] + t * d[1]))
        canvas = np.maximum(canvas, intensity * np.clip(1.2 - dist, 0, 1))
    return canvas


def stack(draws: list[dict], key: str) -> torch.Tensor:
    return torch.as_tensor(np.stack([d[key] for d in draws]), dtype=torch.float32)


def render_field(clean: torch.Tensor, gap: float, draws: list[dict]) -> torch.Tensor:
    """N×1×S×S clean digits in [0, 1] → the same digits in the field domain at ``gap``; ``gap == 0`` returns
    ``clean`` itself. Batched: one affine warp, one grouped blur."""
    if gap == 0 or len(clean) == 0:
        return clean
    size = clean.shape[-1]
    # placement: shrink, rotate and shift the digit (inverse map for grid_sample, normalized coordinates)
    scale = 1 - gap * stack(draws, "shrink")
    angle = torch.deg2rad(gap * stack(draws, "angle"))
    shift = stack(draws, "shift") * (1 - scale)[:, None]  # anywhere that keeps the digit on the canvas
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], 1)  # N×2×2
    theta = torch.cat([inv, -(inv @ shift[:, :, None])], 2)
    grid = F.affine_grid(theta, list(clean.shape), align_corners=False)
    digit = F.grid_sample(clean, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)
    # clutter behind the digit, then the faded digit over it
    texture = F.interpolate(stack(draws, "texture")[:, None], size=(size, size), mode="bilinear", align_corners=False)
    background = torch.maximum(gap * TEXTURE * texture, gap * stack(draws, "strokes")[:, None])
    x = background * (1 - digit) + (1 - gap * stack(draws, "fade"))[:, None, None, None] * digit
    for i, d in enumerate(draws):  # a bar across the canvas, vertical or horizontal; opacity grows with the gap
        if d["occlude"] < gap * OCCLUDE:
            bar = d["bar"]
            width, length = max(1, round(size * (0.15 + 0.2 * bar[0]))), round(size * (0.4 + 0.5 * bar[1]))
            x0, y0 = round((size - width) * bar[2]), round((size - length) * bar[3])
            box = (
                (slice(y0, y0 + length), slice(x0, x0 + width))
                if bar[0] < 0.5
                else (slice(x0, x0 + width), slice(y0, y0 + length))
            )
            x[i, 0][box] = (1 - gap) * x[i, 0][box] + gap * 0.5 * bar[4]
    # light: night darkens, day washes out
    night = torch.as_tensor([d["night"] for d in draws])
    light = stack(draws, "light")
    dark = 1 - gap * (NIGHT[0] + light * (NIGHT[1] - NIGHT[0]))
    glare = gap * (GLARE[0] + light * (GLARE[1] - GLARE[0]))
    x = torch.where(
        night[:, None, None, None],
        x * dark[:, None, None, None],
        glare[:, None, None, None] + (1 - glare[:, None, None, None]) * x,
    )
    x = blur(x, gap * stack(draws, "sigma"))
    noise_sd = gap * torch.where(night, NOISE[1], NOISE[0])
    return (x + noise_sd[:, None, None, None] * stack(draws, "noise")[:, None]).clamp(0, 1)


def blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """A separable Gaussian blur with its own σ per image (reflect padding, like torchvision's)."""
    n = len(x)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(offsets[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # N×(2r+1)
    y = F.pad(x.transpose(0, 1), (radius,) * 4, mode="reflect")  # 1×N×H×W: one group per image
    y = F.conv2d(y, k[:, None, None, :], groups=n)
    y = F.conv2d(y, k[:, None, :, None], groups=n)
    return y.transpose(0, 1)


def field_rng(split_seed: int, index: int) -> np.random.Generator:
    """Image ``index`` (of scikit-learn's 1,797) gets its own stream: it renders alike in any split or subset."""
    return np.random.default_rng([split_seed, index, 0xF1E1D])


@register_dataset("digits_field", params_class=FieldParams)
def digits_field(cfg) -> DatasetBundle:
    p = build(FieldParams, cfg.data.params, "data.params")
    if not 0 <= p.gap <= 1:
        raise ConfigError(f"data.params.gap must be in [0, 1], got {p.gap}")
    lt_params = {f.name: getattr(p, f.name) for f in dataclasses.fields(DigitsParams)}
    clean = digits_lt(cfg.model_copy(update={"data": cfg.data.model_copy(update={"params": lt_params})}))
    splits = {}
    for name, split in clean.splits.items():
        if name == "pool":  # the generator's and the judge's world stays clean
            splits[name] = split
            continue
        indices = [int(i.rsplit("-", 1)[1]) for i in split.ids]
        size = split.images.shape[-1]
        images = render_field(split.images, p.gap, [draw(field_rng(cfg.data.split_seed, i), size) for i in indices])
        splits[name] = TensorImages(images, split.labels, split.ids)
    return dataclasses.replace(clean, name="digits_field", splits=splits)
