"""The sections about how runs are operated rather than what they compute: the search space of ``harness sweep``,
what MLflow records besides metrics, and where ``--launcher slurm`` places jobs. None of them enters a run's key."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from harness.config.fields import (
    SWEEP_ORDERINGS,
    LogModel,
    Loss,
    NonNegInt,
    Ordering,
    PosInt,
    Pruner,
    Section,
    Statistic,
)


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
