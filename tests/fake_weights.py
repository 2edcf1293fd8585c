"""Tiny random pipelines and CLIPs saved to disk as the real weights are staged, so that tests run the loading code
that ``tiny: true`` skips: ``save_pretrained`` into a plain folder, or into a Hugging Face hub cache
(``HUB/models--ORG--NAME/snapshots/REV/…`` with ``refs/main`` naming REV), with normal file names or only the
``fp16`` variant's (``model.fp16.safetensors``, weights in float16, as the real repos ship them)."""

from __future__ import annotations

from pathlib import Path

import torch

SDXL_REFINER = "stabilityai/stable-diffusion-xl-refiner-1.0"
CLIP_B32 = "openai/clip-vit-base-patch32"
CLIP_B16 = "openai/clip-vit-base-patch16"
REVISION = "0" * 39 + "1"  # a commit hash (40 hex digits), as refs/main holds one


def save_tiny_sdxl_img2img(folder, variant: str | None = None, seed: int = 0, sample_size: int = 32) -> Path:
    """The tiny SDXL-refiner-like img2img pipeline, as a diffusers folder (model_index.json, unet/, vae/, …)."""
    from harness.weights.tiny import tiny_sdxl_img2img

    pipe = tiny_sdxl_img2img(seed, sample_size=sample_size)
    if variant == "fp16":
        pipe.to(dtype=torch.float16)
    pipe.save_pretrained(folder, variant=variant)
    return Path(folder)


def save_tiny_clip(folder, variant: str | None = None, seed: int = 0) -> Path:
    """The tiny CLIPModel and its CLIPProcessor, in one folder, as the hub's CLIP repos hold them."""
    from harness.weights.tiny import tiny_clip

    model, processor = tiny_clip(seed)
    if variant == "fp16":
        model = model.to(torch.float16)
    model.save_pretrained(folder, variant=variant)
    processor.save_pretrained(folder)
    return Path(folder)


def hub_snapshot(hub, repo_id: str, revision: str = REVISION) -> Path:
    """The snapshot folder of ``repo_id`` in the hub cache ``hub`` (what ``HF_HUB_CACHE`` names), with
    ``refs/main`` pointing to it; files written there are found as huggingface_hub's cached files."""
    from huggingface_hub.file_download import repo_folder_name

    repo = Path(hub) / repo_folder_name(repo_id=repo_id, repo_type="model")
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)  # no newline, as huggingface_hub writes it
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def write_fake_hub_cache(hub, variant: str | None = None) -> Path:
    """A hub cache holding the paper's generator and CLIP filter (and FLYP's CLIP) as tiny random models."""
    save_tiny_sdxl_img2img(hub_snapshot(hub, SDXL_REFINER), variant)
    for repo_id in (CLIP_B32, CLIP_B16):
        save_tiny_clip(hub_snapshot(hub, repo_id), variant)
    return Path(hub)
