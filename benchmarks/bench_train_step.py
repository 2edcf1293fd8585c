"""Training-step throughput of the paper's two classifiers under fp32, bf16 autocast, channels_last and
torch.compile, each against fp32 eager, measured side by side in one process.

    python benchmarks/bench_train_step.py [--quick] [--resnet-batch B] [--clip-batch B] [--repeats R]
                                          [--no-compile] [--smoke] [--json FILE]

A step is what ``Trainer.train_epoch`` does per batch: forward under ``autocast``, the
loss (cross-entropy through ``classification_loss`` for ResNet-10; FLYP's own contrastive ``ClipFlyp.loss`` for
CLIP), backward, optimizer step (the paper's: Adam for ResNet-10, AdamW for FLYP). Warm-up steps are excluded;
the variants run interleaved, in a rotating order, and each figure is the median over repeats (CUDA: timed with
``torch.cuda.synchronize``; the fp32 reference is strict fp32, and a ``tf32`` row shows fp32 with TF32 as the
harness runs it). Models have random weights (the same FLOPs as trained ones):

- ResNet-10 (``harness.models.paper.ResNet10``), 1000 classes, 224×224, batch 128 (ImageNet-LT fine-tuning).
- FLYP CLIP ViT-B/16 (``ClipFlyp`` over a ``transformers`` CLIPModel with ViT-B/16 shapes: vision width 768, 12
  layers, patch 16, 224 px; text width 512, 12 layers), the 182 iWildCam class names and FLYP's two templates,
  batch 256. The tokenizer is the harness's tiny byte-level CLIP tokenizer (no download), whose prompts are
  longer in tokens than the real BPE's, so the text tower's share is overstated (a few % of a step).

On a CPU the full batches do not fit the ``--quick`` budget (nor, for CLIP at 256, in 23 GB of memory): --quick
uses ResNet batch 8 and CLIP batch 1, the full CPU run ResNet batch 128 and CLIP batch 8 (a CLIP step on 2 cores
takes ~3 s per image); figures are per image, and each row's detail gives its batch. On CUDA the full batches run
in --quick too. torch.compile is timed on the ResNet and, on CUDA, on CLIP; its compile time (a row without a ratio)
with a fresh inductor cache, what a first run pays (about a minute for the ResNet on 2 cores), except on a CPU with
--quick, which uses the machine's cache as found (cold on its first run, ~7 s warm) and says which it was.
Target on a GPU: bf16 ≥ 2× fp32. On a CPU there is no target: the rows say what bf16 does there.

--smoke (for the test suite, never for a measurement): the same variants at 32 px, ResNet-10 as measured and a
narrow CLIP (two 64-wide layers per tower) over 4 classes, so that every row is made in seconds; each row's detail
says the shape it ran.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import print_table, row, spread, write_json  # noqa: E402

from harness.config import OptimConfig  # noqa: E402
from harness.engine.train import autocast, make_optimizer  # noqa: E402
from harness.models.base import classification_loss  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Variant:
    """A model copy, its optimizer and one way of running a training step."""

    def __init__(
        self,
        name: str,
        model,
        opt_cfg: OptimConfig,
        device: torch.device,
        amp: torch.dtype | None,
        channels_last: bool = False,
        compile: bool = False,
        tf32: bool = False,
    ):
        self.name, self.device, self.amp, self.channels_last, self.tf32 = name, device, amp, channels_last, tf32
        self.model = model.to(device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = make_optimizer(self.model, opt_cfg)
        self.own_loss = self.model.loss if self.model.own_loss else None  # a HarnessModel declares it
        self.net = torch.compile(self.model) if compile else self.model
        if compile and self.own_loss is not None:
            self.own_loss = torch.compile(self.own_loss)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.device.type == "cuda":  # strict fp32 unless the variant is the harness's TF32 or a bf16 one
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
        self.model.train()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            if self.own_loss is not None:  # FLYP: each sample's template index (an epoch holds every template)
                loss = self.own_loss(x, y, torch.arange(len(y), device=y.device) % self.model.templates_per_image)
            else:
                loss = classification_loss(self.net(x).float(), y, "ce")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def resnet10() -> torch.nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    from harness.models.paper import ResNet10

    torch.manual_seed(0)
    return ResNet10(ResNet(BasicBlock, [1, 1, 1, 1], num_classes=1000))


def clip_vitb16(image_size: int = 224, classes: int | None = None, narrow: bool = False) -> torch.nn.Module:
    """FLYP's CLIP ViT-B/16 shape, random weights; ``narrow`` (--smoke): two 64-wide layers per tower instead."""
    from transformers import CLIPConfig, CLIPModel

    from harness.data.iwildcam import shipped_names
    from harness.models.paper import IWILDCAM_TEMPLATES, ClipFlyp
    from harness.weights.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    width = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **(width if narrow else {}),
        },
        vision_config={"patch_size": 16, "image_size": image_size, **(width if narrow else {})},
        projection_dim=64 if narrow else 512,
    )
    names = [c["common_name"] for c in sorted(shipped_names().values(), key=lambda c: c["y"]) if c["y"] < 99999]
    names = names[:classes] if classes else names
    torch.manual_seed(0)
    return ClipFlyp(CLIPModel(config), tokenizer, names, IWILDCAM_TEMPLATES)


