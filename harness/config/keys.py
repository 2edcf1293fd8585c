"""Keys of the cached phases: a hash of exactly the settings that decide a phase's output.

Speed-only settings (DataLoader workers, a scorer's inference batch size, ``torch.compile``, the spectrum's
generation batch size, the corrupt-image tolerance, which decides only whether a run may go on) are left out, so
changing them never retrains the base model, regenerates the synthetic pool or re-scores it. User files that
decide the output (class names, descriptions, a base checkpoint, model weights) enter by the sha256 of their
contents, not their path: editing such a file in place changes the key, moving it does not.

``base_key``: the base model (and its training-set probabilities). ``pool_key``: the generated spectrum (its level
and seed lists, hard samples and tries), or an imported one (``spectrum.pool``: plus the digest of its files).
``image_store_key``: the image store its pixels live in, shared by pools. ``scorer_key``: one scoring of a pool
(a file inside the pool's folder). ``data_identity``: the data alone (the embedded generator's and judge's caches
are keyed by their pool's pixels when it is in memory, else by this).
``run_key``: one (method, seed) fine-tuning run (its cache folder and the ``config_hash`` tag that lets
``harness run`` reuse a finished run), built from the same identities.

``batch_size`` is per rank (under torchrun each of WORLD_SIZE ranks takes its own batch), so the base and run keys
hold the global batch, ``batch_size × world``: one process with batch 128 and two ranks with batch 64 train alike
(tested in test_ddp.py) and share a key; one process keeps the keys it had before the world size entered them.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.config.hashing import stable_hash
from harness.config.schema import Config

ANY = "*"
POOL_META = "harness_pool.json"  # an exported pool's metadata, beside its data/ folder
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")  # a Hub repo id, ORG/NAME
# Bumped when the generators' code makes other images from the same settings, so older pools are not reused
# (2: each λ runs ⌊(1 − λ)·steps⌋ denoising steps in sd_img2img; before, λ = 0.9 at 50 steps ran 4;
# 3: pools link their images from the content-addressed image store and record each image's ``try``;
# 4: ImageNet-LT classes are named by the curated, unique names, so their prompts changed;
# 5: tiny_ddpm's default noise schedule is SDXL's scaled-linear one with its SNR shifted, no longer DDPM's linear)
GENERATION_VERSION = 5
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


# settings added after the key they enter existed: each enters only when set to other than its default, so the
# keys of an experiment that leaves them alone stay what they were (no base model retrained, no pool regenerated)
LATER_SETTINGS: dict[str, frozenset[str]] = {
    "shot_groups": frozenset({"many_inclusive"}),
    "base": frozenset({"momentum", "nesterov", "milestones", "gamma", "warmup_epochs", "mixup_alpha"}),
    "spectrum": frozenset({"zero_guidance"}),
    "train": frozenset({"epoch_length", "schedule_epochs", "include_nonhard_real"}),
    "curriculum": frozenset({"holdout_scope", "stage_epochs", "real_stage"}),
    "adaptive": frozenset({"decide", "measure", "train_on"}),
    "retrieval": frozenset({"source", "image_column", "label_column", "split", "near_duplicate"}),
}


def unless_default(section: str, model) -> dict[str, Any]:
    """``model.model_dump()`` less the ``LATER_SETTINGS`` of ``section`` that hold their default."""
    later, fields = LATER_SETTINGS.get(section, frozenset()), type(model).model_fields
    return {
        k: v
        for k, v in model.model_dump().items()
        if not (k in later and v == fields[k].get_default(call_default_factory=True))
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


# a file param's keyword for a file shipped with the harness: keyed by its contents like a user's file
SHIPPED_FILES = {("data", "class_names", "authors"): "resources/imagenet_lt_authors_class_names.txt"}


def shipped_or_given(section: str, key: str, value: str) -> str:
    """The path of the file a file param names: a shipped file for its keyword, else the value itself."""
    shipped = SHIPPED_FILES.get((section, key, value))
    if shipped is None:
        return value
    from importlib import resources

    return str(resources.files("harness").joinpath(shipped))


def _matching(table: dict[tuple[str, str], frozenset[str]], section: str, name: str) -> frozenset[str]:
    return table.get((section, ANY), frozenset()) | table.get((section, name), frozenset())


def params_identity(section: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """A component's params less its speed-only keys, with user files replaced by their contents' digest."""
    drop, files = _matching(SPEED_ONLY_PARAMS, section, name), _matching(FILE_PARAMS, section, name)
    return {
        k: (file_digest(shipped_or_given(section, k, v)) if k in files and isinstance(v, str) else v)
        for k, v in params.items()
        if k not in drop
    }


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


def world_size() -> int:
    """The number of ranks this process trains with: the DDP process group's size (1 outside one)."""
    import torch.distributed as td

    return td.get_world_size() if td.is_available() and td.is_initialized() else 1


