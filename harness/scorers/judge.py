"""``judge``: the embedded scorer. A classifier trained on the dataset's pool stands in for CLIP: the image–text
score is its probability of the intended class, the image–image score the cosine of its features to the source's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from harness.config import ConfigError, build, stable_hash
from harness.core.io import atomic_path, lock
from harness.core.registry import register_scorer
from harness.data.base import to_tensor01
from harness.generators.tiny_ddpm import pool_identity, random_shift
from harness.models.base import SmallCNN
from harness.scorers.base import Scorer


@dataclass
class JudgeParams:
    width: int = 32
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 1
    # "broad": generic image augmentation (random placement, random textured backgrounds, contrast and brightness,
    # blur, noise, occluding patches; torchvision.transforms.v2 ops), a stand-in for the breadth of CLIP's
    # training data, so the judge rates a digit in a cluttered, degraded scene by its digit; "none": the clean pool
    # with ±1-pixel shifts only. ``augment_strength`` scales every magnitude; ``augment_p`` is the share of
    # training images that get the broad augmentation (the rest stay clean).
    augment: Literal["broad", "none"] = "broad"
    augment_strength: float = 0.6
    augment_p: float = 0.8


def random_texture(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """``n`` generic random backgrounds in [0, 1], N×1×size×size: smooth noise (bicubic from a random 2–8 cell grid)
    at a random level and amplitude, plus fine grain."""
    cells = int(torch.randint(2, 9, (1,), generator=g))
    smooth = F.interpolate(torch.rand(n, 1, cells, cells, generator=g), size=size, mode="bicubic") - 0.5
    level, amp, grain = torch.rand(3, n, 1, 1, 1, generator=g)
    fine = torch.rand(n, 1, size, size, generator=g) - 0.5
    return (0.6 * level + amp * smooth + 0.3 * grain * fine).clamp(0, 1)


def broad_augment(images: torch.Tensor, g: torch.Generator, strength: float = 1.0, p: float = 0.8) -> torch.Tensor:
    """Generic augmentation of N×C×S×S images in [0, 1] (bright strokes on a dark background), each image with its
    own draws: placement (rotation, scale, shift), a random textured background under strokes of a random shade,
    blur, sensor noise, an occluding patch, brightness and contrast. A share ``1 − p`` is left as it is."""
    from torchvision.transforms import v2

    n, c, size, _ = images.shape
    s = strength
    chosen = torch.nonzero(torch.rand(n, generator=g) < p).flatten()
    if len(chosen) == 0:
        return images
    m, x = len(chosen), images[chosen]
    # placement: one affine per image (rotation ±20°·s, scale 1 − 0.45·s … 1.1, shift ±20 %·s)
    angle = (torch.rand(m, generator=g) * 2 - 1) * np.deg2rad(20) * s
    scale = 1.1 - torch.rand(m, generator=g) * (0.1 + 0.45 * s)
    shift = (torch.rand(m, 2, generator=g) * 2 - 1) * 0.4 * s
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    # a textured background of any shade under strokes of any shade
    bg = random_texture(m, size, g).expand(-1, c, -1, -1) * min(1.0, s)
    ink = 0.3 + 0.7 * torch.rand(m, 1, 1, 1, generator=g)
    x = bg * (1 - x) + ink * x
    # blur and sensor noise (torchvision v2 ops), each on a random half of the images
    sigma = 0.1 + 1.2 * s * float(torch.rand(1, generator=g))
    blurred = torch.rand(m, generator=g) < 0.6
    if blurred.any():
        x[blurred] = v2.functional.gaussian_blur(x[blurred], [3, 3], [sigma, sigma])
    noisy = torch.rand(m, generator=g) < 0.6
    x[noisy] = x[noisy] + torch.randn(x[noisy].shape, generator=g) * 0.12 * s * torch.rand(1, generator=g)
    # an occluding patch of random size, place and shade on a random half
    hw = (torch.rand(m, 2, generator=g) * 0.35 * s * size).long() + 1
    corner = (torch.rand(m, 2, generator=g) * size).long()
    rows, cols = torch.arange(size).view(1, -1, 1), torch.arange(size).view(1, 1, -1)
    box = (
        (rows >= corner[:, :1, None])
        & (rows < (corner[:, :1] + hw[:, :1])[..., None])
        & (cols >= corner[:, 1:, None])
        & (cols < (corner[:, 1:] + hw[:, 1:])[..., None])
    )
    box &= (torch.rand(m, generator=g) < 0.5).view(-1, 1, 1)
    x = torch.where(box[:, None], torch.rand(m, 1, 1, 1, generator=g), x)
    # brightness and contrast
    gain = 0.5 + torch.rand(m, 1, 1, 1, generator=g)
    offset = (torch.rand(m, 1, 1, 1, generator=g) - 0.5) * 0.4 * s
    out = images.clone()
    out[chosen] = (x * gain + offset).clamp(0, 1)
    return out


def train_judge(images: torch.Tensor, labels: torch.Tensor, num_classes: int, p: JudgeParams) -> SmallCNN:
    g = torch.Generator().manual_seed(p.seed)
    torch.manual_seed(p.seed)
    model = SmallCNN(num_classes, images.shape[1], p.width)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    model.train()
    for _ in tqdm(range(p.epochs), desc="train judge", unit="epoch", mininterval=2):
        for idx in torch.randperm(len(images), generator=g).split(p.batch_size):
            x = (random_shift(images[idx] * 2 - 1, g) + 1) / 2
            if p.augment == "broad":
                x = broad_augment(x, g, p.augment_strength, p.augment_p)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def judge_key(cfg, pool, p: JudgeParams) -> str:
    """The trained judge's cache key: its pool and every param (the augmentation, its strength and share among
    them)."""
    return stable_hash({"data": pool_identity(cfg, pool), "params": p.__dict__})


@register_scorer("judge", params_class=JudgeParams)
class Judge(Scorer):
    name = "judge"

    # its features put distinct digits of one class as close as cosine 0.99 (even centred): only copies pass 0.995
    near_duplicate = 0.995

    def __init__(self, model: SmallCNN, size: int, channels: int, centre_on=None):
        self.model, self.size, self.channels = model.eval(), size, channels
        self.centre_on, self.centre = centre_on, None  # the images whose mean feature ``embed_images`` subtracts

    @classmethod
    def params(cls, cfg) -> JudgeParams:
        p = build(JudgeParams, cfg.scorer.params, "scorer.params")
        if not (p.augment_strength > 0 and 0 <= p.augment_p <= 1):
            raise ConfigError(
                f"scorer.params: augment_strength must be > 0 and augment_p in [0, 1], got "
                f"augment_strength={p.augment_strength}, augment_p={p.augment_p}"
            )
        return p

    @classmethod
    def prepare(cls, cfg, data, cache: Path) -> Path:
        """Train the judge on the pool once per key (cached, under a lock)."""
        p = cls.params(cfg)
        pool = data.splits.get("pool")
        if pool is None:
            raise ConfigError(f"the judge trains on the dataset's 'pool' split; {data.name} has none")
        path = cache / "scorer" / f"judge-{judge_key(cfg, pool, p)}.safetensors"
        with lock(path):
            if not path.exists():
                images = torch.stack([pool.load(i) for i in range(len(pool))])
                trained = train_judge(images, torch.as_tensor(pool.labels), data.num_classes, p)
                with atomic_path(path) as tmp:
                    save_file(trained.state_dict(), str(tmp))
        return path

    @classmethod
    def from_config(cls, cfg, data, cache: Path, device="cpu") -> Judge:
        path = cls.prepare(cfg, data, cache)  # a no-op once the pipeline's step has trained it
        model = SmallCNN(data.num_classes, data.channels, cls.params(cfg).width)
        model.load_state_dict(load_file(str(path)))
        return cls(model, cfg.data.image_size, data.channels, data.splits.get("pool"))

    @torch.no_grad()
    def features(self, images, batch_size: int = 256) -> torch.Tensor:
        out = [torch.zeros(0, self.model.head.in_features)]
        for start in range(0, len(images), batch_size):
            x = torch.stack([to_tensor01(im, self.size, self.channels) for im in images[start : start + batch_size]])
            out.append(self.model.features(x))
        return torch.cat(out)

    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        """The judge's penultimate features less their mean over its training pool, L2-normalised: its features are
        non-negative (after a ReLU), so uncentred any two digits have a cosine near 1 and it would tell nothing."""
        if self.centre is None:
            pool = self.centre_on
            seen = [pool.raw(i) for i in range(len(pool))] if pool is not None else []
            self.centre = self.features(seen).mean(0) if seen else torch.zeros(self.model.head.in_features)
        return F.normalize(self.features(images) - self.centre, dim=-1)

    @torch.no_grad()
    def embed_classes(self, class_names: list[str]) -> torch.Tensor:
        """The judge reads no text: its head's weight vector of each class, in the space of its features, stands in
        for the class prompt's embedding (the nearest one is its bias-free prediction)."""
        return F.normalize(self.model.head.weight.detach()[: len(class_names)], dim=-1)

    @torch.no_grad()
    def score(self, images, prompts, labels, sources):
        x = torch.stack([to_tensor01(im, self.size, self.channels) for im in images])
        s = torch.stack([to_tensor01(im, self.size, self.channels) for im in sources])
        feats, src_feats = self.model.features(x), self.model.features(s)
        probs = self.model.head(feats).softmax(-1)
        text = probs[torch.arange(len(labels)), torch.as_tensor(labels)]
        image = F.cosine_similarity(feats, src_feats, dim=-1)
        return text.numpy().astype(np.float64), image.numpy().astype(np.float64)
