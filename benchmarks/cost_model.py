"""GPU-hours of the two whole paper pipelines (ImageNet-LT and iWildCam): base model, spectrum, scoring, each
method's fine-tuning with its per-epoch validation and final test evaluation, per seed and in total, on one H100
and on 8.

    python benchmarks/cost_model.py [--gpu-json FILE] [--markdown]

Image counts come from the experiment YAMLs (epochs, levels, seeds, undersampling, synthetic scale, adaptive
hold-out and probe steps; read with ``harness.config.load_config``) and the datasets' published split sizes.
Rates (images/s on one H100) are ESTIMATES unless ``--gpu-json`` gives rows measured on an H100 by
``bench_train_step.py --json`` (``train_step_resnet10_bf16``, ``train_step_clip_vitb16_bf16``: images/s at the
paper's batch), which then replace the training-compute estimates. What each estimate rests on is printed with it.
Not a benchmark (nothing is timed here), so not part of ``run_all``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from harness.config import load_config  # noqa: E402
from harness.plan.costs import (  # noqa: E402
    DDP_EFFICIENCY_8,
    IMAGENET_KEEP,
    IMAGENET_LT,
    IWILDCAM,
    IWILDCAM_KEEP,
    SPECTRUM_MS_PER_IMAGE_STEP,
    estimated_rates,
)


@dataclass
class Phase:
    name: str
    train_images: float = 0.0
    eval_images: float = 0.0
    image_steps: float = 0.0  # spectrum: denoising image-steps
    per_seed: bool = False
    ddp: bool = True  # a training run spread over 8 GPUs (False: independent shards)

    def gpu_s(self, rates: dict, model: str) -> float:
        return (
            self.train_images / rates[f"{model}_train"]
            + self.eval_images / rates[f"{model}_eval"]
            + self.image_steps * SPECTRUM_MS_PER_IMAGE_STEP / 1000 * rates.get("spectrum_scale", 1.0)
        )


def imagenet_lt() -> tuple[list[tuple[Phase, str]], int, dict]:
    cfg = load_config("imagenet_lt_suite")
    bs = load_config("imagenet_lt_bs_suite")
    d = IMAGENET_LT
    n_train, hard, val = d["train"], d["hard"], d["val"]
    non_hard = n_train - hard
    t = cfg.train
    base = cfg.base.epochs * n_train
    levels = cfg.spectrum.levels
    steps = hard * cfg.spectrum.seeds * sum(1 - lam for lam in levels) * cfg.spectrum.steps
    generated = hard * cfg.spectrum.seeds * len(levels)
    under = round(non_hard * t.undersample)
    cur, post = t.curriculum_epochs, t.epochs - t.curriculum_epochs
    evals = t.epochs * val + sum(d["tests"]) + val
    held = round(hard * cfg.curriculum.adaptive.holdout)

    def run(kind: str) -> tuple[float, float]:
        if kind == "plain":
            return t.epochs * n_train, evals
        sources = hard - held if kind == "adaptive" else hard
        epoch = under + sources + round(t.synthetic_scale * sources)
        train = cur * epoch + post * n_train
        if kind == "adaptive":  # each stage (epoch) probes: 8 steps of training between two measurements
            per_level = held
            train += cur * cfg.curriculum.adaptive.probe_steps * t.batch_size
            return train, evals + cur * 2 * len(levels) * per_level
        return train, evals

    methods = [
        (m, "plain" if m == "plain" else "adaptive" if m == "discl_adaptive" else "rebalanced") for m in cfg.methods
    ] + [(f"bs_{m}", "plain" if m == "plain" else "rebalanced") for m in bs.methods]
    phases = [
        (Phase("base models (CE and Balanced Softmax), 90 epochs from scratch", 2 * base, 2 * n_train), "resnet10"),
        (Phase(f"spectrum: {generated:,} images, λ {levels}, 512x512", image_steps=steps, ddp=False), "spectrum512"),
        (
            Phase(
                f"CLIP scoring of {generated:,} images (~{generated * IMAGENET_KEEP:,.0f} kept)",
                eval_images=generated + hard,
                ddp=False,
            ),
            "clip_b32",
        ),
    ]
    for name, kind in methods:
        train, ev = run(kind)
        phases.append(
            (
                Phase(
                    f"fine-tune {name}, {t.epochs} epochs ({train / 1e6:.2f} M train, {ev / 1e6:.2f} M eval images)",
                    train,
                    ev,
                    per_seed=True,
                ),
                "resnet10",
            )
        )
    return phases, 3, {"generated": generated}


def iwildcam() -> tuple[list[tuple[Phase, str]], int, dict]:
    cfg = load_config("iwildcam_suite")
    d = IWILDCAM
    n_train, hard, val = d["train"], d["hard"], d["val"]
    non_hard = n_train - hard
    t = cfg.train
    levels = cfg.spectrum.levels
    steps = hard * cfg.spectrum.seeds * sum(1 - lam for lam in levels) * cfg.spectrum.steps
    generated = hard * cfg.spectrum.seeds * len(levels)
    per_level = hard * cfg.spectrum.seeds * IWILDCAM_KEEP
    cur, post = t.curriculum_epochs, t.epochs - t.curriculum_epochs
    evals = t.epochs * val + sum(d["tests"]) + val
    held = round(hard * cfg.curriculum.adaptive.holdout)
    curriculum_levels = len(cfg.curriculum.levels)

    def run(kind: str) -> tuple[float, float]:
        if kind == "plain":
            return t.epochs * n_train, evals
        if kind == "all_levels":
            return cur * (non_hard + curriculum_levels * per_level) + post * n_train, evals
        if kind == "adaptive":
            share = (hard - held) / hard
            train = cur * (non_hard + share * per_level) + post * n_train
            train += cur * cfg.curriculum.adaptive.probe_steps * t.batch_size
            return train, evals + cur * 2 * len(cfg.curriculum.adaptive_levels or cfg.curriculum.levels) * held
        return cur * (non_hard + per_level) + post * n_train, evals  # one level per stage, or real stand-ins

    kinds = {"plain": "plain", "all_levels": "all_levels", "discl_adaptive": "adaptive"}
    phases = [
        (
            Phase(
                f"base model: FLYP on the real data, {cfg.base.epochs} epochs (mines the hard samples)",
                cfg.base.epochs * n_train,
                n_train,
            ),
            "flyp",
        ),
        (Phase(f"spectrum: {generated:,} images, λ {levels}, 480x270", image_steps=steps, ddp=False), "spectrum"),
        (
            Phase(
                f"CLIP scoring of {generated:,} images (~{generated * IWILDCAM_KEEP:,.0f} kept)",
                eval_images=generated + hard,
                ddp=False,
            ),
            "clip_b32",
        ),
    ]
    for name in cfg.methods:
        train, ev = run(kinds.get(name, "one_level"))
        phases.append(
            (
                Phase(
                    f"fine-tune {name}, {t.epochs} epochs ({train / 1e6:.2f} M train, {ev / 1e6:.2f} M eval images)",
                    train,
                    ev,
                    per_seed=True,
                ),
                "flyp",
            )
        )
    return phases, len(cfg.seeds), {"generated": generated}


def table(title: str, phases, seeds: int, rates: dict) -> list[str]:
    out = [
        (
            f"**{title}** (GPU-hours; 8×H100 wall hours assume {DDP_EFFICIENCY_8:.0%} DDP scaling for training "
            "runs, independent shards for generation and scoring)"
        ),
        "",
        "| phase | runs | 1×H100 GPU-h | 8×H100 GPU-h | 8×H100 wall h |",
        "|---|---|---|---|---|",
    ]
    shared_1 = shared_8 = seed_1 = seed_8 = 0.0
    for phase, model in phases:
        r = dict(rates)
        key = "spectrum" if model.startswith("spectrum") else model
        if model == "spectrum512":
            r["spectrum_scale"] = 4096 / 1980
        if key == "spectrum":
            r[f"{key}_train"] = r[f"{key}_eval"] = 1.0
        one = phase.gpu_s(r, key) / 3600
        eight = one / (DDP_EFFICIENCY_8 if phase.ddp else 1.0)
        out.append(
            f"| {phase.name} | {'per seed' if phase.per_seed else 'once'} | {one:.2f} | {eight:.2f} | {eight / 8:.2f} |"
        )
        if phase.per_seed:
            seed_1, seed_8 = seed_1 + one, seed_8 + eight
        else:
            shared_1, shared_8 = shared_1 + one, shared_8 + eight
    out.append(
        f"| **one seed of every method** (shared phases + fine-tuning) | | **{shared_1 + seed_1:.1f}** | "
        f"**{shared_8 + seed_8:.1f}** | **{(shared_8 + seed_8) / 8:.1f}** |"
    )
    out.append(
        f"| **every method × {seeds} seeds** | | **{shared_1 + seeds * seed_1:.1f}** | "
        f"**{shared_8 + seeds * seed_8:.1f}** | **{(shared_8 + seeds * seed_8) / 8:.1f}** |"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu-json", help="bench_train_step.py --json rows measured on an H100 (replace the estimates)")
    args = ap.parse_args()
    measured = {}
    if args.gpu_json:
        rows = {r["name"]: r for r in json.loads(Path(args.gpu_json).read_text())}
        for model, name in (("resnet10", "train_step_resnet10_bf16"), ("flyp", "train_step_clip_vitb16_bf16")):
            if name in rows and "cuda" in (rows[name].get("detail") or ""):
                measured[model] = rows[name]["harness"]
    rates, notes = estimated_rates(measured)
    lines = ["Rates on one H100:", *[f"- {n}" for n in notes], ""]
    lines += table("ImageNet-LT (ResNet-10; CE suite 7 methods + Balanced Softmax suite 2)", *imagenet_lt()[:2], rates)
    lines += [""] + table("iWildCam (FLYP CLIP ViT-B/16; suite: 8 methods, 4-level spectrum)", *iwildcam()[:2], rates)
    print("\n".join(lines))
    assert all(math.isfinite(v) for v in rates.values())


if __name__ == "__main__":
    main()
