"""Experiment configs: YAML → typed, validated pydantic models; ``--set`` overrides; stable hashes for caching.

Every key is declared here, each section a small pydantic model (``extra="forbid"``, strict types: a string is not
a number, a bool is not an integer; an integer is a number). An unknown key, a wrong type, an unknown choice or a
method that needs λ levels the spectrum lacks is a ``ConfigError`` whose one-line message names the key and the
file (``harness`` exits with status 2 on it).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import typing
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from harness.core.errors import HarnessError

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"  # in a source checkout (editable install)
EXPERIMENTS_PACKAGE = "harness_experiments"  # the same files in an installed wheel (pyproject.toml, setup.py)


def shipped_experiments() -> Path | None:
    """The folder of the experiments that come with the harness: ``experiments/`` beside the source tree when
    running from a checkout, else the installed package ``harness_experiments`` (found through importlib.resources,
    so a wheel or a non-editable ``pip install .`` finds them from any directory)."""
    if EXPERIMENTS_DIR.is_dir():
        return EXPERIMENTS_DIR
    from importlib import resources

    try:
        folder = resources.files(EXPERIMENTS_PACKAGE)  # a namespace package (no __init__.py): a MultiplexedPath
    except ModuleNotFoundError:
        return None
    yamls = [f for f in folder.iterdir() if f.name.endswith(".yaml")] if folder.is_dir() else []
    return Path(str(yamls[0])).parent if yamls else None


class ConfigError(HarnessError, ValueError):
    """A config problem the user can fix; the message is one line."""


# --------------------------------------------------------------------------- choices, each written once

Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal["cosine", "constant"]
Loss = Literal["ce", "balanced_softmax"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]  # auto: bf16 on CUDA, fp32 on CPU (autocast, training and eval)
PostCurriculum = Literal["rebalanced", "natural"]  # the epochs after the curriculum: still re-balanced | natural data
Init = Literal["base", "pretrained"]  # fine-tune from the base model | from the model's pretrained weights
HardRule = Literal["few_shot", "low_prob", "k_hardest", "misclassified"]
Statistic = Literal["mean", "trimmed_mean", "median"]  # the adaptive rule's summary of per-image gains
Ordering = Literal["diverse_to_specific", "specific_to_diverse", "random", "adaptive"]  # sweep orderings
Pruner = Literal["median", "hyperband", "none"]
LogModel = Literal["auto", "always", "never"]  # auto: the selected model when under tracking.max_model_mb
# default: the generator's own scheduler; the others are diffusers schedulers (harness.generators.sd_img2img)
Scheduler = Literal["default", "ddim", "euler", "euler_a", "pndm", "dpm", "lms"]

SWEEP_ORDERINGS = typing.get_args(Ordering)

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def _str_keys(value: Any) -> Any:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


Params = Annotated[dict[str, Any], BeforeValidator(_str_keys)]  # a component's own params (checked by it)


class Section(BaseModel):
    """A config section: unknown keys and loose types are refused. Fields may also be given by position, in
    their declared order (``HardConfig("k_hardest", k=7)``), as the dataclasses before these models allowed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        names = list(type(self).model_fields)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional values")
        super().__init__(**dict(zip(names, args)), **kwargs)


def _among(lam: float, levels: list[float]) -> bool:
    return any(abs(lam - g) < 1e-9 for g in levels)


def _unique(values: list, what: str) -> list:
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise ValueError(f"{what} {', '.join(map(str, repeated))} given twice")
    return values


# --------------------------------------------------------------------------- sections


class ShotGroups(Section):
    many: NonNegInt = 100  # a class is "many-shot" if it has more than this many training images
    few: NonNegInt = 20  # ... and "few-shot" if it has fewer than this many

    @model_validator(mode="after")
    def _ordered(self) -> ShotGroups:
        if self.few > self.many:
            raise ValueError(f"few ({self.few}) exceeds many ({self.many})")
        return self


