"""Experiment configs: YAML → typed, validated dataclasses; ``--set`` overrides; stable hashes for caching.

Every key is declared here. An unknown key, a wrong type or a missing experiment is a ``ConfigError`` whose
one-line message names the key and the file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


class ConfigError(ValueError):
    """A config problem the user can fix; the message is one line."""


@dataclass
class ShotGroups:
    many: int = 100  # a class is "many-shot" if it has more than this many training images
    few: int = 20  # ... and "few-shot" if it has fewer than this many


@dataclass
class DataConfig:
    name: str = "digits_lt"
    root: str | None = None  # where a staged dataset lives (real datasets)
    image_size: int = 16
    split_seed: int = 0
    shot_groups: ShotGroups = field(default_factory=ShotGroups)
    params: dict[str, Any] = field(default_factory=dict)  # dataset-specific, validated by the dataset
    max_train: int | None = None  # keep at most this many training images (quick runs)
    max_corrupt_fraction: float = 0.001  # unreadable images per split that are skipped (and counted) before failing
    # torchvision.transforms.v2 steps on uint8 images ([Name, {Name: {arg: value}}, ...]); null: squash to S×S
    train_transform: list[Any] | None = None  # real and synthetic training images alike
    eval_transform: list[Any] | None = None  # validation, test, hard-sample mining and the adaptive probe


@dataclass
class ModelConfig:
    name: str = "small_cnn"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    loss: str = "ce"  # ce | balanced_softmax
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32: autocast for training and eval


@dataclass
class BaseConfig(OptimConfig):
    """Training of the base model on real data only; shared by every method and seed."""

    seed: int = 0
    checkpoint: str | None = None  # start from (or use) these weights instead of training


@dataclass
class HardConfig:
    rule: str = "few_shot"  # few_shot | low_prob | k_hardest | misclassified
    threshold: float = 0.5  # low_prob: true-class probability below this
    k: int = 100  # k_hardest
    exclude_classes: list[str] = field(default_factory=list)  # class names never hard (iWildCam: [empty])


@dataclass
class ComponentConfig:
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpectrumConfig:
    levels: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.3, 0.5, 0.7, 0.9])
    seeds: int = 8  # synthetic samples per (image, λ)
    steps: int = 50  # denoising steps of a full (λ = 0) trajectory
    guidance_scale: float = 10.0  # classifier-free text guidance
    scheduler: str = "ddim"
    batch_size: int = 256
    prompt: str = "a photo of a {name}"
    descriptions: str | None = None  # JSON {class name: [descriptions]}: the prompts of the classes it lists
    description_prefix: str = ""  # prepended to each description (the paper: "a 8k real photo: ")


@dataclass
class FilterConfig:
    threshold: float = 0.3  # keep a synthetic image if its image–text score is at least this


@dataclass
class TrainConfig(OptimConfig):
    """Fine-tuning from the base model, where the methods differ."""

    curriculum_epochs: int = 8  # epochs under the curriculum; the rest are real data only
    init: str = "base"  # base: start from the base model | pretrained: from the model's pretrained weights
    undersample: float = 1.0  # fraction of non-hard real images drawn afresh each epoch (when re-balancing)
    # synthetic images per curriculum epoch, as a multiple of the hard sources; null: every kept synthetic image of
    # the stage's levels (the paper's S_λ)
    synthetic_scale: float | None = 3.0
    select_on: str = "val/acc"  # model selection metric (never a test metric)
    include_hard_real: bool = True  # real hard images join curriculum stages (iWildCam's stages use S_λ ∪ non-hard)


@dataclass
class AdaptiveConfig:
    holdout: float = 0.25  # fraction of hard sources whose synthetic images form the guidance-validation set
    probe_steps: int = 4  # optimizer steps between the two measurements
    statistic: str = "mean"  # mean | trimmed_mean | median
    drop_outliers: bool = True  # drop 1.5×IQR outliers of the per-image gains first


@dataclass
class CurriculumConfig:
    levels: list[float] | None = None  # λ levels the curricula use (default: every generated level)
    adaptive_levels: list[float] | None = None  # for discl_adaptive (default: ``levels``)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)


@dataclass
class Range:
    """A numeric search range; ``step`` makes it discrete (an integer range when low, high and step are whole)."""

    low: float = 0.0
    high: float = 1.0
    step: float | None = None
    log: bool = False


@dataclass
class SweepSpace:
    """What a sweep may change. A list of choices or a range is searched; an empty list or null keeps the
    experiment's own value."""

    orderings: list[str] = field(default_factory=lambda: [
        "diverse_to_specific", "specific_to_diverse", "random", "adaptive"])
    levels: list[float] | None = None  # candidate λ levels, each in or out of the curriculum (null: spectrum.levels)
    curriculum_fraction: Range | None = field(default_factory=lambda: Range(0.25, 1.0))  # of train.epochs
    synthetic_scale: Range | None = field(default_factory=lambda: Range(0.5, 5.0))
    undersample: Range | None = field(default_factory=lambda: Range(0.2, 1.0))
    filter_threshold: Range | None = field(default_factory=lambda: Range(0.0, 0.9))
    statistics: list[str] = field(default_factory=lambda: ["mean", "trimmed_mean", "median"])  # adaptive only
    probe_steps: list[int] = field(default_factory=lambda: [2, 4, 8])  # adaptive only
    losses: list[str] = field(default_factory=lambda: ["ce", "balanced_softmax"])


