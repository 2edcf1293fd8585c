"""CLIP weights from a local folder or the local hub cache (or a tiny random CLIP), shared by the ``clip`` scorer and
the FLYP classifier."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def pooled(output) -> torch.Tensor:
    """transformers ≥ 5 returns a model output from ``get_*_features``; earlier versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_clip(
    model: str,
    tiny: bool = False,
    tiny_seed: int = 0,
    what: str = "scorer.params.model",
    variant: str | None = None,
    dtype: torch.dtype = torch.float32,
):
    """(CLIPModel, CLIPProcessor) from a local folder or the local hub cache, its weights in ``dtype`` (float32
    unless asked: transformers ≥ 5 would keep an fp16 checkpoint's float16); a failure is a one-line error."""
    if tiny:
        from harness.weights.tiny import tiny_clip

        return tiny_clip(tiny_seed)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import CLIPModel, CLIPProcessor

    from harness.weights.local import load_error

    path = Path(model).expanduser()
    source = str(path) if path.exists() else model
    try:
        return (
            CLIPModel.from_pretrained(
                source, local_files_only=True, variant=variant, torch_dtype=dtype, low_cpu_mem_usage=True
            ),  # accelerate: no random init before loading
            CLIPProcessor.from_pretrained(source, local_files_only=True),
        )
    except (OSError, ValueError) as e:
        raise load_error(model, variant, e, what, "holding the model and its processor") from None
