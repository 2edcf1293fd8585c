"""``clip``: the paper's filter. CLIP (default ``openai/clip-vit-base-patch32``, local files only) scores each
synthetic image by the cosine between its embedding and the filter prompt's, and records the cosine to the source
image's embedding. The filter prompt is a template over the class name (the paper's "a photo of {name} in the
wild" / "a photo of {name}"), which may differ from the generation prompt when class descriptions are used;
without a template the item's generation prompt is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import ConfigError, build
from harness.core.registry import register_scorer
from harness.scorers.base import Scorer
from harness.weights.clip import load_clip, pooled

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DTYPES = {
    "auto": None,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}
PROMPT_NAMES = ("ours", "folder")


def folder_name(name: str) -> str:
    """The authors' output folder of a class (gene_img.py:229-232 writes to OUT/name-with-underscores/): the prompt
    of their CLIP filter names the folder, so a "/" in a name leaves only what precedes it."""
    return name.replace(" ", "_").split("/")[0]


def scorer_dtype(name: str, device: torch.device) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"scorer.params.dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name] or (torch.float16 if device.type == "cuda" else torch.float32)


@dataclass
class ClipParams:
    model: str = DEFAULT_CLIP  # a hub id (found in the local HF cache) or a folder
    variant: str | None = None  # "fp16" when the copy holds only the fp16 variant files (model.fp16.safetensors)
    prompt: str | None = None  # filter prompt template over {name}; None: the generation prompt
    batch_size: int = 64
    # auto (float16 on CUDA, float32 on CPU) | float16 (fp16) | float32 (fp32: the authors, whose CLIPModel loads in
    # float32, data_generation/ImageNet_LT/comp_clip_scores.py:18)
    dtype: str = "auto"
    # the class names in the filter prompt: ours (the dataset's) | folder (the authors' ImageNet-LT: the name of the
    # class's output folder, spaces as underscores, cut at a "/" that made a subfolder; comp_clip_scores.py:58-63)
    prompt_names: str = "ours"
    tiny: bool = False  # a tiny random CLIP built in-process (tests, *_tiny experiments)
    tiny_seed: int = 0


@register_scorer("clip", params_class=ClipParams)
class ClipScorer(Scorer):
    name = "clip"

    def __init__(self, model, processor, class_names: list[str], p: ClipParams, device="cpu"):
        self.device = torch.device(device)
        if p.prompt_names not in PROMPT_NAMES:
            raise ConfigError(f"scorer.params.prompt_names must be ours or folder, got {p.prompt_names!r}")
        self.model = model.to(self.device, scorer_dtype(p.dtype, self.device)).eval()
        self.processor, self.class_names, self.p = processor, class_names, p

    @classmethod
    def from_config(cls, cfg, data, cache: Path | None, device="cpu") -> ClipScorer:
        """The config adapter: ``scorer.params`` and the dataset's class names (no cache)."""
        return cls.load(build(ClipParams, cfg.scorer.params, "scorer.params"), list(data.class_names), device)

    @classmethod
    def load(cls, p: ClipParams, class_names: list[str], device="cpu") -> ClipScorer:
        """The CLIP of ``p`` (local files only) scoring against ``class_names``, on ``device``."""
        model, processor = load_clip(p.model, p.tiny, p.tiny_seed, variant=p.variant)
        return cls(model, processor, list(class_names), p, device)

    def filter_prompts(self, prompts: list[str], labels: list[int]) -> list[str]:
        if self.p.prompt is None:
            return list(prompts)
        named = folder_name if self.p.prompt_names == "folder" else str
        return [self.p.prompt.format(name=named(self.class_names[int(y)])) for y in labels]

    def embed_unique_images(self, images) -> torch.Tensor:
        """Each distinct image object embedded once: the sources repeat, one per synthetic image of a real one
        (``score_pool`` passes the same object for the same real image)."""
        row: dict[int, int] = {}
        unique = []
        for im in images:
            if id(im) not in row:
                row[id(im)] = len(unique)
                unique.append(im)
        emb = self.embed_images(unique)
        return emb[torch.tensor([row[id(im)] for im in images], dtype=torch.long, device=emb.device)]

    def pixel_batch(self, images):
        """uint8 CHW tensors, stacked into one batch when the sizes agree (generated images do), so that CLIP's
        image processor resizes, crops and normalizes the whole batch in a few tensor ops, on the scoring device,
        instead of image by image through PIL."""
        arrays = [np.asarray(im if im.mode == "RGB" else im.convert("RGB")) for im in images]
        if len({a.shape for a in arrays}) == 1:
            return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return [torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrays]

    @torch.inference_mode()
    def embed_images(self, images) -> torch.Tensor:
        out = []
        for start in range(0, len(images), self.p.batch_size):
            batch = self.pixel_batch(images[start : start + self.p.batch_size])
            pixels = self.processor.image_processor(
                images=batch, return_tensors="pt", device=self.device, disable_grouping=False
            ).pixel_values  # batched on CPU too
            pixels = pixels.to(self.device, self.model.dtype)
            out.append(F.normalize(pooled(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1))
        return torch.cat(out)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        unique = sorted(set(texts))  # many images share a prompt
        tokens = self.processor.tokenizer(unique, padding=True, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        emb = F.normalize(pooled(self.model.get_text_features(**tokens)).float(), dim=-1)
        row = {t: i for i, t in enumerate(unique)}
        return emb[torch.tensor([row[t] for t in texts], device=emb.device)]

    def embed_classes(self, class_names: list[str]) -> torch.Tensor:
        """The filter prompt of each class (``prompt``; "a photo of {name}" without one), embedded as text."""
        template = self.p.prompt or "a photo of {name}"
        named = folder_name if self.p.prompt_names == "folder" else str
        return self.embed_texts([template.format(name=named(name)) for name in class_names])

    def score(self, images, prompts, labels, sources):
        image_emb = self.embed_images(images)
        text_emb = self.embed_texts(self.filter_prompts(prompts, labels))
        source_emb = self.embed_unique_images(sources)
        text = (image_emb * text_emb).sum(-1)
        image = (image_emb * source_emb).sum(-1)
        return text.cpu().numpy().astype(np.float64), image.cpu().numpy().astype(np.float64)