def run_model(
    key: str,
    build,
    opt_cfg: OptimConfig,
    batch: int,
    classes: int,
    device: torch.device,
    variants: list[str],
    repeats: int,
    warmup: int,
    image_size: int = 224,
) -> tuple[list[dict], dict]:
    """Every variant of one model, interleaved; rows against fp32 eager, and the compile time when compiled."""
    base = build()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, image_size, image_size, generator=g).to(device)
    y = torch.randint(classes, (batch,), generator=g).to(device)
    runners, extra = {}, {}
    for name in variants:
        amp = torch.bfloat16 if "bf16" in name else None
        # fp32 and bf16 run the same model copy (autocast leaves the weights fp32); the others their own
        model = base if name in ("fp32", "bf16", "tf32") else copy.deepcopy(base)
        # bf16 variants run as the harness does on CUDA (TF32 allowed for what stays fp32, pipeline.py)
        runners[name] = Variant(
            name,
            model,
            opt_cfg,
            device,
            amp,
            channels_last="channels_last" in name,
            compile=name == "compile",
            tf32=name == "tf32" or amp is not None,
        )
    eager_warmup = {n: v for n, v in runners.items() if n != "compile"}
    for _ in range(warmup):
        for v in eager_warmup.values():
            v.step(x, y)
    sync(device)
    if "compile" in runners:
        from torch._dynamo.utils import counters

        start = time.perf_counter()
        try:
            runners["compile"].step(x, y)  # compiles forward and backward
            sync(device)
            extra["compile_s"] = time.perf_counter() - start
            extra["cache"] = (counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
            for _ in range(warmup):
                runners["compile"].step(x, y)
        except Exception as e:  # a compile failure is a finding, not a crash of the whole benchmark
            print(f"{key}: torch.compile failed: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
            del runners["compile"]
    times = {n: [] for n in runners}
    names = list(runners)
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate the order
            sync(device)
            start = time.perf_counter()
            runners[name].step(x, y)
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times, extra


DETAILS = {
    "bf16": "bf16 autocast",
    "channels_last": "fp32, channels_last weights and inputs",
    "bf16_channels_last": "bf16 autocast + channels_last (the Trainer's CUDA setting for ResNets)",
    "compile": "fp32, torch.compile (default mode)",
    "tf32": "fp32 with TF32 matmuls and convolutions (the harness's setting for fp32 work on CUDA)",
}


def rows_for(key: str, label: str, times: dict, extra: dict, batch: int, device: torch.device, note: str) -> list[dict]:
    med = {n: statistics.median(t) for n, t in times.items()}
    fp32 = times["fp32"]
    where = f"{label}, batch {batch}{note}, {device.type}, {len(fp32)} interleaved repeats"
    out = [
        row(
            f"train_step_{key}_fp32",
            f"training step, fp32 eager ({where}); no reference",
            "img/s",
            batch / med["fp32"],
            None,
            None,
            None,
            "higher",
        )
    ]
    for name, t in times.items():
        if name == "fp32":
            continue
        target = 2.0 if name == "bf16" and device.type == "cuda" else None
        out.append(
            row(
                f"train_step_{key}_{name}",
                f"training step, {DETAILS[name]} vs fp32 eager ({where})"
                + ("" if target or name != "bf16" else "; the GPU target bf16 ≥ 2× applies on CUDA only"),
                "img/s",
                batch / med[name],
                batch / med["fp32"],
                med["fp32"] / med[name],
                target,
                "higher",
                spread(fp32, t),
            )
        )
    if "compile_s" in extra:
        hits, misses = extra["cache"]
        state = "cold" if not hits else "warm" if not misses else "partly cached"
        out.append(
            row(
                f"train_step_{key}_compile_time",
                f"torch.compile + first step, {state} inductor cache "
                f"({hits} FX-graph cache hits, {misses} misses), against one fp32 eager step ({where}); "
                "no ratio: a cold and a warm cache differ ~10×",
                "s",
                extra["compile_s"],
                med["fp32"],
                None,
                None,
                "lower",
            )
        )
    return out


def measure(
    quick: bool,
    resnet_batch: int | None = None,
    clip_batch: int | None = None,
    repeats: int | None = None,
    compile: bool = True,
    models: tuple[str, ...] = ("resnet10", "clip_vitb16"),
    smoke: bool = False,
) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    fresh = None
    if compile and (cuda or not quick):  # a fresh inductor cache: the compile time a first run pays
        fresh = tempfile.TemporaryDirectory(prefix="inductor-bench-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh.name  # read at every compile (cache_dir_utils.cache_dir)
    try:
        return measure_models(quick, cuda, device, resnet_batch, clip_batch, repeats, compile, models, smoke)
    finally:
        if fresh is not None:
            fresh.cleanup()


def measure_models(quick, cuda, device, resnet_batch, clip_batch, repeats, compile, models, smoke) -> list[dict]:
    rows = []
    size, clip_classes = (32, 4) if smoke else (224, 182)
    if "resnet10" in models:
        batch = resnet_batch or (128 if cuda or not quick else 8)
        variants = (
            ["fp32", "bf16", "channels_last", "bf16_channels_last"]
            + (["tf32"] if cuda else [])
            + (["compile"] if compile else [])
        )
        times, extra = run_model(
            "resnet10",
            resnet10,
            OptimConfig(optimizer="adam", lr=1e-3, batch_size=batch),
            batch,
            1000,
            device,
            variants,
            repeats or (15 if cuda else 7),
            3 if cuda else 1,
            size,
        )
        note = "" if batch == 128 else " (paper: 128; per image)"
        rows += rows_for("resnet10", f"ResNet-10, {size} px, 1000 classes, Adam", times, extra, batch, device, note)
    if "clip_vitb16" in models:
        batch = clip_batch or (256 if cuda else 1 if quick else 8)
        variants = ["fp32", "bf16"] + (["tf32"] + (["compile"] if compile else []) if cuda else [])
        while True:
            try:
                times, extra = run_model(
                    "clip_vitb16",
                    lambda: clip_vitb16(size, clip_classes, narrow=smoke),
                    OptimConfig(optimizer="adamw", lr=1e-5, weight_decay=0.2, batch_size=batch),
                    batch,
                    clip_classes,
                    device,
                    variants,
                    repeats or (9 if cuda else 5),
                    2 if cuda else 1,
                    size,
                )
                break
            except torch.OutOfMemoryError:  # fp32 at 256 needs ~45 GB of activations: say so and halve
                if batch == 1:
                    raise
                print(f"clip_vitb16: out of memory at batch {batch}, trying {batch // 2}", file=sys.stderr)
                batch //= 2
                gc.collect()
                torch.cuda.empty_cache()
        note = "" if batch == 256 else " (paper: 256; per image)"
        rows += rows_for(
            "clip_vitb16",
            f"FLYP CLIP {'narrow stand-in (--smoke)' if smoke else 'ViT-B/16 shape'}, {size} px, {clip_classes} "
            "iWildCam classes × 2 templates, AdamW",
            times,
            extra,
            batch,
            device,
            note,
        )
    if cuda:
        print(
            f"device: {torch.cuda.get_device_name()}; peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--resnet-batch", type=int)
    ap.add_argument("--clip-batch", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--models", nargs="+", default=["resnet10", "clip_vitb16"])
    ap.add_argument(
        "--smoke", action="store_true", help="32 px, a narrow CLIP over 4 classes: checks the script, times nothing"
    )
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = measure(
        args.quick,
        args.resnet_batch,
        args.clip_batch,
        args.repeats,
        not args.no_compile,
        tuple(args.models),
        args.smoke,
    )
    print_table(rows)
    write_json(rows, args.json)


if __name__ == "__main__":
    main()
