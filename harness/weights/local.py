"""Pretrained weights from a local folder or the local Hugging Face hub cache, never the network, and the one-line
errors that say what to do when loading fails: no local copy, or a copy holding only another variant's files
(``hf download ... --include "*.fp16.safetensors"`` stages only ``model.fp16.safetensors``-style names)."""

from __future__ import annotations

import re
from pathlib import Path

from harness.core.errors import DataError

WEIGHT_SUFFIXES = (".safetensors", ".bin")
SHARD = re.compile(r"-\d{5}-of-\d{5}$")


def local_folder(model: str) -> Path | None:
    """The folder ``from_pretrained`` reads: ``model`` itself if it is a folder, else the snapshot of the hub repo
    id ``model`` in the local cache (``HF_HUB_CACHE``, ``refs/main``); None when neither exists."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (OSError, ValueError):  # not in the cache, or not a repo id
        return None


def weight_variants(folder: Path) -> tuple[set[str], bool]:
    """The variants among the weight files under ``folder`` (``model.fp16.safetensors``,
    ``diffusion_pytorch_model.fp16-00001-of-00002.safetensors`` → fp16) and whether every folder holding weights
    (each pipeline component) has variant-less ones too (the refiner's single-file checkpoint at the top does not
    make up for a ``unet/`` with only fp16 files)."""
    variants, plain = set(), {}
    for f in folder.rglob("*"):
        if f.suffix not in WEIGHT_SUFFIXES:
            continue
        parts = SHARD.sub("", f.stem).split(".")
        if len(parts) > 1:
            variants.add(parts[-1])
        plain[f.parent] = plain.get(f.parent, False) or len(parts) == 1
    return variants, all(plain.values())


def load_error(model: str, variant: str | None, error: Exception, key: str, hint: str) -> DataError:
    """Why ``from_pretrained`` failed on ``model`` (the config key ``key``, e.g. ``generator.params.model``), as one
    line that names the setting to change. ``hint``: where to get the weights when there is no local copy."""
    from huggingface_hub.constants import HF_HUB_CACHE

    variant_key = key.rsplit(".", 1)[0] + ".variant"
    folder = local_folder(model)
    if folder is None:
        return DataError(
            f"{key}: no local copy of {model!r} (looked for a folder of that name and in the Hugging Face cache "
            f"{HF_HUB_CACHE}). On a connected machine run `hf download {model}` (or `huggingface-cli download "
            f"{model}`) and copy its HF cache here (or set HF_HUB_CACHE), or point {key} to a folder {hint}"
        )
    variants, plain = weight_variants(folder)
    if variant is None and variants and not plain:
        found = sorted(variants)
        return DataError(
            f"{key}: {model!r} ({folder}) holds only {' / '.join(found)} variant weight files "
            f"(names like model.{found[0]}.safetensors): set {variant_key}: {found[0]}"
        )
    if variant is not None and variant not in variants:
        other = f"set {variant_key}: {sorted(variants)[0]}" if variants and not plain else f"set {variant_key}: null"
        return DataError(
            f"{key}: {model!r} ({folder}) has no {variant!r} variant weight files (names like "
            f"model.{variant}.safetensors): {other}"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return DataError(f"{key}: could not load {model!r} from {folder}: {type(error).__name__}: {first}")