class DataConfig(Section):
    name: str = "digits_lt"
    root: str | None = None  # where a staged dataset lives (real datasets)
    image_size: PosInt = 16
    split_seed: int = 0
    shot_groups: ShotGroups = Field(default_factory=ShotGroups)
    params: Params = Field(default_factory=dict)  # dataset-specific, validated by the dataset
    max_train: PosInt | None = None  # keep at most this many training images (quick runs)
    max_corrupt_fraction: Fraction = 0.001  # unreadable images per split that are skipped (and counted) before failing
    # torchvision.transforms.v2 steps on uint8 images ([Name, {Name: {arg: value}}, ...]); null: squash to S×S
    train_transform: list[Any] | None = None  # real and synthetic training images alike
    eval_transform: list[Any] | None = None  # validation, test, hard-sample mining and the adaptive probe


class ModelConfig(Section):
    name: str = "small_cnn"
    params: Params = Field(default_factory=dict)


class OptimConfig(Section):
    epochs: PosInt = 10
    batch_size: PosInt = 64
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    optimizer: Optimizer = "adam"
    schedule: Schedule = "cosine"
    warmup_steps: NonNegInt = 0
    loss: Loss = "ce"
    precision: Precision = "auto"


class BaseConfig(OptimConfig):
    """Training of the base model on real data only; shared by every method and seed."""

    seed: int = 0
    checkpoint: str | None = None  # start from (or use) these weights instead of training


class HardConfig(Section):
    rule: HardRule = "few_shot"
    threshold: Fraction = 0.5  # low_prob: true-class probability below this
    k: PosInt = 100  # k_hardest
    exclude_classes: list[str] = Field(default_factory=list)  # class names never hard (iWildCam: [empty])


class ComponentConfig(Section):
    name: str = ""
    params: Params = Field(default_factory=dict)


class SpectrumConfig(Section):
    levels: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.3, 0.5, 0.7, 0.9])
    seeds: PosInt = 8  # synthetic samples per (image, λ)
    steps: PosInt = 50  # denoising steps of a full (λ = 0) trajectory
    guidance_scale: Annotated[float, Field(ge=0)] = 10.0  # classifier-free text guidance
    scheduler: Scheduler = "ddim"
    batch_size: PosInt = 256
    prompt: str = "a photo of a {name}"
    descriptions: str | None = None  # JSON {class name: [descriptions]}: the prompts of the classes it lists
    description_prefix: str = ""  # prepended to each description (the paper: "a 8k real photo: ")
    # the names ``descriptions`` is keyed by, one per label id (a text file, one per line, or a JSON list), when not the
    # dataset's class names: e.g. the authors' ImageNet-LT list (imagenetlt_classes.py's CLASSES, one per line)
    description_names: str | None = None
    # tries per sample: a sample whose text score is ≤ filter.threshold is regenerated with the next description and
    # its own seed, up to this many tries, and the best-scoring try is kept (the authors' ImageNet-LT: 5)
    max_tries: PosInt = 1
    # an exported pool (a folder, or ORG/NAME in the local Hugging Face cache) used instead of generating
    pool: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("levels")
    @classmethod
    def _levels(cls, levels: list[float]) -> list[float]:
        for lam in levels:
            if not 0.0 <= lam < 1.0:
                raise ValueError(f"λ must be in [0, 1), got {lam}")
        return _unique(levels, "λ")

    @field_validator("prompt")
    @classmethod
    def _names_the_class(cls, prompt: str) -> str:
        try:
            named = prompt.format(name="\0")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"{prompt!r} is not a template over {{name}} alone ({type(e).__name__}: {e})") from None
        if "\0" not in named:
            raise ValueError(
                f"{prompt!r} does not name the class: every class would get the same prompt; put {{name}} in it"
            )
        return prompt


class FilterConfig(Section):
    threshold: float = 0.3  # keep a synthetic image if its image–text score is at least this


