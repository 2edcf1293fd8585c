"""Pictures logged with every run: the spectrum grid (or, for ``retrieved_real``, the retrieved images), training
curves and the λ per stage."""

from __future__ import annotations

from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402


def spectrum_grid(pool: pd.DataFrame, pool_dir, train, n_sources: int = 8, seed_index: int = 0):
    """Rows: hard sources; columns: the real image, then λ from text-only to near-real; titles: filter scores."""
    levels = sorted(pool.lam.unique())
    sources = list(dict.fromkeys(pool.source_index))[:n_sources]
    fig, axes = plt.subplots(
        len(sources), len(levels) + 1, squeeze=False, figsize=(1.3 * (len(levels) + 1), 1.4 * len(sources))
    )
    for r, src in enumerate(sources):
        axes[r, 0].imshow(train.raw(int(src)), cmap="gray")
        axes[r, 0].set_title("real" if r == 0 else "", fontsize=8)
        for c, lam in enumerate(levels, start=1):
            row = pool[(pool.source_index == src) & (pool.lam == lam) & (pool.seed_index == seed_index)]
            ax = axes[r, c]
            if len(row):
                row = row.iloc[0]
                ax.imshow(Image.open(pool_dir / row.file), cmap="gray")
                color = "green" if row.keep else "red"
                ax.set_title(
                    f"λ={lam:g}\n{row.text_score:.2f}" if r == 0 else f"{row.text_score:.2f}", fontsize=7, color=color
                )
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("synthetic spectrum (title: image–text score; red = filtered out)", fontsize=8)
    fig.tight_layout()
    return fig


def retrieval_grid(retrieved, train, n_sources: int = 8, per_source: int = 6):
    """Rows: hard sources, taken from each class in turn; columns: the real source image, then the images retrieved
    for it, nearest first."""
    every, seen = list(dict.fromkeys(retrieved.source_index.tolist())), Counter()
    turns = []  # (the source's place within its class, its class)
    for s in every:
        label = int(train.labels[s])
        seen[label] += 1
        turns.append((seen[label], label))
    sources = [every[i] for i in sorted(range(len(every)), key=turns.__getitem__)][:n_sources]
    counts = [int((retrieved.source_index == s).sum()) for s in sources]
    per_source, rows = max(1, min(per_source, max(counts, default=1))), max(1, len(sources))
    fig, axes = plt.subplots(rows, per_source + 1, squeeze=False, figsize=(1.3 * (per_source + 1), 1.4 * rows))
    for r, src in enumerate(sources):
        axes[r, 0].imshow(train.raw(int(src)), cmap="gray")
        axes[r, 0].set_title("hard source" if r == 0 else "", fontsize=8)
        for c, row in enumerate(np.flatnonzero(retrieved.source_index == src)[:per_source], start=1):
            axes[r, c].imshow(retrieved.images.raw(int(row)), cmap="gray")
            axes[r, c].set_title(f"#{c}" if r == 0 else "", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("retrieved real images, nearest first (the scorer's embedding)", fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(history: list[dict], title: str):
    frame = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    if frame.empty:  # a method with no epochs (``base``: the base model as trained)
        fig.suptitle(f"{title}: no fine-tuning epochs", fontsize=9)
        return fig
    axes[0].plot(frame.epoch, frame["train/loss"])
    axes[0].set(title="training loss", xlabel="epoch")
    for col in [c for c in frame.columns if c.startswith("val/")]:
        axes[1].plot(frame.epoch, frame[col], label=col[4:])
    axes[1].set(title="validation", xlabel="epoch")
    axes[1].legend(fontsize=7)
    axes[2].step(frame.epoch, frame["curriculum/lambda"], where="post")
    axes[2].set(title="λ per epoch (1 = real only)", xlabel="epoch", ylim=(-0.05, 1.05))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)


def is_blank(path) -> bool:
    """True if a PNG is a single flat colour (a figure that drew nothing)."""
    arr = np.asarray(Image.open(path).convert("L"))
    return arr.std() < 1.0