def global_batch(optim: dict[str, Any], world: int | None) -> dict[str, Any]:
    """An optimizer section's settings with ``batch_size`` (per rank) replaced by the global batch."""
    return {**optim, "batch_size": optim["batch_size"] * (world_size() if world is None else world)}


def model_identity(cfg: Config) -> dict[str, Any]:
    return {"name": cfg.model.name, "params": params_identity("model", cfg.model.name, cfg.model.params)}


def base_key(cfg: Config, world: int | None = None) -> str:
    base = global_batch(unless_default("base", cfg.base), world)
    base["checkpoint"] = file_digest(cfg.base.checkpoint)
    return stable_hash({"data": training_data_identity(cfg), "model": model_identity(cfg), "base": base})


def pool_key(cfg: Config, world: int | None = None) -> str:
    spectrum = unless_default("spectrum", cfg.spectrum)
    spectrum.pop("batch_size")  # how it is batched does not change what is generated
    # an imported pool holds what generating would (checked when it is imported), but it is other data: its digest
    # (and whether its scores are trusted) enter the key, so two pools, or a pool and a generation, never share a folder
    imported, pool_scores = spectrum.pop("pool"), spectrum.pop("pool_scores")
    spectrum["descriptions"] = file_digest(cfg.spectrum.descriptions)
    spectrum["description_names"] = file_digest(cfg.spectrum.description_names)
    # few-shot hard samples do not depend on the base model: other base settings (e.g. its loss) share the pool
    if cfg.hard.rule == "few_shot":
        base = stable_hash(
            {
                "data": {**data_identity(cfg), "max_train": cfg.data.max_train},
                "shot_groups": unless_default("shot_groups", cfg.data.shot_groups),
            }
        )
    else:
        base = base_key(cfg, world)
    generator = {
        "name": cfg.generator.name,
        "params": params_identity("generator", cfg.generator.name, cfg.generator.params),
    }
    key = {
        "base": base,
        "hard": cfg.hard.model_dump(),
        "generator": generator,
        "spectrum": spectrum,
        "version": GENERATION_VERSION,
    }
    if imported:
        key["imported"] = {"digest": imported_pool_digest(imported), "pool_scores": pool_scores}
    if cfg.spectrum.max_tries > 1:  # which try is kept depends on the scorer and the threshold
        key["retry_scorer"] = {"scorer": scorer_key(cfg), "threshold": cfg.filter.threshold}
    return stable_hash(key)


