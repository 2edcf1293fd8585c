"""The paper's classifiers: ResNet-10 (ImageNet-LT), a torchvision ResNet-50 ERM option, and FLYP fine-tuning of
CLIP (iWildCam). Images arrive in [0, 1]; each model normalizes (and for CLIP resizes) inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from harness.config import build
from harness.core.errors import MissingFileError
from harness.core.registry import register_model
from harness.models.base import Classifier

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# WiSE-FT / FLYP's iWildCam templates
IWILDCAM_TEMPLATES = ["a photo of {name}.", "{name} in the wild."]


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


class TorchvisionResNet(Classifier):
    """``features`` is the pooled trunk of a torchvision ResNet; ``head`` its final linear layer."""

    channels_last = True  # the trainer keeps it (and its inputs) channels-last on a GPU

    def __init__(self, net: ResNet):
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.head = net.fc
        net.fc = nn.Identity()
        self.net = net

    block: type = BasicBlock
    layers: tuple[int, ...] = ()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @classmethod
    def has_pretrained(cls, cfg) -> bool:
        return bool(build(ResNetParams, cfg.model.params, "model.params").weights)

    @classmethod
    def from_config(cls, cfg, num_classes: int, channels: int) -> TorchvisionResNet:
        p = build(ResNetParams, cfg.model.params, "model.params")
        net = ResNet(cls.block, list(cls.layers), num_classes=num_classes)
        if p.weights:
            load_backbone_weights(net, p.weights)
        return cls(net)


@dataclass
class ResNetParams:
    weights: str | None = None  # a local state-dict file (.pth / .safetensors); its fc is dropped if shapes differ


def load_backbone_weights(net: ResNet, path: str) -> None:
    from harness.models.base import load_weights

    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(
            f"model.params.weights: no file {p} (a local torchvision state dict; nothing is "
            f"downloaded: save one with torchvision.models.resnet50(weights=...).state_dict())"
        )
    state = load_weights(p)
    own = net.state_dict()
    state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    net.load_state_dict(state, strict=False)


@register_model("resnet10", params_class=ResNetParams)
class ResNet10(TorchvisionResNet):
    """ResNet-10: basic blocks, one per stage (torchvision's ResNet with layers [1, 1, 1, 1]). Trained from scratch,
    or started from ``base.checkpoint`` (the pipeline loads it) or ``model.params.weights``."""

    block, layers = BasicBlock, (1, 1, 1, 1)


@register_model("resnet50", params_class=ResNetParams)
class ResNet50(TorchvisionResNet):
    """torchvision ResNet-50 for ERM; ImageNet weights only from a local file (``model.params.weights``)."""

    block, layers = Bottleneck, (3, 4, 6, 3)


@dataclass
class FlypParams:
    model: str = "openai/clip-vit-base-patch16"  # a hub id (found in the local HF cache) or a folder
    variant: str | None = None  # "fp16" when the copy holds only the fp16 variant files (model.fp16.safetensors)
    templates: list[str] = field(default_factory=lambda: list(IWILDCAM_TEMPLATES))
    tiny: bool = False  # a tiny random CLIP (tests, *_tiny experiments)
    tiny_seed: int = 0


def trim_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask cut to the longest prompt among them, not CLIP's 77 positions: the text tower is causal
    and pools at the end-of-text token, so the padding after the longest prompt never changes an embedding."""
    n = max(1, int(mask.sum(1).max()))
    return ids[:, :n], mask[:, :n]


def scaled_cosines(scale: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``scale · a bᵀ`` in fp32 even under bf16/fp16 autocast: at CLIP's logit scale (100) a bf16 logit keeps about
    two significant digits of the cosine, so FLYP's logits, its contrastive loss and the probabilities computed from
    them stay fp32 (the authors trained in fp32)."""
    with torch.autocast(a.device.type, enabled=False):
        return scale.float() * a.float() @ b.float().T


@register_model("clip_flyp", params_class=FlypParams)
class ClipFlyp(Classifier):
    """FLYP (Goyal et al. 2023): fine-tune CLIP with its own contrastive loss between images and their class-prompt
    texts. Logits are the scaled cosines between the image embedding and each class's zero-shot text embedding
    (the mean over templates), so the head is the text tower itself and is fine-tuned with it."""

    needs_class_names = True
    own_loss = True  # the contrastive loss below: train.loss and base.loss are refused at config load
    zero_shot = True  # the pretrained text head classifies as is: WiSE-FT interpolates from these weights

    @classmethod
    def has_pretrained(cls, cfg) -> bool:
        return True  # CLIP's weights (random ones for tiny: true, which stand in for them)

    def __init__(self, clip, tokenizer, class_names: list[str], templates: list[str]):
        super().__init__()
        self.clip, self.templates = clip, list(templates)
        self.normalize = Normalize(CLIP_MEAN, CLIP_STD)
        self.image_size = clip.config.vision_config.image_size
        prompts = [t.format(name=n) for n in class_names for t in templates]  # class-major
        tokens = tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=min(77, tokenizer.model_max_length),
            return_tensors="pt",
        )
        self.register_buffer(
            "prompt_ids", tokens.input_ids.view(len(class_names), len(templates), -1), persistent=False
        )
        self.register_buffer(
            "prompt_mask", tokens.attention_mask.view(len(class_names), len(templates), -1), persistent=False
        )
        self._class_embeddings = None  # cached in eval mode

    @property
    def templates_per_image(self) -> int:
        """The trainer's epoch holds every image once per template (FLYP's and the authors' CSV: one row per
        image and template, ``iwildcam_ori.py``), and ``loss`` gets each sample's template index."""
        return len(self.templates)

    @classmethod
    def rows_per_image(cls, cfg) -> int:
        """``templates_per_image`` from the config alone, without weights (``harness plan``)."""
        return len(build(FlypParams, cfg.model.params, "model.params").templates)

    @classmethod
    def from_config(cls, cfg, num_classes: int, channels: int, class_names: list[str] | None = None) -> ClipFlyp:
        from harness.weights.clip import load_clip

        p = build(FlypParams, cfg.model.params, "model.params")
        clip, processor = load_clip(p.model, p.tiny, p.tiny_seed, what="model.params.model", variant=p.variant)
        names = list(class_names) if class_names else [f"class {i}" for i in range(num_classes)]
        return cls(clip, processor.tokenizer, names, p.templates)

    def train(self, mode: bool = True):
        self._class_embeddings = None
        return super().train(mode)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        from harness.weights.clip import pooled

        return F.normalize(pooled(self.clip.get_image_features(pixel_values=self.normalize(x.clamp(0, 1)))), dim=-1)

    def text_embeddings(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from harness.weights.clip import pooled

        return F.normalize(pooled(self.clip.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1)

    def class_embeddings(self) -> torch.Tensor:
        """The zero-shot head: per class, the normalized mean of its templates' normalized text embeddings."""
        if self._class_embeddings is not None and not self.training:
            return self._class_embeddings
        c, t, n = self.prompt_ids.shape
        emb = self.text_embeddings(*trim_padding(self.prompt_ids.view(c * t, n), self.prompt_mask.view(c * t, n)))
        emb = F.normalize(emb.view(c, t, -1).mean(1), dim=-1)
        if not self.training:
            self._class_embeddings = emb.detach()
        return emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_cosines(self.clip.logit_scale.exp(), self.features(x), self.class_embeddings())

    def loss(self, x: torch.Tensor, y: torch.Tensor, templates: torch.Tensor | None = None) -> torch.Tensor:
        """CLIP's symmetric contrastive loss between the images and their class prompts, each sample's prompt in
        its own template (``templates``, the index the trainer's epoch gave it; may be omitted with one template),
        as FLYP trains: the other images' prompts in the batch are the negatives."""
        if templates is None:
            if len(self.templates) > 1:
                raise ValueError(f"ClipFlyp.loss: give each sample's template index ({len(self.templates)} templates)")
            templates = torch.zeros_like(y)
        pick = templates.to(y.device)
        ids, mask = trim_padding(self.prompt_ids[y, pick], self.prompt_mask[y, pick])
        images, texts = global_batch(self.features(x)), global_batch(self.text_embeddings(ids, mask))
        logits = scaled_cosines(self.clip.logit_scale.exp(), images, texts)
        target = torch.arange(len(images), device=y.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def global_batch(local: torch.Tensor) -> torch.Tensor:
    """Under DDP, every rank's embeddings of its batch, concatenated (an autograd all-gather: each rank's gradient
    flows back to the rank that computed it), so the contrastive loss takes its negatives from the global batch, as
    one process with the global batch does (the authors' DataParallel). Every rank calls the loss in lockstep."""
    from harness.core import distributed as dist

    if not dist.active():
        return local
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(local.contiguous()))