@dataclass
class SweepConfig:
    """``harness sweep``: an Optuna study over curriculum schedules, objective on validation only."""

    study: str | None = None  # default: "<experiment>-sweep"
    space: SweepSpace = field(default_factory=SweepSpace)
    objective: str | None = None  # default: val/acc_few (long-tail) or val/f1_macro (iWildCam)
    multi_objective: list[str] | None = None  # e.g. [val/acc_few, val/acc_many]: a Pareto front, no pruning
    pruner: str = "median"  # median | hyperband | none
    pruner_startup_trials: int = 4  # median: trials before any pruning
    pruner_warmup_epochs: int = 1  # median: epochs of a trial before it may be pruned
    sampler_seed: int = 0
    seed: int | None = None  # training seed of every trial (default: the experiment's first seed)
    enqueue_paper: bool = True  # the paper's diverse→specific schedule is trial 0
    heartbeat_interval: int = 10  # seconds (RDB storages); a trial silent for grace_period is retried once
    grace_period: int = 60
    max_retry: int = 1
    max_failures: int = 5  # a worker gives up once the study holds this many failed trials


@dataclass
class TrackingConfig:
    """What each run records in MLflow besides params and metrics; none of it changes a run's results (and
    none of it enters the run's config hash)."""

    log_model: str = "auto"  # auto: the selected model when under max_model_mb | always | never
    max_model_mb: float = 200.0
    system_metrics: bool = True  # CPU, memory, disk, network (and GPU with nvidia-ml-py) as system/* metrics
    system_metrics_interval_s: float = 10.0


