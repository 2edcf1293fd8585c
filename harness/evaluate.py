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
                workers: int = 0, transform=None) -> np.ndarray:
    """Softmax outputs for every image of a split, through the eval ``transform`` (None: as the images are)."""
    model.eval()
    if isinstance(images, TensorImages) and transform is None:
        chunks = images.images.split(batch_size)
    else:
        view = ImageView([(images, np.arange(len(images)))], transform)
        loader = DataLoader(view, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
        chunks = (x for x, _ in loader)
    out = [model(to_float01(x.to(device, non_blocking=True))).float().softmax(-1).cpu() for x in chunks]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def predict(model, images: LabeledImages, device: torch.device, workers: int = 0, transform=None) -> pd.DataFrame:
    probs = class_probs(model, images, device, workers=workers, transform=transform)
    y_true = images.labels
    frame = pd.DataFrame({"index": np.arange(len(y_true)), "id": images.ids, "y_true": y_true,
                          "y_pred": probs.argmax(1), "p_true": probs[np.arange(len(y_true)), y_true]})
    extra = getattr(images, "extra", None)
    if extra is not None:
        frame = pd.concat([frame, extra.reset_index(drop=True)], axis=1)
    return frame


def evaluate_split(model, data: DatasetBundle, split: str, device, workers: int = 0):
    preds = predict(model, data.splits[split], device, workers, data.eval_transform)
    return data.evaluate(preds.y_true.to_numpy(), preds.y_pred.to_numpy()), preds
