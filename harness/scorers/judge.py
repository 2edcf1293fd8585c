"""``judge``: the embedded scorer. A classifier trained on the dataset's pool stands in for CLIP: the image–text
score is its probability of the intended class, the image–image score the cosine of its features to the source's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from harness.config import build, stable_hash
from harness.data.base import to_tensor01
from harness.generators.tiny_ddpm import pool_identity, random_shift
from harness.io import atomic_path, lock
from harness.models import SmallCNN
from harness.registry import register_scorer
from harness.scorers.base import Scorer


@dataclass
class JudgeParams:
    width: int = 32
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 1


def train_judge(images: torch.Tensor, labels: torch.Tensor, num_classes: int, p: JudgeParams) -> SmallCNN:
    g = torch.Generator().manual_seed(p.seed)
    torch.manual_seed(p.seed)
    model = SmallCNN(num_classes, images.shape[1], p.width)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    model.train()
    for _ in tqdm(range(p.epochs), desc="train judge", unit="epoch", mininterval=2):
        for idx in torch.randperm(len(images), generator=g).split(p.batch_size):
            x = (random_shift(images[idx] * 2 - 1, g) + 1) / 2
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@register_scorer("judge")
class Judge(Scorer):
    name = "judge"

    def __init__(self, model: SmallCNN, size: int, channels: int):
        self.model, self.size, self.channels = model.eval(), size, channels

    @classmethod
    def from_config(cls, cfg, data, cache: Path, device="cpu") -> Judge:
        p = build(JudgeParams, cfg.scorer.params, "scorer.params")
        pool = data.splits["pool"]
        key = stable_hash({"data": pool_identity(cfg, pool), "params": p.__dict__})
        path = cache / "scorer" / f"judge-{key}.safetensors"
        model = SmallCNN(data.num_classes, data.channels, p.width)
        with lock(path):
            if not path.exists():
                images = torch.stack([pool.load(i) for i in range(len(pool))])
                trained = train_judge(images, torch.as_tensor(pool.labels), data.num_classes, p)
                with atomic_path(path) as tmp:
                    save_file(trained.state_dict(), str(tmp))
        model.load_state_dict(load_file(str(path)))
        return cls(model, cfg.data.image_size, data.channels)

    @torch.no_grad()
    def score(self, images, prompts, labels, sources):
        x = torch.stack([to_tensor01(im, self.size, self.channels) for im in images])
        s = torch.stack([to_tensor01(im, self.size, self.channels) for im in sources])
        feats, src_feats = self.model.features(x), self.model.features(s)
        probs = self.model.head(feats).softmax(-1)
        text = probs[torch.arange(len(labels)), torch.as_tensor(labels)]
        image = F.cosine_similarity(feats, src_feats, dim=-1)
        return text.numpy().astype(np.float64), image.numpy().astype(np.float64)
