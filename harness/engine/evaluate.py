"""Predictions and metrics. ``predict`` returns a DataFrame that is also the logged predictions file."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from harness.config.transforms import to_float01
from harness.data.base import DatasetBundle, ImageView, LabeledImages, TensorImages


def eval_loader(
    images: LabeledImages,
    rows: np.ndarray,
    transform,
    batch_size: int,
    workers: int,
    device: torch.device,
    kept: dict | None,
) -> DataLoader:
    """A loader over ``rows`` of a split. ``kept``: a dict that keeps the loader (and its workers) for the next
    call, so evaluating the validation split every epoch starts its workers once."""
    make = lambda: DataLoader(
        ImageView([(images, rows)], transform),
        batch_size=batch_size,  # noqa: E731
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=kept is not None and workers > 0,
    )
    if kept is None:
        return make()
    key = (id(images), len(rows), int(rows[0]) if len(rows) else -1, id(transform), batch_size, workers)
    if key not in kept:
        kept[key] = make()
    return kept[key]


@torch.no_grad()
def class_probs(
    model,
    images: LabeledImages,
    device: torch.device,
    batch_size: int = 512,
    workers: int = 0,
    transform=None,
    amp: torch.dtype | None = None,
    distributed: bool = False,
    loaders: dict | None = None,
    logits: bool = False,
) -> np.ndarray:
    """Softmax outputs (``logits``: the raw logits) for every image of a split, through the eval ``transform`` (None:
    as the images are), under autocast to ``amp`` (None: fp32). ``distributed``: every DDP rank calls this in
    lockstep, evaluates every world-th image and the ranks gather the full result (the same on every rank as one
    process's)."""
    from harness.core import distributed as dist
    from harness.engine.train import autocast, clear_shm_errors

    model.eval()
    rank, world = (dist.rank(), dist.world()) if distributed else (0, 1)
    rows = np.arange(rank, len(images), world)
    if isinstance(images, TensorImages) and transform is None:
        chunks = (
            images.images[torch.as_tensor(rows, dtype=torch.long)].split(batch_size)
            if world > 1
            else images.images.split(batch_size)
        )
    else:
        chunks = (x for x, _ in eval_loader(images, rows, transform, batch_size, workers, device, loaders))
    with autocast(device, amp), clear_shm_errors():
        outputs = (model(to_float01(x.to(device, non_blocking=True))).float() for x in chunks)
        out = [(o if logits else o.softmax(-1)).cpu() for o in outputs]
    if world == 1:
        return torch.cat(out).numpy() if out else np.zeros((0, 0))
    return gather_rows(out, len(images), device)


def gather_rows(out: list[torch.Tensor], n: int, device: torch.device) -> np.ndarray:
    """The whole split's rows from every rank's batches of its rows ``rank, rank + world, …``: padded to
    ceil(n / world) rows each and gathered as one tensor (on ``device``, which is the backend's), so row
    ``i · world + r`` is rank r's i-th and the padding falls past ``n``."""
    from harness.core import distributed as dist

    world = dist.world()
    width = torch.tensor(out[0].shape[1] if out else 0, device=device)
    torch.distributed.all_reduce(width, op=torch.distributed.ReduceOp.MAX)  # a rank may hold no rows (n < world)
    local = torch.cat(out).to(device) if out else torch.zeros((0, int(width)), device=device)
    gathered = dist.gather_padded(local, math.ceil(n / world))
    return gathered.transpose(0, 1).reshape(-1, int(width))[:n].cpu().numpy()


def predict(
    model,
    images: LabeledImages,
    device: torch.device,
    workers: int = 0,
    transform=None,
    amp: torch.dtype | None = None,
    distributed: bool = False,
    loaders: dict | None = None,
) -> pd.DataFrame:
    probs = class_probs(
        model, images, device, workers=workers, transform=transform, amp=amp, distributed=distributed, loaders=loaders
    )
    y_true = images.labels
    frame = pd.DataFrame(
        {
            "index": np.arange(len(y_true)),
            "id": images.ids,
            "y_true": y_true,
            "y_pred": probs.argmax(1),
            "p_true": probs[np.arange(len(y_true)), y_true],
        }
    )
    extra = getattr(images, "extra", None)
    if extra is not None:
        frame = pd.concat([frame, extra.reset_index(drop=True)], axis=1)
    return frame


def evaluate_split(
    model,
    data: DatasetBundle,
    split: str,
    device,
    workers: int = 0,
    amp: torch.dtype | None = None,
    distributed: bool = False,
):
    """Metrics and predictions of one split; ``distributed``: sharded over the DDP ranks (see ``class_probs``)."""
    preds = predict(model, data.splits[split], device, workers, data.eval_transform, amp, distributed, data.loaders)
    return data.evaluate(preds.y_true.to_numpy(), preds.y_pred.to_numpy()), preds


def evaluate_final(model, data, device, amp=None) -> tuple[dict[str, float], dict[str, pd.DataFrame]]:
    """Test metrics of the selected model (named by report split, e.g. ``test_ood/f1_macro``) and the predictions
    of every test split and the validation split."""
    predictions, test_metrics = {}, {}
    for name, split in {**data.test_splits, "val": data.val_split}.items():
        metrics, preds = evaluate_split(model, data, split, device, data.num_workers, amp, distributed=True)
        predictions[split] = preds
        if name != "val":
            test_metrics.update({f"{name}/{k}": v for k, v in metrics.items()})
    return test_metrics, predictions
