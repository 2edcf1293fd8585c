"""Tiny random-weight stand-ins for the paper's pretrained models, built from configs in-process (no download),
as diffusers and transformers build them in their own tests. Tests, the ``*_tiny`` experiments and the benchmarks
share them. ``sdxl_refiner_shaped`` has the real refiner's architecture with random weights, for GPU throughput.
"""

from __future__ import annotations

from functools import lru_cache

import torch

TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    num_hidden_layers=2,
    projection_dim=32,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)
MERGES = [
    ("a", "t</w>"),
    ("o", "f</w>"),
    ("t", "h"),
    ("th", "e</w>"),
    ("i", "n</w>"),
    ("p", "h"),
    ("ph", "o"),
    ("pho", "t"),
    ("phot", "o</w>"),
    ("a", "n"),
    ("w", "i"),
    ("wi", "l"),
    ("wil", "d</w>"),
]


@lru_cache(maxsize=1)
def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP's reversible byte → printable-character table (the 256 symbols of byte-level BPE)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def tiny_clip_tokenizer(max_length: int = 77):
    """A CLIP tokenizer over a tiny vocabulary: every byte symbol, its ``</w>`` form, a few merges, the specials."""
    from transformers import CLIPTokenizer

    symbols = _byte_alphabet()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in MERGES]
    vocab: dict[str, int] = {}
    for t in tokens + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(t, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=list(MERGES), model_max_length=max_length)


def tiny_text_config(tokenizer, **overrides):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{**TINY_TEXT, **overrides},
    )


def tiny_sdxl_img2img(seed: int = 0, sample_size: int = 32):
    """An SDXL-refiner-like img2img pipeline (one text encoder with projection, aesthetic-score conditioning)
    with random weights, small enough for CPU tests; deterministic given ``seed``."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=sample_size // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=72,  # pooled text (32) + 5 time ids × 8 (aesthetic score: 5 ids)
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        sample_size=sample_size,
        norm_num_groups=32,
        force_upcast=False,
    )
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModelWithProjection(tiny_text_config(tokenizer))
    # the refiner's scheduler config (scaled-linear betas, leading spacing, offset 1)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    return StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=text_encoder,
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )


# The architecture of stabilityai/stable-diffusion-xl-refiner-1.0 (its unet/, vae/ and text_encoder_2/ configs).
REFINER_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(384, 768, 1536, 1536),
    attention_head_dim=(6, 12, 24, 24),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=4,
    cross_attention_dim=1280,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2560,
)
REFINER_VAE = dict(
    block_out_channels=[128, 256, 512, 512],
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)
REFINER_TEXT = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=20,
    num_hidden_layers=32,
    projection_dim=1280,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)


def sdxl_refiner_shaped(device: str = "cuda", dtype: torch.dtype = torch.float16, seed: int = 0):
    """An img2img pipeline with the real refiner's UNet, VAE and text-encoder shapes and random weights
    (about 3 B parameters): for throughput measurements on a GPU. Not for CPU tests."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    with torch.device(device):  # initialize on the device: much faster than on the CPU for 3 B parameters
        unet = UNet2DConditionModel(**REFINER_UNET)
        vae = AutoencoderKL(**REFINER_VAE)
        text_encoder = CLIPTextModelWithProjection(tiny_text_config(tokenizer, **REFINER_TEXT))
    for module in (unet, vae, text_encoder):
        module.to(dtype)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=text_encoder,
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    return pipe


def tiny_clip(seed: int = 0, image_size: int = 32):
    """A random CLIPModel (ViT and text tower, width 32) and a matching CLIPProcessor, deterministic given ``seed``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

    tokenizer = tiny_clip_tokenizer()
    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=8,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
    )
    config = CLIPConfig(
        text_config=tiny_text_config(tokenizer).to_dict(), vision_config=vision.to_dict(), projection_dim=32
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    images = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return model, CLIPProcessor(image_processor=images, tokenizer=tokenizer)
