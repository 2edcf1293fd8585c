"""``tiny_ddpm``: the embedded generator. A class-conditional DDPM (diffusers ``UNet2DModel``, a null class for
classifier-free guidance) trained once on the dataset's pool and cached; SDEdit image-to-image gives the spectrum.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from harness.config import ConfigError, build, stable_hash
from harness.config.keys import data_identity
from harness.core.io import atomic_path, lock, write_json
from harness.core.registry import register_generator
from harness.data.base import TensorImages, to_tensor01
from harness.generators.base import GenerationItem, Generator, strength_timesteps

if TYPE_CHECKING:
    from diffusers import UNet2DModel

log = logging.getLogger(__name__)


@dataclass
class TinyDDPMParams:
    channels: list[int] = field(default_factory=lambda: [32, 32, 64])
    train_steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    cond_dropout: float = 0.1  # fraction of training labels replaced by the null class
    seed: int = 0
    # The noise schedule, shared by training and sampling. SDXL's: "scaled_linear", β 0.00085 → 0.012 (linear in
    # √β), 1000 steps; "linear" is the DDPM paper's (β 1e-4 → 0.02). ``snr_shift`` s multiplies the SNR of every
    # step, SNR'(t) = s·SNR(t) (the resolution shift of simple diffusion, Hoogeboom et al. 2023, and SD3): an
    # image with fewer pixels keeps less of its layout at the same SNR, so a small canvas needs a higher SNR to
    # hold at step t what SDXL's 128×128 latents hold.
    beta_schedule: Literal["scaled_linear", "linear"] = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    snr_shift: float = 8.0


def build_unet(image_size: int, channels: int, num_classes: int, widths: list[int]) -> UNet2DModel:
    from diffusers import UNet2DModel  # diffusers takes seconds to import; a run on cached spectra never needs it

    n = len(widths)
    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(widths),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        num_class_embeds=num_classes + 1,
        norm_num_groups=8,
    )


def shifted_betas(p: TinyDDPMParams, num_train_timesteps: int = 1000) -> np.ndarray:
    """The β of ``p``'s schedule with every step's SNR multiplied by ``p.snr_shift``: ᾱ' = s·ᾱ / (1 + (s − 1)·ᾱ)."""
    if p.beta_schedule == "scaled_linear":
        betas = np.linspace(p.beta_start**0.5, p.beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    else:
        betas = np.linspace(p.beta_start, p.beta_end, num_train_timesteps, dtype=np.float64)
    abar = np.cumprod(1 - betas)
    shifted = p.snr_shift * abar / (1 + (p.snr_shift - 1) * abar)
    return 1 - shifted / np.concatenate([[1.0], shifted[:-1]])


def noise_schedule(p: TinyDDPMParams, sampling: bool = False, **kwargs):
    """A diffusers scheduler on ``p``'s schedule: ``DDPMScheduler`` for training, ``DDIMScheduler`` for sampling."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = DDIMScheduler if sampling else DDPMScheduler
    return cls(num_train_timesteps=1000, trained_betas=shifted_betas(p).tolist(), **kwargs)


def random_shift(x: torch.Tensor, g: torch.Generator, pad: int = 1) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels: cheap augmentation for a 450-image pool."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * pad + 1, (2, n), generator=g)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def train_ddpm(images: torch.Tensor, labels: torch.Tensor, num_classes: int, p: TinyDDPMParams) -> UNet2DModel:
    """Standard ε-prediction DDPM training; ``images`` in [-1, 1]."""
    g = torch.Generator().manual_seed(p.seed)
    torch.manual_seed(p.seed)
    unet = build_unet(images.shape[-1], images.shape[1], num_classes, p.channels)
    scheduler = noise_schedule(p)
    opt = torch.optim.AdamW(unet.parameters(), lr=p.lr)
    lr_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=p.train_steps, pct_start=0.05)
    unet.train()
    for _ in tqdm(range(p.train_steps), desc="train tiny_ddpm", unit="step", mininterval=2):
        idx = torch.randint(0, len(images), (p.batch_size,), generator=g)
        x0 = random_shift(images[idx], g)
        y = labels[idx].clone()
        y[torch.rand(len(y), generator=g) < p.cond_dropout] = num_classes  # the null class
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=g)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t, class_labels=y).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_sched.step()
    return unet.eval()


def pool_identity(cfg, pool) -> dict:
    """The key of what is trained on the pool: the pool's pixels and labels when they are in memory (so a data
    setting that leaves the pool alone, e.g. ``digits_field``'s ``gap``, reuses the model), else the data settings."""
    if not isinstance(pool, TensorImages):
        return data_identity(cfg)
    pixels = (pool.images * 65535).round().to(torch.int32).numpy()
    digest = hashlib.sha256(pixels.tobytes() + np.asarray(pool.labels, np.int64).tobytes()).hexdigest()
    return {"pool_sha256": digest, "shape": list(pixels.shape)}


def generator_key(cfg, pool, p: TinyDDPMParams) -> str:
    """The trained model's cache key: its pool and every param (the noise schedule and its shift among them)."""
    return stable_hash({"data": pool_identity(cfg, pool), "params": p.__dict__})


@register_generator("tiny_ddpm", params_class=TinyDDPMParams)
class TinyDDPM(Generator):
    name = "tiny_ddpm"
    zero_guidance_img2img = True  # λ = 0 as SDEdit from the first timestep, like img2img at strength 1.0

    def __init__(
        self,
        unet: UNet2DModel,
        num_classes: int,
        steps: int,
        guidance_scale: float,
        device="cpu",
        params: TinyDDPMParams | None = None,
        zero_guidance: str = "pure_noise",
    ):
        self.params = params or TinyDDPMParams()
        self.zero_guidance = zero_guidance
        self.unet = unet.to(device).eval()
        self.num_classes = num_classes
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.device = torch.device(device)
        # the training schedule; DDIM is deterministic (η = 0) given the start noise
        self.scheduler = noise_schedule(self.params, sampling=True)

    @classmethod
    def params(cls, cfg) -> TinyDDPMParams:
        p = build(TinyDDPMParams, cfg.generator.params, "generator.params")
        if p.snr_shift <= 0 or not 0 < p.beta_start < p.beta_end < 1:
            raise ConfigError(
                f"generator.params: snr_shift must be > 0 and 0 < beta_start < beta_end < 1, got "
                f"snr_shift={p.snr_shift}, beta_start={p.beta_start}, beta_end={p.beta_end}"
            )
        return p

    @classmethod
    def weights_path(cls, cfg, data, cache: Path) -> tuple[Path, TinyDDPMParams]:
        p = cls.params(cfg)
        pool = data.splits.get("pool")
        if pool is None:
            raise ConfigError(f"tiny_ddpm trains on the dataset's 'pool' split; {data.name} has none")
        return cache / "generator" / f"tiny_ddpm-{generator_key(cfg, pool, p)}.safetensors", p

    @classmethod
    def prepare(cls, cfg, data, cache: Path) -> Path:
        """Train the DDPM on the pool once per key (cached, under a lock)."""
        path, p = cls.weights_path(cfg, data, cache)
        pool = data.splits["pool"]
        with lock(path):
            if not path.exists():
                images = torch.stack([pool.load(i) for i in range(len(pool))]) * 2 - 1
                trained = train_ddpm(images, torch.as_tensor(pool.labels), data.num_classes, p)
                with atomic_path(path) as tmp:
                    save_file(trained.state_dict(), str(tmp))
                write_json(path.with_suffix(".json"), {"params": p.__dict__, "pool_size": len(pool)})
        return path

    @classmethod
    def from_config(cls, cfg, data, cache: Path, device="cpu") -> TinyDDPM:
        path = cls.prepare(cfg, data, cache)  # a no-op once the pipeline's step has trained it
        p = cls.params(cfg)
        unet = build_unet(cfg.data.image_size, data.channels, data.num_classes, p.channels)
        unet.load_state_dict(load_file(str(path)))
        s = cfg.spectrum
        return cls(unet, data.num_classes, s.steps, s.guidance_scale, device, p, s.zero_guidance)

    def describe(self) -> dict:
        p = self.params
        return {
            "scheduler": "DDIMScheduler",
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "beta_schedule": p.beta_schedule,
            "beta_start": p.beta_start,
            "beta_end": p.beta_end,
            "snr_shift": p.snr_shift,
            **({"zero_guidance": self.zero_guidance} if self.zero_guidance != "pure_noise" else {}),
        }

    @torch.no_grad()
    def generate(self, items: list[GenerationItem], lam: float) -> list[Image.Image]:
        size = self.unet.config.sample_size
        channels = self.unet.config.in_channels
        x0 = torch.stack([to_tensor01(it.source, size, channels) for it in items]).to(self.device) * 2 - 1
        # one generator per item: an image does not depend on what else shares its batch
        noise = torch.stack(
            [torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(it.seed)) for it in items]
        ).to(self.device)
        self.scheduler.set_timesteps(self.steps)
        timesteps = strength_timesteps(self.scheduler.timesteps, self.steps, lam)
        from_noise = lam == 0 and self.zero_guidance == "pure_noise"  # img2img: the source noised to the first step
        x = noise if from_noise else self.scheduler.add_noise(x0, noise, timesteps[:1].repeat(len(items)))
        y = torch.tensor([it.label for it in items], device=self.device)
        y_null = torch.full_like(y, self.num_classes)
        for t in timesteps:
            eps = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([y, y_null])).sample
            eps_cond, eps_null = eps.chunk(2)
            eps = eps_null + self.guidance_scale * (eps_cond - eps_null)
            x = self.scheduler.step(eps, t, x).prev_sample
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
        mode = "L" if channels == 1 else "RGB"
        return [Image.fromarray(px[0].numpy() if channels == 1 else px.permute(1, 2, 0).numpy(), mode) for px in pixels]
