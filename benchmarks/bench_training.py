"""Training overhead: one epoch of ``harness.engine.train.Trainer`` over ``Part``s (digits_lt train split plus a
synthetic pool part, small_cnn) against a bare PyTorch loop over the same tensors, batch size, optimizer and
loss; and the synthetic pool decoded once into memory (``load_pool_images``) against decoded from PNG each
epoch (``FileImages`` + ``DataLoader``).

    python benchmarks/bench_training.py [--quick] [--json FILE]

Each figure: warm-up, then interleaved repeats, the median. Ratios are harness / reference seconds (lower is better).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import paired, print_table, time_row, write_json  # noqa: E402

from harness.config import load_config  # noqa: E402
from harness.data import load_dataset  # noqa: E402
from harness.data.base import FileImages  # noqa: E402
from harness.engine.train import Part, Trainer, batches, make_optimizer  # noqa: E402
from harness.models.base import build_model  # noqa: E402
from harness.phases.pipeline import load_pool_images, log_prior  # noqa: E402

CACHED_EPOCHS = 20


def write_pool(data, folder: Path, per_image: int) -> pd.DataFrame:
    """A synthetic pool: ``per_image`` noisy PNG variants of each training image, as the spectrum phase writes."""
    rng = np.random.default_rng(0)
    train, rows = data.splits["train"], []
    for i in range(len(train.labels)):
        base = train.images[i, 0].numpy()
        for s in range(per_image):
            pixels = np.clip(base + rng.normal(0, 0.1, base.shape), 0, 1)
            name = f"img{i}_s{s}.png"
            Image.fromarray((pixels * 255).astype(np.uint8), mode="L").save(folder / name)
            rows.append({"key": f"img{i}_s{s}", "file": name, "label": int(train.labels[i])})
    return pd.DataFrame(rows)


def bare_epoch(model, opt, x: torch.Tensor, y: torch.Tensor, batch_size: int, g: torch.Generator) -> None:
    model.train()
    for idx in torch.randperm(len(y), generator=g).split(batch_size):
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def cached_epoch(images, batch_size: int, g: torch.Generator) -> None:
    for _ in batches([Part(images, np.arange(len(images.labels)))], batch_size, g, torch.device("cpu")):
        pass


def decoded_epoch(images: FileImages, batch_size: int) -> None:
    for _ in DataLoader(images, batch_size=batch_size, shuffle=True, num_workers=0):
        pass


def measure(quick: bool, repeats: int | None = None) -> list[dict]:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = load_config("digits_lt_discl")
    data = load_dataset(cfg)
    opt_cfg, repeats = cfg.train, repeats or (15 if quick else 25)
    with tempfile.TemporaryDirectory() as tmp:
        pool = write_pool(data, Path(tmp), 1 if quick else 3)
        pool_mem = load_pool_images(pool, Path(tmp), cfg, data)
        pool_files = FileImages(
            [Path(tmp) / f for f in pool.file],
            pool.label.to_numpy(),
            list(pool.key),
            cfg.data.image_size,
            data.channels,
        )
        train = data.splits["train"]
        parts = [Part(train, np.arange(len(train.labels))), Part(pool_mem, np.arange(len(pool)))]
        model = build_model(cfg, data.num_classes, data.channels, data.class_names)
        ref_model = copy.deepcopy(model)
        trainer = Trainer(model, opt_cfg, 10**6, log_prior(data), 0, torch.device("cpu"))
        ref_opt, g = make_optimizer(ref_model, opt_cfg), torch.Generator().manual_seed(0)
        x = torch.cat([train.images, pool_mem.images])
        y = torch.cat([torch.tensor(train.labels), torch.tensor(pool_mem.labels)])
        epoch = iter(range(10**6))
        run_harness = lambda: trainer.train_epoch(parts, next(epoch))  # noqa: E731
        run_bare = lambda: bare_epoch(ref_model, ref_opt, x, y, opt_cfg.batch_size, g)  # noqa: E731
        for _ in range(2):
            run_harness(), run_bare()  # warm-up (allocator, kernels)
        ours, ref = paired(run_harness, run_bare, repeats)
        cached = lambda: [cached_epoch(pool_mem, opt_cfg.batch_size, g) for _ in range(CACHED_EPOCHS)]  # noqa: E731
        per_epoch = lambda: decoded_epoch(pool_files, opt_cfg.batch_size)  # noqa: E731
        cached(), per_epoch()
        cache_s, png_s = paired(cached, per_epoch, repeats)
        cache_s = [t / CACHED_EPOCHS for t in cache_s]  # a cached read takes ~0.3 ms: time several per repeat
        decode_s, png2_s = paired(lambda: load_pool_images(pool, Path(tmp), cfg, data), per_epoch, max(3, repeats // 3))
    n, m = len(y), len(pool)
    return [
        time_row(
            "train_overhead",
            f"training epoch, Trainer.train_epoch vs a bare PyTorch loop (digits_lt "
            f"small_cnn, {n} images incl. {m} synthetic, {len(ours)} interleaved repeats)",
            ours,
            ref,
            1.10,
            unit="s/epoch",
        ),
        time_row(
            "pool_cache_read",
            f"synthetic pool read per epoch ({m} PNGs): in-memory cache vs PNG decode",
            cache_s,
            png_s,
            1.0,
            unit="s/epoch",
        ),
        time_row(
            "pool_decode_once",
            f"synthetic pool one-time decode ({m} PNGs) vs one PNG-decoding epoch",
            decode_s,
            png2_s,
            None,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, help="interleaved repeats per figure (default 15 with --quick, else 25)")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = measure(args.quick, args.repeats)
    print_table(rows)
    write_json(rows, args.json)


if __name__ == "__main__":
    main()
