"""Spectrum generation throughput: the harness's batched ``sd_img2img`` (one pipeline call per λ and batch, a
generator per item) against one pipeline call per (image, λ, seed), as the authors' code generates.

    python benchmarks/bench_generation.py [--quick] [--json FILE] [--sources N] [--seeds S] [--steps T]

On CUDA: an img2img pipeline with the SDXL refiner's UNet, VAE and text-encoder shapes and random weights, fp16,
480×270 (diffusers rounds the height to 264). On a CPU (or with --quick): the tiny random pipeline at 32×32.
No downloaded weights are needed. Prints images/s for both and the ratio (harness / reference, higher is better).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import paired, row, time_row  # noqa: E402

from harness.engine.seeding import sample_seed
from harness.generators.base import GenerationItem
from harness.generators.sd_img2img import SDImg2Img, SDImg2ImgParams


def build(device: torch.device, quick: bool):
    from harness.weights.tiny import sdxl_refiner_shaped, tiny_sdxl_img2img

    if device.type == "cuda" and not quick:
        return sdxl_refiner_shaped("cuda", torch.float16), SDImg2ImgParams(width=480, height=270)
    return tiny_sdxl_img2img(0, 32).to(device), SDImg2ImgParams(tiny=True, width=32, height=32)


def workload(n_sources: int, levels: list[float], seeds: int, size: tuple[int, int]):
    rng = np.random.default_rng(0)
    sources = [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n_sources)]
    return {
        lam: [
            GenerationItem(f"src{i}", src, 0, "a photo of a zebra in the wild", sample_seed(f"src{i}", lam, s))
            for i, src in enumerate(sources)
            for s in range(seeds)
        ]
        for lam in levels
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def harness_pass(gen: SDImg2Img, work, batch_size: int) -> list[Image.Image]:
    out = []
    for lam, items in work.items():
        for start in range(0, len(items), batch_size):
            out += gen.generate(items[start : start + batch_size], lam)
    return out


def reference_pass(gen: SDImg2Img, work) -> list[Image.Image]:
    """The authors' loop: a pipeline call, and a generator, per (image, λ, seed)."""
    out = []
    for lam, items in work.items():
        for it in items:
            src = it.source.convert("RGB").resize(gen.size, Image.BICUBIC)
            out += gen.pipe(
                prompt=it.prompt,
                image=src,
                strength=max(1.0 - lam, 1.0 / gen.steps),
                num_inference_steps=gen.steps,
                guidance_scale=gen.guidance_scale,
                generator=torch.Generator().manual_seed(it.seed),
            ).images
    return out


