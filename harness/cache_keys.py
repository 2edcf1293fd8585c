"""Keys of the cached phases: a hash of exactly the settings that decide a phase's output.

Speed-only settings (DataLoader workers, a scorer's inference batch size, ``torch.compile``, the spectrum's
generation batch size, the corrupt-image tolerance, which decides only whether a run may go on) are left out, so
changing them never retrains the base model, regenerates the synthetic pool or re-scores it. User files that
decide the output (class names, descriptions, a base checkpoint, model weights) enter by the sha256 of their
contents, not their path: editing such a file in place changes the key, moving it does not.

``base_key``: the base model (and its training-set probabilities). ``pool_key``: the generated spectrum.
``scorer_key``: one scoring of a pool (a file inside the pool's folder). ``data_identity``: the data alone (the
embedded generator's and judge's caches are keyed by their pool's pixels when it is in memory, else by this).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.config import Config, stable_hash

ANY = "*"
# Bumped when the generators' code makes other images from the same settings, so older pools are not reused
# (2: each λ runs ⌊(1 − λ)·steps⌋ denoising steps in sd_img2img; before, λ = 0.9 at 50 steps ran 4)
GENERATION_VERSION = 2
# (section, component name) → params that change speed only. Only where known: a judge's or tiny DDPM's
# ``batch_size`` is a *training* batch size and does change their output.
SPEED_ONLY_PARAMS: dict[tuple[str, str], frozenset[str]] = {
    ("data", ANY): frozenset({"num_workers"}),
    ("generator", "sd_img2img"): frozenset({"compile"}),
    ("scorer", "clip"): frozenset({"batch_size"}),
}
# (section, component name) → params that name a user file whose contents decide the output
FILE_PARAMS: dict[tuple[str, str], frozenset[str]] = {
    ("data", ANY): frozenset({"class_names", "common_names"}),  # imagenet_lt, iwildcam
    ("model", ANY): frozenset({"weights"}),  # resnet10 / resnet50 state dicts
}


@lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | None) -> dict[str, str] | None:
    """``{"sha256": ...}`` of a file's contents (cached per path, mtime and size); a missing file keys as
    ``{"missing": path}`` (its loader then raises the error that names it)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        return {"missing": str(p)}
    st = p.stat()
    return {"sha256": _digest(str(p.resolve()), st.st_mtime_ns, st.st_size)}


def _matching(table: dict[tuple[str, str], frozenset[str]], section: str, name: str) -> frozenset[str]:
    return table.get((section, ANY), frozenset()) | table.get((section, name), frozenset())


def params_identity(section: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """A component's params less its speed-only keys, with user files replaced by their contents' digest."""
    drop, files = _matching(SPEED_ONLY_PARAMS, section, name), _matching(FILE_PARAMS, section, name)
    return {k: (file_digest(v) if k in files and isinstance(v, str) else v) for k, v in params.items() if k not in drop}


def data_identity(cfg: Config) -> dict[str, Any]:
    """The data settings that decide which images (and class names) a dataset holds, less ``max_train`` (the
    embedded generator and judge train on the ``pool`` split, which it does not touch)."""
    d = cfg.data
    return {
        "name": d.name,
        "root": d.root,
        "image_size": d.image_size,
        "split_seed": d.split_seed,
        "params": params_identity("data", d.name, d.params),
    }


def training_data_identity(cfg: Config) -> dict[str, Any]:
    """``data_identity`` plus ``max_train`` and the transforms (what the base model trains on, and how its
    training-set probabilities are measured). ``shot_groups`` only decide the few-shot hard set and the reported
    groups, so they are in the pool's key, not the base model's."""
    d = cfg.data
    return {
        **data_identity(cfg),
        "max_train": d.max_train,
        "train_transform": d.train_transform,
        "eval_transform": d.eval_transform,
    }


def base_key(cfg: Config) -> str:
    base = cfg.base.model_dump()
    base["checkpoint"] = file_digest(cfg.base.checkpoint)
    model = {"name": cfg.model.name, "params": params_identity("model", cfg.model.name, cfg.model.params)}
    return stable_hash({"data": training_data_identity(cfg), "model": model, "base": base})


def pool_key(cfg: Config) -> str:
    spectrum = cfg.spectrum.model_dump()
    spectrum.pop("batch_size")  # how it is batched does not change what is generated
    spectrum.pop("pool")  # an imported pool holds what generating would (checked when it is imported)
    spectrum["descriptions"] = file_digest(cfg.spectrum.descriptions)
    # few-shot hard samples do not depend on the base model: other base settings (e.g. its loss) share the pool
    if cfg.hard.rule == "few_shot":
        base = stable_hash(
            {
                "data": {**data_identity(cfg), "max_train": cfg.data.max_train},
                "shot_groups": cfg.data.shot_groups.model_dump(),
            }
        )
    else:
        base = base_key(cfg)
    generator = {
        "name": cfg.generator.name,
        "params": params_identity("generator", cfg.generator.name, cfg.generator.params),
    }
    return stable_hash(
        {
            "base": base,
            "hard": cfg.hard.model_dump(),
            "generator": generator,
            "spectrum": spectrum,
            "version": GENERATION_VERSION,
        }
    )


def scorer_key(cfg: Config) -> str:
    return stable_hash(
        {"scorer": {"name": cfg.scorer.name, "params": params_identity("scorer", cfg.scorer.name, cfg.scorer.params)}}
    )