@dataclass
class Config:
    name: str = ""
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    hard: HardConfig = field(default_factory=HardConfig)
    generator: ComponentConfig = field(default_factory=lambda: ComponentConfig("tiny_ddpm"))
    spectrum: SpectrumConfig = field(default_factory=SpectrumConfig)
    scorer: ComponentConfig = field(default_factory=lambda: ComponentConfig("judge"))
    filter: FilterConfig = field(default_factory=FilterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    methods: list[str] = field(default_factory=lambda: ["plain", "discl_diverse_to_specific"])
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"  # auto | cpu | cuda
    sweep: SweepConfig = field(default_factory=SweepConfig)  # search space for `harness sweep`
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # what MLflow records besides metrics

    @property
    def curriculum_levels(self) -> list[float]:
        return list(self.curriculum.levels if self.curriculum.levels is not None else self.spectrum.levels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- typed conversion

def _check(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_check(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        _, varg = typing.get_args(tp) or (str, Any)
        return {str(k): _check(v, varg, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``values``; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            import difflib

            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {path!r}{hint}")
        kwargs[key] = _check(value, hints[key], path)
    return cls(**kwargs)


# --------------------------------------------------------------------------- loading

def find_experiment(name: str) -> Path:
    """An experiment name (``experiments/NAME.yaml``) or a path to a YAML file."""
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else []
    dirs = [Path(d) for d in os.environ.get("HARNESS_EXPERIMENTS", "").split(os.pathsep) if d]
    dirs += [Path.cwd() / "experiments", EXPERIMENTS_DIR]
    candidates += [d / f"{name}.yaml" for d in dirs]
    for path in candidates:
        if path.is_file():
            return path
    known = ", ".join(list_experiments()) or "none found"
    raise ConfigError(f"no experiment {name!r} (looked in {', '.join(str(d) for d in dirs)}; known: {known})")


def list_experiments() -> list[str]:
    dirs = [Path.cwd() / "experiments", EXPERIMENTS_DIR]
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{at}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    parent = data.pop("extends", None)
    if parent:
        base = _read_yaml(find_experiment(parent))
        base.pop("name", None)
        data = deep_merge(base, data)
    return data


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_override(values: dict, keys: list[str], value: Any) -> None:
    """Set ``keys`` in the raw mapping, checking each key exists in the schema (a typo is an error)."""
    cls: Any = Config
    node = values
    for i, key in enumerate(keys):
        dotted = ".".join(keys[: i + 1])
        if cls is not None:
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if key not in fields:
                raise ConfigError(f"--set {'.'.join(keys)}: no key {dotted!r} in the config")
            tp = typing.get_type_hints(cls)[key]
            inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
            cls = tp if dataclasses.is_dataclass(tp) else (inner[0] if inner else None)
        if i == len(keys) - 1:
            node[key] = value
        else:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]


def load_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    path = find_experiment(name)
    values = _read_yaml(path)
    values.setdefault("name", path.stem)
    for text in overrides:
        apply_override(values, *parse_override(text))
    try:
        cfg = build(Config, values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    validate(cfg, path)
    return cfg


def validate(cfg: Config, path: Path | str = "config") -> None:
    """Checks across keys and against the registries."""
    from harness import registry

    def bad(msg: str) -> None:
        raise ConfigError(f"{path}: {msg}")

    for lam in cfg.spectrum.levels:
        if not 0.0 <= lam < 1.0:
            bad(f"spectrum.levels: λ must be in [0, 1), got {lam}")
    for lam in cfg.curriculum_levels + list(cfg.curriculum.adaptive_levels or []):
        if not any(abs(lam - g) < 1e-9 for g in cfg.spectrum.levels):
            bad(f"curriculum level {lam} is not among the generated spectrum.levels {cfg.spectrum.levels}")
    if cfg.train.curriculum_epochs > cfg.train.epochs:
        bad(f"train.curriculum_epochs ({cfg.train.curriculum_epochs}) exceeds train.epochs ({cfg.train.epochs})")
    if cfg.train.init not in ("base", "pretrained"):
        bad(f"train.init must be base or pretrained, got {cfg.train.init!r}")
    if cfg.train.synthetic_scale is not None and cfg.train.synthetic_scale <= 0:
        bad(f"train.synthetic_scale must be positive or null (every kept image), got {cfg.train.synthetic_scale}")
    check_transforms(cfg, bad)
    if not 0 < cfg.train.undersample <= 1:
        bad(f"train.undersample must be in (0, 1], got {cfg.train.undersample}")
    if cfg.train.select_on.startswith("test"):
        bad("train.select_on must be a validation metric: selecting on test would leak the test split")
    for key, opt in (("train", cfg.train), ("base", cfg.base)):
        if opt.precision not in ("auto", "bf16", "fp16", "fp32"):
            bad(f"{key}.precision must be auto, bf16, fp16 or fp32, got {opt.precision!r}")
    for loss in (cfg.train.loss, cfg.base.loss):
        if loss not in ("ce", "balanced_softmax"):
            bad(f"loss must be ce or balanced_softmax, got {loss!r}")
    if cfg.hard.rule not in ("few_shot", "low_prob", "k_hardest", "misclassified"):
        bad(f"hard.rule must be few_shot, low_prob, k_hardest or misclassified, got {cfg.hard.rule!r}")
    if cfg.curriculum.adaptive.statistic not in ("mean", "trimmed_mean", "median"):
        bad("curriculum.adaptive.statistic must be mean, trimmed_mean or median")
    if not cfg.seeds:
        bad("seeds: give at least one seed")
    validate_sweep(cfg.sweep, bad)
    if cfg.tracking.log_model not in ("auto", "always", "never"):
        bad(f"tracking.log_model must be auto, always or never, got {cfg.tracking.log_model!r}")
    if cfg.tracking.system_metrics_interval_s <= 0:
        bad("tracking.system_metrics_interval_s must be positive")
    try:
        registry.get_dataset(cfg.data.name)
        registry.get_generator(cfg.generator.name)
        registry.get_scorer(cfg.scorer.name)
        registry.get_model(cfg.model.name)
        for m in cfg.methods:
            registry.get_method(m)
        for m in cfg.method_params:
            registry.get_method(m)
    except registry.UnknownNameError as e:
        bad(str(e))
    if cfg.train.init == "pretrained" and not registry.get_model(cfg.model.name).has_pretrained(cfg):
        bad(f"train.init: pretrained, but model {cfg.model.name!r} has no pretrained weights (give "
            "model.params.weights, or train.init: base)")
    validate_metric_names(cfg, bad)


def check_transforms(cfg: Config, bad) -> None:
    """Both transforms build and end in uint8 images of data.image_size (checked on a dummy image)."""
    from harness.transforms import TransformError, build_transform, check_output

    for key in ("train_transform", "eval_transform"):
        spec = getattr(cfg.data, key)
        if spec is None:
            continue
        try:
            check_output(build_transform(spec, cfg.data.image_size, f"data.{key}"), cfg.data.image_size,
                         f"data.{key}")
        except TransformError as e:
            bad(str(e))


def validate_metric_names(cfg: Config, bad) -> None:
    """``train.select_on`` and the sweep objectives name metrics the dataset logs on validation (declared at
    ``@register_dataset``): a misspelt name would otherwise select the last epoch silently."""
    import difflib

    from harness.registry import validation_metrics

    known = validation_metrics(cfg.data.name)
    named = [("train.select_on", cfg.train.select_on), ("sweep.objective", cfg.sweep.objective)]
    named += [(f"sweep.multi_objective[{i}]", m) for i, m in enumerate(cfg.sweep.multi_objective or [])]
    for key, name in named:
        if name is not None and name not in known:
            close = difflib.get_close_matches(name, known, n=2, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            bad(f"{key}: {name!r} is not a validation metric of dataset {cfg.data.name}; {hint}"
                f"(it logs {', '.join(known)})")


SWEEP_ORDERINGS = ("diverse_to_specific", "specific_to_diverse", "random", "adaptive")


def validate_sweep(sweep: SweepConfig, bad) -> None:
    space = sweep.space
    for name in space.orderings:
        if name not in SWEEP_ORDERINGS:
            bad(f"sweep.space.orderings: {name!r} is not one of {', '.join(SWEEP_ORDERINGS)}")
    for name in space.statistics:
        if name not in ("mean", "trimmed_mean", "median"):
            bad(f"sweep.space.statistics: {name!r} is not mean, trimmed_mean or median")
    for name in space.losses:
        if name not in ("ce", "balanced_softmax"):
            bad(f"sweep.space.losses: {name!r} is not ce or balanced_softmax")
    for key in ("curriculum_fraction", "synthetic_scale", "undersample", "filter_threshold"):
        r = getattr(space, key)
        if r is not None and (r.low > r.high or (r.log and r.low <= 0)):
            bad(f"sweep.space.{key}: need low <= high (and low > 0 with log), got {r.low}..{r.high}")
    for key in ("curriculum_fraction", "undersample"):
        r = getattr(space, key)
        if r is not None and not (0 <= r.low and r.high <= 1):
            bad(f"sweep.space.{key}: a fraction must lie in [0, 1], got {r.low}..{r.high}")
    for name in [sweep.objective or "val/"] + list(sweep.multi_objective or []):
        if not name.startswith("val/") or "test" in name:
            bad(f"sweep objective {name!r}: a sweep optimizes a validation metric (val/...), never a test metric")
    if sweep.multi_objective is not None and len(sweep.multi_objective) < 2:
        bad("sweep.multi_objective: give at least two validation metrics, e.g. [val/acc_few, val/acc_many]")
    if sweep.pruner not in ("median", "hyperband", "none"):
        bad(f"sweep.pruner must be median, hyperband or none, got {sweep.pruner!r}")
    if sweep.heartbeat_interval < 1 or sweep.grace_period <= sweep.heartbeat_interval:
        bad("sweep: need heartbeat_interval >= 1 and grace_period > heartbeat_interval")


# --------------------------------------------------------------------------- hashing and flattening

def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of JSON-able ``obj`` that is the same in every process and on every machine."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def data_identity(cfg: Config) -> dict[str, Any]:
    """The data settings that decide which images a dataset holds: the key of caches built from the data alone
    (a new unrelated ``data`` field, a different corrupt-image tolerance or worker count must not retrain the
    generator; a names file enters by its contents). See ``harness.cache_keys``."""
    from harness.cache_keys import data_identity as identity

    return identity(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