class TrainConfig(OptimConfig):
    """Fine-tuning from the base model, where the methods differ (the ``train`` section)."""

    curriculum_epochs: NonNegInt = 8  # epochs under the curriculum; the rest are real data only
    init: Init = "base"
    undersample: Annotated[float, Field(gt=0, le=1)] = 1.0  # fraction of non-hard real images drawn each epoch
    # synthetic images per curriculum epoch, as a multiple of the hard sources; null: every kept synthetic image of
    # the stage's levels (the paper's S_λ)
    synthetic_scale: Annotated[float, Field(gt=0)] | None = 3.0
    select_on: str = "val/acc"  # model selection metric (never a test metric)
    include_hard_real: bool = True  # real hard images join curriculum stages (iWildCam's stages use S_λ ∪ non-hard)
    # after the curriculum, a re-balancing method's epochs: the natural data, or still a fresh ``undersample`` of the
    # non-hard images with the real hard ones (upsampled with replacement to ``tail_share`` when set; the authors'
    # ImageNet-LT loader, its ``[100, 100]`` branch)
    post_curriculum: PostCurriculum = "natural"
    # the hard (real + synthetic) share of a re-balanced epoch: tail = share / (1 − share) × the epoch's non-hard
    # count, synthetic images drawn with replacement when too few were kept (the authors' ImageNet-LT: 0.136);
    # null: ``synthetic_scale`` decides the synthetic count
    tail_share: Annotated[float, Field(gt=0, lt=1)] | None = None

    @field_validator("curriculum_epochs")
    @classmethod
    def _within_epochs(cls, value: int, info: ValidationInfo) -> int:
        epochs = info.data.get("epochs")
        if epochs is not None and value > epochs:
            raise ValueError(f"{value} exceeds train.epochs ({epochs})")
        return value

    @field_validator("tail_share")
    @classmethod
    def _one_synthetic_count(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("synthetic_scale") is not None:
            raise ValueError(
                f"{value} decides the synthetic count of a re-balanced epoch: set train.synthetic_scale: null "
                f"(got {info.data['synthetic_scale']})"
            )
        return value

    @field_validator("select_on")
    @classmethod
    def _not_test(cls, value: str) -> str:
        if value.startswith("test"):
            raise ValueError("must be a validation metric: selecting on test would leak the test split")
        return value


class AdaptiveConfig(Section):
    # hard sources held out as the guidance-validation set: a count (int ≥ 1) or a fraction (0 < float < 1)
    holdout: int | float = 0.25
    include_real: bool = True  # the real images (the authors' guidance 100) are a candidate: a real-only stage
    statistic: Statistic = "mean"
    drop_outliers: bool = True  # drop 1.5×IQR outliers of the per-image gains first

    @field_validator("holdout")
    @classmethod
    def _count_or_fraction(cls, value: int | float) -> int | float:
        if (isinstance(value, int) and value >= 1) or (isinstance(value, float) and 0 < value < 1):
            return value
        raise ValueError(f"give a count (an integer ≥ 1) or a fraction (0 < x < 1), got {value}")


class CurriculumConfig(Section):
    levels: list[float] | None = None  # λ levels the curricula use (default: every generated level)
    adaptive_levels: list[float] | None = None  # for discl_adaptive (default: ``levels``)
    adaptive: AdaptiveConfig = Field(default_factory=AdaptiveConfig)

    @field_validator("levels", "adaptive_levels")
    @classmethod
    def _no_repeats(cls, levels: list[float] | None) -> list[float] | None:
        return levels if levels is None else _unique(levels, "λ")


class Range(Section):
    """A numeric search range; ``step`` makes it discrete (an integer range when low, high and step are whole)."""

    low: float = 0.0
    high: float = 1.0
    step: Annotated[float, Field(gt=0)] | None = None
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high or (self.log and self.low <= 0):
            raise ValueError(f"need low <= high (and low > 0 with log), got {self.low}..{self.high}")
        return self


class SweepSpace(Section):
    """What a sweep may change. A list of choices or a range is searched; an empty list or null keeps the
    experiment's own value."""

    orderings: list[Ordering] = Field(default_factory=lambda: list(SWEEP_ORDERINGS))
    levels: list[float] | None = None  # candidate λ levels, each in or out of the curriculum (null: spectrum.levels)
    curriculum_fraction: Range | None = Field(default_factory=lambda: Range(0.25, 1.0))  # of train.epochs
    synthetic_scale: Range | None = Field(default_factory=lambda: Range(0.5, 5.0))
    undersample: Range | None = Field(default_factory=lambda: Range(0.2, 1.0))
    filter_threshold: Range | None = Field(default_factory=lambda: Range(0.0, 0.9))
    statistics: list[Statistic] = Field(default_factory=lambda: ["mean", "trimmed_mean", "median"])  # adaptive only
    losses: list[Loss] = Field(default_factory=lambda: ["ce", "balanced_softmax"])

    @field_validator("curriculum_fraction", "undersample")
    @classmethod
    def _fraction(cls, r: Range | None) -> Range | None:
        if r is not None and not (0 <= r.low and r.high <= 1):
            raise ValueError(f"a fraction must lie in [0, 1], got {r.low}..{r.high}")
        return r


class SweepConfig(Section):
    """``harness sweep``: an Optuna study over curriculum schedules, objective on validation only."""

    study: str | None = None  # default: "<experiment>-sweep"
    space: SweepSpace = Field(default_factory=SweepSpace)
    objective: str | None = None  # default: val/acc_few (long-tail) or val/f1_macro (iWildCam)
    multi_objective: list[str] | None = None  # e.g. [val/acc_few, val/acc_many]: a Pareto front, no pruning
    pruner: Pruner = "median"
    pruner_startup_trials: NonNegInt = 4  # median: trials before any pruning
    pruner_warmup_epochs: NonNegInt = 1  # median: epochs of a trial before it may be pruned
    sampler_seed: int = 0
    seed: int | None = None  # training seed of every trial (default: the experiment's first seed)
    enqueue_paper: bool = True  # the paper's diverse→specific schedule is trial 0
    heartbeat_interval: PosInt = 10  # seconds (RDB storages); a trial silent for grace_period is retried once
    grace_period: PosInt = 60
    max_retry: NonNegInt = 1
    max_failures: PosInt = 5  # a worker gives up once the study holds this many failed trials

    @field_validator("objective", "multi_objective")
    @classmethod
    def _on_validation(cls, names: str | list[str] | None, info: ValidationInfo) -> str | list[str] | None:
        if info.field_name == "multi_objective" and names is not None and len(names) < 2:
            raise ValueError("give at least two validation metrics, e.g. [val/acc_few, val/acc_many]")
        for name in [names] if isinstance(names, str) else names or []:
            if not name.startswith("val/") or "test" in name:
                raise ValueError(f"{name!r}: a sweep optimizes a validation metric (val/...), never a test metric")
        return names

    @field_validator("grace_period")
    @classmethod
    def _after_heartbeat(cls, value: int, info: ValidationInfo) -> int:
        beat = info.data.get("heartbeat_interval")
        if beat is not None and value <= beat:
            raise ValueError(f"must exceed sweep.heartbeat_interval ({beat}), got {value}")
        return value


class TrackingConfig(Section):
    """What each run records in MLflow besides params and metrics; none of it changes a run's results (and
    none of it enters the run's config hash)."""

    log_model: LogModel = "auto"
    max_model_mb: Annotated[float, Field(ge=0)] = 200.0
    system_metrics: bool = True  # CPU, memory, disk, network (and GPU with nvidia-ml-py) as system/* metrics
    system_metrics_interval_s: Annotated[float, Field(gt=0)] = 10.0


class LauncherConfig(Section):
    """Where ``harness run --launcher slurm`` puts its jobs (and ``--launcher local`` nothing but ``folder``); placement
    only, so none of it enters a run's config hash."""

    partition: str | None = None
    gpus_per_job: NonNegInt = 0  # GPUs per (method, seed) job: the paper's recipe is one GPU per run
    cpus_per_job: Annotated[int, Field(ge=1)] = 1
    mem_gb: Annotated[float, Field(gt=0)] | None = None
    time_min: Annotated[int, Field(ge=1)] = 240  # SLURM time limit per job; a run past it is requeued and resumes
    account: str | None = None
    qos: str | None = None
    array_parallelism: Annotated[int, Field(ge=1)] = 64  # at most this many of the array's jobs at once
    sbatch: dict[str, str] = Field(default_factory=dict)  # extra sbatch options, e.g. {constraint: a100}
    folder: str | None = None  # submitit's logs and job files (default WORKDIR/launcher/EXPERIMENT/logs)
    signal_delay_s: Annotated[int, Field(ge=1)] = 120  # SLURM warns a job this long before its time limit
    # --launcher slurm: the spectrum as a job array of this many generation shards (each its own job, any order)
    generate_shards: Annotated[int, Field(ge=1)] = 4


class Config(Section):
    name: str = ""
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    base: BaseConfig = Field(default_factory=BaseConfig)
    hard: HardConfig = Field(default_factory=HardConfig)
    generator: ComponentConfig = Field(default_factory=lambda: ComponentConfig("tiny_ddpm"))
    spectrum: SpectrumConfig = Field(default_factory=SpectrumConfig)
    scorer: ComponentConfig = Field(default_factory=lambda: ComponentConfig("judge"))
    filter: FilterConfig = Field(default_factory=FilterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    methods: list[str] = Field(default_factory=lambda: ["plain", "discl_diverse_to_specific"])
    method_params: dict[str, Params] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0])
    device: str = "auto"  # auto (cuda when there is one) | cpu | cuda | cuda:N
    sweep: SweepConfig = Field(default_factory=SweepConfig)  # search space for `harness sweep`
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)  # what MLflow records besides metrics
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)  # SLURM placement (harness run --launcher)

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ValueError(f"{device!r} is not one of auto, cpu, cuda, cuda:N")
        return device

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("give at least one seed")
        return _unique(seeds, "seed")

    @model_validator(mode="after")
    def _levels_generated(self) -> Config:
        for lam in self.curriculum_levels + list(self.curriculum.adaptive_levels or []):
            if not _among(lam, self.spectrum.levels):
                raise ValueError(
                    f"curriculum level {lam} is not among the generated spectrum.levels {self.spectrum.levels}"
                )
        return self

    @property
    def curriculum_levels(self) -> list[float]:
        return list(self.curriculum.levels if self.curriculum.levels is not None else self.spectrum.levels)

    def method_levels(self, method) -> tuple[float, ...]:
        """The λ levels a method's curriculum is handed, ascending (as ``fine_tune`` hands them):
        ``curriculum.adaptive_levels`` for an adaptive method when given, else ``curriculum_levels``; none for a
        method that neither draws on the pool nor stands in for it."""
        if not (method.synthetic or method.real_stand_in):
            return ()
        adaptive = self.curriculum.adaptive_levels if method.adaptive else None
        return tuple(sorted(adaptive or self.curriculum_levels))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


