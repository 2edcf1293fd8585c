"""Predictions and metrics. ``predict`` returns a DataFrame that is also the logged predictions file."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from harness.data.base import DatasetBundle, ImageView, LabeledImages, TensorImages
from harness.transforms import to_float01


@torch.no_grad()
def class_probs(model, images: LabeledImages, device: torch.device, batch_size: int = 512,
                workers: int = 0, transform=None, amp: torch.dtype | None = None,
                distributed: bool = False) -> np.ndarray:
    """Softmax outputs for every image of a split, through the eval ``transform`` (None: as the images are), under
    autocast to ``amp`` (None: fp32). ``distributed``: every DDP rank calls this in lockstep, evaluates every
    world-th image and the ranks gather the full result (the same on every rank as one process's)."""
    from harness import distributed as dist
    from harness.train import autocast

    model.eval()
    rank, world = (dist.rank(), dist.world()) if distributed else (0, 1)
    rows = np.arange(rank, len(images), world)
    if isinstance(images, TensorImages) and transform is None:
        chunks = images.images[torch.as_tensor(rows, dtype=torch.long)].split(batch_size) if world > 1 \
            else images.images.split(batch_size)
    else:
        view = ImageView([(images, rows)], transform)
        loader = DataLoader(view, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
        chunks = (x for x, _ in loader)
    with autocast(device, amp):
        out = [model(to_float01(x.to(device, non_blocking=True))).float().softmax(-1).cpu() for x in chunks]
    probs = torch.cat(out).numpy() if out else np.zeros((0, 0))
    if world == 1:
        return probs
    shards = [None] * world
    torch.distributed.all_gather_object(shards, (rows, probs))
    width = max(p.shape[1] for _, p in shards if len(p)) if len(images) else 0
    full = np.zeros((len(images), width), dtype=np.float32)
    for r, p in shards:
        if len(r):
            full[r] = p
    return full


def predict(model, images: LabeledImages, device: torch.device, workers: int = 0, transform=None,
            amp: torch.dtype | None = None, distributed: bool = False) -> pd.DataFrame:
    probs = class_probs(model, images, device, workers=workers, transform=transform, amp=amp,
                        distributed=distributed)
    y_true = images.labels
    frame = pd.DataFrame({"index": np.arange(len(y_true)), "id": images.ids, "y_true": y_true,
                          "y_pred": probs.argmax(1), "p_true": probs[np.arange(len(y_true)), y_true]})
    extra = getattr(images, "extra", None)
    if extra is not None:
        frame = pd.concat([frame, extra.reset_index(drop=True)], axis=1)
    return frame


def evaluate_split(model, data: DatasetBundle, split: str, device, workers: int = 0, amp: torch.dtype | None = None,
                   distributed: bool = False):
    """Metrics and predictions of one split; ``distributed``: sharded over the DDP ranks (see ``class_probs``)."""
    preds = predict(model, data.splits[split], device, workers, data.eval_transform, amp, distributed)
    return data.evaluate(preds.y_true.to_numpy(), preds.y_pred.to_numpy()), preds
