"""Per-step cost of the SDXL-refiner-shaped UNet (random weights, same FLOPs) under one change at a time:
fp16 (SDPA attention, the baseline), bf16, classic (non-SDPA) attention, channels_last, torch.compile.

    python benchmarks/bench_unet_variants.py [--batch 16] [--json FILE] [--no-compile]

CUDA only. Prints ms per UNet call, ms per image-step (a call on B latents is B/2 images under classifier-free
guidance), and each variant's speed-up over the fp16 baseline, all measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import row  # noqa: E402


def unet_inputs(unet, batch: int, height: int, width: int, dtype):
    cfg = unet.config
    lat = torch.randn(batch, cfg.in_channels, height // 8, width // 8, device="cuda", dtype=dtype)
    text = torch.randn(batch, 77, cfg.cross_attention_dim, device="cuda", dtype=dtype)
    pooled = torch.randn(
        batch, cfg.projection_class_embeddings_input_dim - 5 * cfg.addition_time_embed_dim, device="cuda", dtype=dtype
    )
    time_ids = torch.tensor([[height, width, 0, 0, 6.0]] * batch, device="cuda", dtype=dtype)
    t = torch.full((batch,), 500, device="cuda")
    return lat, t, text, {"text_embeds": pooled, "time_ids": time_ids}


@torch.inference_mode()
def ms_per_call(unet, inputs, min_run_time: float = 1.0) -> float:
    """Median ms of a UNet call: ``torch.utils.benchmark``'s ``blocked_autorange`` (its block-size estimate is the
    warm-up; it synchronizes CUDA before each clock reading), blocks for at least ``min_run_time`` seconds."""
    lat, t, text, added = inputs
    timer = Timer(
        "unet(lat, t, encoder_hidden_states=text, added_cond_kwargs=added)",
        globals={"unet": unet, "lat": lat, "t": t, "text": text, "added": added},
        num_threads=torch.get_num_threads(),
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1000


def main() -> None:
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor

    from harness.weights.tiny import REFINER_UNET

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16, help="latents per UNet call (2 × images under CFG)")
    ap.add_argument("--height", type=int, default=264)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel(**REFINER_UNET).eval()
    rows, results = [], {}

    def measure(name: str, model, dtype, memory_format=torch.contiguous_format):
        inputs = unet_inputs(model, args.batch, args.height, args.width, dtype)
        inputs = (inputs[0].to(memory_format=memory_format), *inputs[1:])
        torch.cuda.reset_peak_memory_stats()
        ms = ms_per_call(model, inputs)
        results[name] = ms
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"{name:34s} {ms:9.2f} ms/call  {ms / (args.batch / 2):8.3f} ms/image-step  peak {peak:5.1f} GiB",
            flush=True,
        )

    unet.to(torch.float16)
    measure("fp16, SDPA (baseline)", unet, torch.float16)
    unet.set_attn_processor(AttnProcessor())
    measure("fp16, classic attention", unet, torch.float16)
    unet.set_default_attn_processor()
    unet.to(torch.bfloat16)
    measure("bf16, SDPA", unet, torch.bfloat16)
    unet.to(torch.float16)
    unet.to(memory_format=torch.channels_last)
    measure("fp16, SDPA, channels_last", unet, torch.float16, torch.channels_last)
    unet.to(memory_format=torch.contiguous_format)
    if not args.no_compile:
        start = time.perf_counter()
        compiled = torch.compile(unet)
        try:
            measure("fp16, SDPA, torch.compile", compiled, torch.float16)
            print(f"  (compile + warm-up took {time.perf_counter() - start:.0f} s)", flush=True)
        except Exception as e:  # a compile failure is a finding, not a crash
            print(f"torch.compile failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
    base = results["fp16, SDPA (baseline)"]
    ids = {
        "fp16, SDPA (baseline)": "unet_fp16_sdpa",
        "fp16, classic attention": "unet_classic_attention",
        "bf16, SDPA": "unet_bf16",
        "fp16, SDPA, channels_last": "unet_channels_last",
        "fp16, SDPA, torch.compile": "unet_compile",
    }
    for name, ms in results.items():  # time ratio; speed-up = 1 / ratio
        rows.append(
            row(
                ids[name],
                f"UNet call, {name}, batch {args.batch}, {args.width}x{args.height}, vs fp16 SDPA",
                "ms",
                ms,
                base,
                ms / base,
                None,
                "lower",
            )
        )
    print(f"device: {torch.cuda.get_device_name()}; speed-up over the fp16 SDPA baseline:")
    for r in rows:
        print(f"  {r['detail']}: {1 / r['ratio']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
