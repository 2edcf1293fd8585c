"""The rates behind every GPU-hour estimate (``benchmarks/cost_model.py`` and ``harness plan``): images/s on one
H100 for training and evaluation of the paper's models, the spectrum's measured time per denoising image-step, and
the published split sizes and filter acceptance they were applied to. One definition: the cost model imports them.
"""

from __future__ import annotations

H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM5 dense bf16 tensor peak (NVIDIA H100 datasheet)
# FLOPs per image, counted with torch.utils.flop_counter.FlopCounterMode on the harness's models (2 per MAC)
FLOPS = {
    "resnet10_train": 5.10e9,
    "resnet10_eval": 1.78e9,  # 224 px, 1000 classes
    "flyp_train": 107e9,
    "flyp_eval": 33.7e9,  # ViT-B/16 image tower + FLYP's text prompts
    "clip_b32_eval": 8.73e9,
}  # the filter's ViT-B/32 image tower
MFU = {"resnet10": 0.25, "flyp": 0.30, "clip_b32": 0.30}  # assumed fraction of the bf16 peak (estimate)
# The input pipeline: bench_input.py measured 185-227 images/s per core for the ImageNet-LT train transform on
# 500x375 JPEGs (2 workers on this project's 2-core CPU); × 14 loader workers per GPU (16 cores on the lent H100
# machine; a DGX H100 has 112 cores for 8 GPUs) ≈ 2,800 images/s. Taken for every decode-bound phase (estimate).
INPUT_RATE = 200 * 14
SPECTRUM_MS_PER_IMAGE_STEP = 7.3  # measured on one H100: SDXL-refiner shape fp16, 480x264, batch 8 (benchmarks/README)
DDP_EFFICIENCY_8 = 0.9  # assumed scaling of one training run over 8 GPUs (estimate); generation shards are independent

# split sizes: ImageNet-LT (Liu et al. 2019), iWildCam2020-WILDS v2.0 (Koh et al. 2021)
IMAGENET_LT = {"train": 115_846, "hard": 1_643, "val": 20_000, "tests": [50_000]}
IWILDCAM = {"train": 129_809, "hard": 8_260, "val": 14_961, "tests": [42_791, 8_154]}  # val = OOD val; test, id_test
IWILDCAM_KEEP = 90_093 / 197_756  # the paper's CLIP-filter acceptance on iWildCam (applied to every level)
IMAGENET_KEEP = 24_141 / 51_917


def estimated_rates(measured: dict) -> tuple[dict, list[str]]:
    notes, rates = [], {}
    for model, key in (("resnet10", "resnet10"), ("flyp", "flyp")):
        compute = H100_BF16_DENSE * MFU[key] / FLOPS[f"{model}_train"]
        m = measured.get(model)
        if m:
            rates[f"{model}_train"] = min(m, INPUT_RATE)
            notes.append(
                f"{model} training: measured {m:.0f} img/s on an H100 (bf16, bench_train_step), capped by "
                f"the input pipeline's ~{INPUT_RATE} img/s"
            )
        else:
            rates[f"{model}_train"] = min(compute, INPUT_RATE)
            notes.append(
                f"{model} training: ESTIMATE min(compute {FLOPS[model + '_train'] / 1e9:.0f} GFLOP/img at "
                f"{MFU[key]:.0%} of 989 TFLOP/s = {compute:.0f} img/s, input ~{INPUT_RATE} img/s) = "
                f"{rates[model + '_train']:.0f} img/s"
            )
        eval_compute = H100_BF16_DENSE * MFU[key] / FLOPS[f"{model}_eval"]
        rates[f"{model}_eval"] = min(eval_compute, INPUT_RATE)
        notes.append(
            f"{model} evaluation: ESTIMATE min(compute {eval_compute:.0f}, input ~{INPUT_RATE}) = "
            f"{rates[model + '_eval']:.0f} img/s"
        )
    rates["clip_b32_eval"] = min(H100_BF16_DENSE * MFU["clip_b32"] / FLOPS["clip_b32_eval"], INPUT_RATE)
    rates["clip_b32_train"] = 1.0  # never trained
    notes.append(f"CLIP ViT-B/32 scoring: ESTIMATE {rates['clip_b32_eval']:.0f} img/s (PNG decode bound)")
    notes.append(
        f"spectrum: MEASURED {SPECTRUM_MS_PER_IMAGE_STEP} ms per image-step on one H100 at 480x264; "
        "512x512 scaled by latent area (×2.07, an estimate)"
    )
    return rates, notes
