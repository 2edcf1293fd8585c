"""CLIP filter throughput: the ``clip`` scorer on a batch of synthetic images against one ``score`` call per image.

    python benchmarks/bench_scoring.py [--quick] [--images N] [--json FILE]

On a CPU: the tiny random CLIP (width 32, 64×64 input) over 256×256 images. On CUDA (unless --quick): the real
ViT-B/32 architecture (CLIPConfig defaults) with random weights, fp16. No downloads. Ratio = harness / reference
images/s, target ≥ 5.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import paired, print_table, time_row, write_json  # noqa: E402

from harness.scorers.clip import ClipParams, ClipScorer  # noqa: E402

CLASSES = ["zebra", "giraffe", "elephant", "lion"]


def build_scorer(device: torch.device, quick: bool) -> tuple[ClipScorer, str]:
    params = ClipParams(prompt="a photo of {name} in the wild", batch_size=64)
    if device.type == "cuda" and not quick:
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

        from harness.weights.tiny import tiny_clip_tokenizer

        torch.manual_seed(0)
        tokenizer = tiny_clip_tokenizer()
        config = CLIPConfig(text_config={"vocab_size": len(tokenizer)})  # ViT-B/32 shapes
        processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
        return ClipScorer(CLIPModel(config), processor, CLASSES, params, device), "random ViT-B/32, fp16"
    from harness.weights.tiny import tiny_clip

    model, processor = tiny_clip(0, image_size=64)
    return ClipScorer(model, processor, CLASSES, params, device), "tiny random CLIP, 64px input"


def workload(n: int, size: int):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    labels = [i % len(CLASSES) for i in range(n)]
    prompts = [f"a photo of a {CLASSES[y]}" for y in labels]
    sources = [images[(i // 8) * 8] for i in range(n)]  # 8 synthetic images per real one
    return images, prompts, labels, sources


def measure(quick: bool, n_images: int | None = None, repeats: int | None = None) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() and not quick else "cpu")
    scorer, shape = build_scorer(device, quick)
    n = n_images or (128 if quick else 256)  # 16 real images × 8 samples each
    images, prompts, labels, sources = workload(n, 256)

    def harness():
        scorer.score(images, prompts, labels, sources)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def reference():
        for i in range(n):
            scorer.score(images[i : i + 1], prompts[i : i + 1], labels[i : i + 1], sources[i : i + 1])
        if device.type == "cuda":
            torch.cuda.synchronize()

    reference(), harness()  # warm-up
    ours, ref = paired(harness, reference, repeats or (5 if quick else 9))
    return [
        time_row(
            "clip_scoring",
            f"CLIP scoring, batched vs one call per image ({shape}, {n} images 256px, {device.type})",
            ours,
            ref,
            5.0,
            n,
            "images/s",
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", type=int)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = measure(args.quick, args.images)
    print_table(rows)
    write_json(rows, args.json)


if __name__ == "__main__":
    main()
