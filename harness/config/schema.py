"""Every config key, declared once: each section a small strict pydantic model, and ``Config``, the whole experiment.

Strict types: a string is not a number, a bool is not an integer; an integer is a number. Checks across keys of
one section (or of the whole config, such as curriculum levels that must be generated) are the models' validators.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from harness.config.fields import (
    AdaptiveDecide,
    AdaptiveMeasure,
    AdaptiveTrainOn,
    EpochLength,
    Fraction,
    HardRule,
    HoldoutScope,
    Init,
    Loss,
    NonNegInt,
    Optimizer,
    Params,
    PosInt,
    PostCurriculum,
    PostHoc,
    Precision,
    Schedule,
    Scheduler,
    Section,
    Statistic,
    is_among,
    refuse_repeats,
)
from harness.config.operations import LauncherConfig, Range, SweepConfig, SweepSpace, TrackingConfig  # noqa: F401


class ShotGroups(Section):
    many: NonNegInt = 100  # a class is "many-shot" if it has more than this many training images
    few: NonNegInt = 20  # ... and "few-shot" if it has fewer than this many
    # true: a class with exactly ``many`` images is many-shot too (the authors' get_mmf_idx, model/metrics.py:50-57,
    # counts ≥ 100 as many-shot)
    many_inclusive: bool = False

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
    # the authors' ImageNet-LT base recipe sets these (config/ImageNet/ImageNet_LSC_Mixup.txt); defaults keep ours
    schedule: Literal["cosine", "constant", "step"] = "cosine"  # step: per epoch, warm-up then ×gamma at milestones
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9  # optimizer: sgd
    nesterov: bool = True  # optimizer: sgd
    milestones: list[PosInt] = Field(default_factory=list)  # schedule: step; epochs counted from the start
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1  # schedule: step; the factor at each milestone
    warmup_epochs: NonNegInt = 0  # schedule: step; lr × (e + 1) / warmup_epochs in epoch e of the warm-up
    mixup_alpha: Annotated[float, Field(ge=0)] = 0.0  # mixup's Beta(α, α); 0: off

    @model_validator(mode="after")
    def _step_schedule(self) -> BaseConfig:
        if self.schedule == "step" and self.warmup_steps:
            raise ValueError("schedule: step warms up per epoch: give warmup_epochs, not warmup_steps")
        if self.milestones != sorted(set(self.milestones)) or any(m < self.warmup_epochs for m in self.milestones):
            raise ValueError(f"milestones must ascend, each ≥ warmup_epochs ({self.warmup_epochs}): {self.milestones}")
        return self


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
    # its own seed, up to this many tries in all, and the best-scoring try is kept (the authors' ImageNet-LT: 6, their
    # first generation and up to 5 more, ``while text_sim <= 0.3 and len(list_generated_img) <= 5``, gene_img.py:111)
    max_tries: PosInt = 1
    # an exported pool (a folder, or ORG/NAME in the local Hugging Face cache) used instead of generating
    pool: Annotated[str, Field(min_length=1)] | None = None
    # λ = 0: pure_noise (text-only, from pure noise; the source fixes only the size) | img2img (the authors: img2img
    # at strength 1.0, data_generation/ImageNet_LT/gene_img.py:193, which keeps a faint share of the source)
    zero_guidance: Literal["pure_noise", "img2img"] = "pure_noise"
    # with ``pool``: ``rescore`` (this experiment's scorer scores every imported image and filter.threshold decides;
    # the pool's own scores are kept beside them) or ``trust`` (the pool's scores are used when its scorer is ours)
    pool_scores: Literal["rescore", "trust"] = "rescore"

    @field_validator("levels")
    @classmethod
    def _levels(cls, levels: list[float]) -> list[float]:
        for lam in levels:
            if not 0.0 <= lam < 1.0:
                raise ValueError(f"λ must be in [0, 1), got {lam}")
        return refuse_repeats(levels, "λ")

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


class RetrievalConfig(Section):
    """``retrieved_real``'s reference set: where the real images it retrieves for the hard sources come from."""

    # pool (the dataset's generator-training pool) | folder:PATH (class sub-folders named by class name or index)
    # | hf:FOLDER (a Hugging Face dataset saved with save_to_disk, read by load_from_disk; never fetched)
    source: str = "pool"
    image_column: str = "image"  # hf: the image column
    label_column: str | None = "label"  # hf: the class column (index or name); null: classes by the class prompt
    split: str = "train"  # hf: the split of a dataset with several
    # cosine of the scorer's image embeddings above which a reference (or synthetic) image is a near duplicate of a
    # validation or test image; null: the scorer's own (``Scorer.near_duplicate``: CLIP 0.95, the judge 0.995)
    near_duplicate: Annotated[float, Field(gt=0, le=1)] | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, source: str) -> str:
        kind, _, rest = source.partition(":")
        if source != "pool" and not (kind in ("folder", "hf") and rest):
            raise ValueError(f"{source!r} is none of pool, folder:PATH, hf:NAME")
        return source


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
    # steps per epoch, once or per method ({NAME: value, default: value}): pass (a pass over the epoch's rows) |
    # real_images (ceil(natural images / batch), the stream running on: FLYP) | real_rows (in the curriculum
    # floor(natural rows less the hold-out / batch), the stage's stream cycling, then a pass: DisCL's iWildCam code)
    epoch_length: EpochLength | dict[str, EpochLength] = "pass"
    schedule_epochs: PosInt | None | dict[str, PosInt | None] = None  # epochs the cosine spans (null: epochs), alike
    include_nonhard_real: bool = True  # false: a curriculum stage leaves the real non-hard images out (S_λ alone)
    # after the test of the selected model, no training: WiSE-FT (a model with zero-shot weights, train.init:
    # pretrained) and τ-normalisation (a linear head), where each applies; [] for neither
    post_hoc: list[PostHoc] = Field(default_factory=lambda: ["wise", "taunorm"])

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
    # choose at a stage's first epoch | when its stream of batches runs out (stage_exhausted: the iWildCam code)
    decide: AdaptiveDecide = "epoch"
    # gains since the previous evaluation | over a pass over natural data trained between two (the ImageNet-LT code)
    measure: AdaptiveMeasure = "between_evaluations"
    # train on the chosen level | on every level mixed, the choice only logged (the ImageNet-LT code)
    train_on: AdaptiveTrainOn = "chosen"

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
    # who leaves the hold-out sources (real images too) out: adaptive (discl_adaptive) | synthetic (every method
    # drawing on the pool or standing in for it, as the authors' training files)
    holdout_scope: HoldoutScope = "adaptive"
    # epochs per stage (the ImageNet-LT code's list_loop), for methods with that many stages; null: an equal split
    stage_epochs: list[PosInt] | None = None
    real_stage: bool = False  # the last stage_epochs entry is a stage of real re-balanced data (guidance 100)

    @field_validator("levels", "adaptive_levels")
    @classmethod
    def _no_repeats(cls, levels: list[float] | None) -> list[float] | None:
        return levels if levels is None else refuse_repeats(levels, "λ")


class Config(Section):
    name: str = ""
    description: str = ""
    # which column of `harness recipe` this experiment follows: the paper's text (the released code where the text is
    # silent) or the released code as minimally patched; a label (logged on every run), in no cache key
    recipe: Literal["paper", "code"] = "paper"
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
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)  # retrieved_real's reference set
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
        return refuse_repeats(seeds, "seed")

    @model_validator(mode="after")
    def _levels_generated(self) -> Config:
        for lam in self.curriculum_levels + list(self.curriculum.adaptive_levels or []):
            if not is_among(lam, self.spectrum.levels):
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