def imported_pool_folder(spec: str) -> tuple[Path, str | None] | None:
    """The folder ``spectrum.pool`` names and its Hub revision: a folder, or ``ORG/NAME`` already in the local
    Hugging Face cache (never downloaded); None when there is none here."""
    try:
        folder = Path(spec).expanduser()
    except RuntimeError:  # ~user of no user here
        return None
    if folder.is_dir():
        return folder, None
    if not REPO_ID.fullmatch(spec):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(repo_id=spec, repo_type="dataset", local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    return snapshot, snapshot.name


def pool_files(folder: Path, revision: str | None = None) -> list[Path]:
    """What an exported pool's contents are: ``harness_pool.json`` and every regular file under ``data/``, less
    links out of the pool's folder (a Hub snapshot's: out of its repo), which are never read (the import refuses
    them)."""
    root = folder.resolve().parent.parent if revision else folder.resolve()
    data = sorted((folder / "data").rglob("*")) if (folder / "data").is_dir() else []
    return [p for p in [folder / POOL_META, *data] if p.is_file() and p.resolve().is_relative_to(root)]


def imported_pool_digest(spec: str) -> str:
    """sha256 over an exported pool's ``pool_files`` (names and contents), as found now (the import checks that the
    bytes it reads have this digest); ``missing:SPEC`` when there is no such pool here (the import names it)."""
    found = imported_pool_folder(spec)
    if found is None or not (found[0] / POOL_META).is_file():
        return f"missing:{spec}"
    folder, stats = found[0], []
    for p in pool_files(folder, found[1]):
        st = p.stat()
        stats.append((p.relative_to(folder).as_posix(), str(p.resolve()), st.st_mtime_ns, st.st_size))
    return _pool_digest(tuple(stats))


@lru_cache(maxsize=16)
def _pool_digest(stats: tuple) -> str:
    """Cached by every file's path, mtime and size: a pool of many shards is hashed once per process, not once per
    key computed."""
    return stable_hash([[name, {"sha256": _digest(real, mtime, size)}] for name, real, mtime, size in stats], 16)


def image_store_key(cfg: Config) -> str:
    """The content-addressed image store shared by every pool of the same data and generator: what decides an
    image's pixels besides its own source, λ, seed index, seed and prompt (``PlannedImage.image_hash``). Levels,
    seeds, hard samples, prompts and tries are per image, so pools for other level sets share the store."""
    generator = {
        "name": cfg.generator.name,
        "params": params_identity("generator", cfg.generator.name, cfg.generator.params),
    }
    s = cfg.spectrum
    settings = {"steps": s.steps, "guidance_scale": s.guidance_scale, "scheduler": s.scheduler}
    if s.zero_guidance != "pure_noise":  # λ = 0 images differ; a setting added later enters only when set
        settings["zero_guidance"] = s.zero_guidance
    return stable_hash(
        {"data": data_identity(cfg), "generator": generator, "spectrum": settings, "version": GENERATION_VERSION}
    )


def scorer_key(cfg: Config) -> str:
    return stable_hash(
        {"scorer": {"name": cfg.scorer.name, "params": params_identity("scorer", cfg.scorer.name, cfg.scorer.params)}}
    )


def train_identity(cfg: Config, world: int | None) -> dict[str, Any]:
    """The ``train`` section as it decides a run (less ``post_hoc``, which only measures the result). Undersampling
    has truncated ``int(ratio × n)`` (the authors') since it rounded: a re-balancing run's images changed, so its key
    says so and no rounded run is reused."""
    train = global_batch(unless_default("train", cfg.train), world)
    train.pop("post_hoc")  # what is measured after training, never what trains: like ``tracking``, in no key
    return {**train, "undersample_count": "truncated"} if cfg.train.undersample < 1 else train


def run_key(cfg: Config, method: str, world: int | None = None) -> str:
    """What decides one (method, seed) run besides its seed: the data it trains and is evaluated on (with the
    shot groups, which decide the reported groups), the base model, the scored pool and its filter, the training
    and curriculum settings with the global batch, and this method's params. Left out: speed-only settings
    (``device``, DataLoader workers, generation and scoring batch sizes), ``tracking``, ``sweep``, the run list
    (``methods``, ``seeds``), other methods' params, names and descriptions."""
    return stable_hash(
        {
            "data": {**training_data_identity(cfg), "shot_groups": unless_default("shot_groups", cfg.data.shot_groups)},
            "base": base_key(cfg, world),
            "pool": pool_key(cfg, world),
            "scorer": scorer_key(cfg),
            "filter": cfg.filter.model_dump(),
            "train": train_identity(cfg, world),
            "curriculum": {
                **unless_default("curriculum", cfg.curriculum),
                "adaptive": unless_default("adaptive", cfg.curriculum.adaptive),
            },
            "method": {"name": method, "params": cfg.method_params.get(method, {})},
            **({"retrieval": retrieval} if (retrieval := unless_default("retrieval", cfg.retrieval)) else {}),
        }
    )