# --------------------------------------------------------------------------- pydantic errors → one line


def _nested(tp: Any) -> type[BaseModel] | None:
    """The section a field's type holds, if any: ``Range | None`` → ``Range``."""
    return next((t for t in (tp, *typing.get_args(tp)) if isinstance(t, type) and issubclass(t, BaseModel)), None)


def _did_you_mean(name: Any, names: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


TYPE_NAMES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def explain(error: ValidationError, model: type[BaseModel], where: str = "") -> str:
    """The first problem of a ValidationError from ``model`` (built at ``where``) as one line naming the key."""
    e = error.errors(include_url=False)[0]
    loc, value, kind = e["loc"], e.get("input"), e["type"]
    key = where
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part != "[key]":  # a mapping's key is named by the mapping
            key = f"{key}.{part}" if key else part
    if kind == "extra_forbidden":
        section: type[BaseModel] | None = model
        for part in loc[:-1]:
            field = section.model_fields.get(part) if section and isinstance(part, str) else None
            section = _nested(field.annotation) if field else None
        return f"unknown key {key!r}{_did_you_mean(loc[-1], section.model_fields if section else ())}"
    if kind in TYPE_NAMES:
        got = f"{type(value).__name__} {value!r}" if kind in ("list_type", "dict_type", "model_type") else repr(value)
        msg = f"expected {TYPE_NAMES[kind]}, got {got}"
    elif kind == "literal_error":  # the choices as pydantic renders the Literal: "'a', 'b' or 'c'"
        choices = re.findall(r"'([^']*)'", e["ctx"]["expected"])
        msg = f"{value!r} is not one of {', '.join(choices)}{_did_you_mean(value, choices)}"
    elif e["msg"].startswith("Input should be "):
        msg = f"must be {e['msg'].removeprefix('Input should be ')}, got {value!r}"
    else:
        msg = e["msg"].removeprefix("Value error, ")
    return f"{key}: {msg}" if key else msg


@cache
def _dataclass_model(cls: type) -> type[BaseModel]:
    """A strict pydantic twin of a component's params dataclass, built once per class."""
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: (
            hints[f.name],
            Field(default=f.default)
            if f.default is not dataclasses.MISSING
            else Field(default_factory=f.default_factory),
        )
        for f in dataclasses.fields(cls)
    }
    return create_model(cls.__name__, __config__=ConfigDict(extra="forbid", strict=True), **fields)