def tiny_ddpm_rows(quick: bool) -> list[dict]:
    """The embedded generator on the CPU: ``TinyDDPM.generate`` over a λ-batch against one call per (image, λ, seed),
    at the default experiment's shape (digits_lt: 16×16 grey, 10 classes, widths 32/32/64, 25 DDIM steps) with
    random weights (same FLOPs as trained ones)."""
    from harness.generators.tiny_ddpm import TinyDDPM, build_unet

    torch.manual_seed(0)
    gen = TinyDDPM(build_unet(16, 1, 10, [32, 32, 64]), 10, steps=8 if quick else 25, guidance_scale=2.0)
    levels, seeds, n_sources = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9], 8, 4  # 32 images per λ, as digits_lt_discl
    rng = np.random.default_rng(0)
    sources = [Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), "L") for _ in range(n_sources)]
    work = {
        lam: [
            GenerationItem(f"src{i}", src, i, "", sample_seed(f"src{i}", lam, k))
            for i, src in enumerate(sources)
            for k in range(seeds)
        ]
        for lam in levels
    }
    n_images = sum(len(v) for v in work.values())

    def harness():
        return [im for lam, items in work.items() for im in gen.generate(items, lam)]

    def reference():
        return [im for lam, items in work.items() for it in items for im in gen.generate([it], lam)]

    harness(), reference()
    ours, ref = paired(harness, reference, 3 if quick else 5)
    t_ours, t_ref = statistics.median(ours), statistics.median(ref)
    diff = max(
        int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max()) for a, b in zip(harness(), reference())
    )
    label = f"tiny_ddpm, CPU, 16x16, {gen.steps} steps, {len(levels)} levels, {n_images} images"
    print(
        f"{label}: harness {n_images / t_ours:.1f} images/s, reference {n_images / t_ref:.1f} images/s, "
        f"ratio {t_ref / t_ours:.2f}x, max pixel difference {diff}/255 (CPU kernels differ by batch size)"
    )
    return [
        time_row(
            "generation_tiny_ddpm",
            f"spectrum generation, batched per λ vs one call per (image, λ, seed) "
            f"({label}, {len(ours)} interleaved repeats)",
            ours,
            ref,
            3.0,
            n_images,
            "images/s",
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny pipeline, few images (CPU smoke run)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--sources", type=int, default=None, help="real images (default 8; 4 with --quick)")
    ap.add_argument("--seeds", type=int, default=4, help="samples per (image, λ)")
    ap.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.7, 0.9], help="λ levels (iWildCam's)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 50; 10 with --quick)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quick = args.quick or device.type == "cpu"
    seeds, n_sources = args.seeds, args.sources or (4 if args.quick else 8)
    steps = args.steps or (10 if quick else 50)
    pipe, params = build(device, quick)
    gen = SDImg2Img(pipe, params, steps, 10.0, device)
    work = workload(n_sources, args.levels, seeds, gen.size)
    n_images = sum(len(v) for v in work.values())
    warnings.filterwarnings("ignore")  # random fp16 weights may overflow to NaN pixels: irrelevant to speed
    warm = {lam: items[:1] for lam, items in work.items()}
    harness_pass(gen, warm, args.batch_size), reference_pass(gen, warm)  # kernels, allocator, autotuning
    outputs = {}

    def ours_fn():
        outputs["ours"] = harness_pass(gen, work, args.batch_size)
        sync(device)

    def ref_fn():
        outputs["ref"] = reference_pass(gen, work)
        sync(device)

    # medians of interleaved repeats on a (noisy, shared) CPU; one long pass each on a GPU
    ours_s, ref_s = paired(ours_fn, ref_fn, 1 if device.type == "cuda" else 5)
    t_ours, t_ref = statistics.median(ours_s), statistics.median(ref_s)
    ours, ref = outputs["ours"], outputs["ref"]
    diff = max(int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max()) for a, b in zip(ours, ref))
    shape = "tiny random SDXL-img2img, fp32" if quick else "random-weight SDXL-refiner shape, fp16"
    label = f"{shape}, {gen.size[0]}x{gen.size[1]}, {steps} steps, {len(work)} levels, {n_images} images"
    name = "generation_sdxl_tiny" if quick else "generation_sdxl"
    rows = [
        time_row(
            name,
            f"spectrum generation, batched sd_img2img vs one pipeline call per (image, λ, seed) "
            f"({label}, batch {args.batch_size})",
            ours_s,
            ref_s,
            3.0,
            n_images,
            "images/s",
        ),
        row(
            "generation_max_pixel_diff",
            "max pixel difference, batched vs one call per image (same seeds)",
            "/255",
            diff,
            0,
            None,
            None,
            "lower",
        ),
    ]
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; {label}")
    print(f"harness (batched per λ, batch {args.batch_size}): {n_images / t_ours:8.3f} images/s ({t_ours:.1f} s)")
    print(f"reference (one call per image, λ, seed): {n_images / t_ref:8.3f} images/s ({t_ref:.1f} s)")
    print(
        f"ratio harness / reference: {t_ref / t_ours:.2f}x; spectrum per real image: "
        f"{t_ours / n_sources:.2f} s (harness) vs {t_ref / n_sources:.2f} s (reference)"
    )
    print(f"max pixel difference batched vs one-by-one: {diff} (same seeds; fp16 kernels may differ by batch size)")
    if device.type == "cpu" or not args.quick:
        rows += tiny_ddpm_rows(args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