def build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build ``cls`` (a config model, or a component's params dataclass) from ``values``; unknown keys, wrong types
    and unknown choices raise a one-line ConfigError naming the key (under ``where``)."""
    model = cls if issubclass(cls, BaseModel) else _dataclass_model(cls)
    try:
        built = model.model_validate(values)
    except ValidationError as e:
        raise ConfigError(explain(e, model, where)) from None
    return built if model is cls else cls(**{name: getattr(built, name) for name in model.model_fields})


# --------------------------------------------------------------------------- loading


def find_experiment(name: str) -> Path:
    """An experiment name (``experiments/NAME.yaml``) or a path to a YAML file."""
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else []
    dirs = [Path(d) for d in os.environ.get("HARNESS_EXPERIMENTS", "").split(os.pathsep) if d]
    dirs += [Path.cwd() / "experiments", *filter(None, [shipped_experiments()])]
    candidates += [d / f"{name}.yaml" for d in dirs]
    for path in candidates:
        if path.is_file():
            return path
    known = ", ".join(list_experiments()) or "none found"
    raise ConfigError(f"no experiment {name!r} (looked in {', '.join(str(d) for d in dirs)}; known: {known})")


def list_experiments() -> list[str]:
    dirs = [Path.cwd() / "experiments", *filter(None, [shipped_experiments()])]
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
    section: type[BaseModel] | None = Config
    node = values
    for i, key in enumerate(keys):
        if section is not None:
            if key not in section.model_fields:
                raise ConfigError(
                    f"--set {'.'.join(keys)}: no key {'.'.join(keys[: i + 1])!r} in the config"
                    f"{_did_you_mean(key, section.model_fields)}"
                )
            section = _nested(section.model_fields[key].annotation)
        if i == len(keys) - 1:
            node[key] = value
        else:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]


def load_config(
    name: str, overrides: list[str] | tuple[str, ...] = (), methods: list[str] | tuple[str, ...] | None = None
) -> Config:
    """The experiment ``name`` with its ``extends`` chain and ``--set`` overrides, validated; ``methods``: the
    methods to be run when not the config's own (``harness run -m``), checked as those would be."""
    path = find_experiment(name)
    values = _read_yaml(path)
    values.setdefault("name", path.stem)
    for text in overrides:
        apply_override(values, *parse_override(text))
    try:
        cfg = build(Config, values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    validate(cfg, path, methods)
    return cfg


def validate(cfg: Config, path: Path | str = "config", methods: list[str] | tuple[str, ...] | None = None) -> None:
    """Every check, again (a config may have been changed since it was built), and those against the registries:
    names of components and methods, metric names, transforms, and the λ levels each method to run needs
    (``methods``, default ``cfg.methods``)."""
    from harness.core import registry

    def bad(msg: str) -> None:
        raise ConfigError(f"{path}: {msg}")

    try:
        Config.model_validate(cfg.model_dump(warnings=False))
    except ValidationError as e:
        bad(explain(e, Config))
    check_transforms(cfg, bad)
    methods = list(methods or cfg.methods)
    try:
        registry.get_dataset(cfg.data.name)
        registry.get_generator(cfg.generator.name)
        registry.get_scorer(cfg.scorer.name)
        registry.get_model(cfg.model.name)
        for m in [*cfg.methods, *methods, *cfg.method_params]:
            registry.get_method(m)
    except registry.UnknownNameError as e:
        bad(str(e))
    if cfg.train.init == "pretrained" and not registry.get_model(cfg.model.name).has_pretrained(cfg):
        bad(
            f"train.init: pretrained, but model {cfg.model.name!r} has no pretrained weights (give "
            "model.params.weights, or train.init: base)"
        )
    validate_metric_names(cfg, bad)
    check_methods(cfg, methods, bad)
    from harness.config.applicability import inapplicable  # a setting no code path reads for the chosen components

    for key, why in inapplicable(cfg)[:1]:
        bad(f"{key}: {why}")


def fmt_lambda(levels: typing.Iterable[float]) -> str:
    return ", ".join(f"{lam:g}" for lam in levels)


def check_methods(cfg: Config, methods: list[str], bad) -> None:
    """Each method builds from its ``method_params``, and every λ level it draws on is generated: a synthetic
    method with no curriculum level or epoch, or one that needs a level missing from ``spectrum.levels``
    (``text_only``: λ 0), would train on real data only and still be logged as itself."""
    from harness.core.registry import get_method

    for name in dict.fromkeys([*methods, *cfg.method_params]):
        try:
            method = get_method(name)(**cfg.method_params.get(name, {}))
        except (TypeError, ValueError) as e:
            bad(f"method_params.{name}: {e}")
        if name not in methods:
            continue
        handed = cfg.method_levels(method)
        if method.synthetic and not handed:
            key = "curriculum.adaptive_levels or curriculum.levels" if method.adaptive else "curriculum.levels"
            bad(f"method {name} needs at least one curriculum λ level, but {key} is empty")
        if method.synthetic and cfg.train.curriculum_epochs == 0:
            bad(f"method {name} draws synthetic images during the curriculum only, but train.curriculum_epochs is 0")
        missing = [lam for lam in method.levels_needed(handed) if not _among(lam, cfg.spectrum.levels)]
        if missing:
            bad(
                f"method {name} needs λ {fmt_lambda(missing)} generated, but spectrum.levels is "
                f"[{fmt_lambda(cfg.spectrum.levels)}] (add it there, or leave the method out)"
            )


def check_transforms(cfg: Config, bad) -> None:
    """Both transforms build and end in uint8 images of data.image_size (checked on a dummy image)."""
    from harness.config.transforms import TransformError, build_transform, check_output

    for key in ("train_transform", "eval_transform"):
        spec = getattr(cfg.data, key)
        if spec is None:
            continue
        try:
            check_output(build_transform(spec, cfg.data.image_size, f"data.{key}"), cfg.data.image_size, f"data.{key}")
        except TransformError as e:
            bad(str(e))


def validate_metric_names(cfg: Config, bad) -> None:
    """``train.select_on`` and the sweep objectives name metrics the dataset logs on validation (declared at
    ``@register_dataset``): a misspelt name would otherwise select the last epoch silently."""
    from harness.core.registry import validation_metrics

    known = validation_metrics(cfg.data.name)
    named = [("train.select_on", cfg.train.select_on), ("sweep.objective", cfg.sweep.objective)]
    named += [(f"sweep.multi_objective[{i}]", m) for i, m in enumerate(cfg.sweep.multi_objective or [])]
    for key, name in named:
        if name is not None and name not in known:
            close = difflib.get_close_matches(name, known, n=2, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            bad(
                f"{key}: {name!r} is not a validation metric of dataset {cfg.data.name}; {hint}"
                f"(it logs {', '.join(known)})"
            )


# --------------------------------------------------------------------------- hashing and flattening


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of JSON-able ``obj`` that is the same in every process and on every machine."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
