"""Experiment configs: YAML → typed, validated pydantic models; ``--set`` overrides; stable hashes for caching.

Every key is declared in ``schema``, each section a small pydantic model (``extra="forbid"``, strict types). An
unknown key, a wrong type, an unknown choice or a method that needs λ levels the spectrum lacks is a ``ConfigError``
whose one-line message names the key and the file (``harness`` exits with status 2 on it).

This package's modules, one job each: ``experiments`` (finding an experiment's YAML), ``fields`` (the choices and
the ``Section`` base), ``schema`` (the sections and ``Config``), ``errors`` (``ConfigError``, one-line wording,
``build``), ``load`` (YAML, ``extends``, ``--set``), ``validate`` (the checks against the registries),
``applicability`` (settings nothing reads), ``transforms`` (image transforms as config), ``hashing`` and ``keys``
(the cached phases' keys). The names below are re-exported so callers import them from ``harness.config``.
"""

from harness.config.errors import ConfigError, build, explain
from harness.config.experiments import EXPERIMENTS_DIR, find_experiment, list_experiments, shipped_experiments
from harness.config.fields import (
    SWEEP_ORDERINGS,
    HardRule,
    Init,
    LogModel,
    Loss,
    Optimizer,
    Ordering,
    PostCurriculum,
    Precision,
    Pruner,
    Schedule,
    Scheduler,
    Section,
    Statistic,
)
from harness.config.hashing import flatten, stable_hash
from harness.config.load import apply_override, deep_merge, load_config, parse_override
from harness.config.schema import (
    AdaptiveConfig,
    BaseConfig,
    ComponentConfig,
    Config,
    CurriculumConfig,
    DataConfig,
    FilterConfig,
    HardConfig,
    LauncherConfig,
    ModelConfig,
    OptimConfig,
    Range,
    ShotGroups,
    SpectrumConfig,
    SweepConfig,
    SweepSpace,
    TrackingConfig,
    TrainConfig,
)
from harness.config.validate import validate

__all__ = [
    "EXPERIMENTS_DIR",
    "SWEEP_ORDERINGS",
    "AdaptiveConfig",
    "BaseConfig",
    "ComponentConfig",
    "Config",
    "ConfigError",
    "CurriculumConfig",
    "DataConfig",
    "FilterConfig",
    "HardConfig",
    "HardRule",
    "Init",
    "LauncherConfig",
    "LogModel",
    "Loss",
    "ModelConfig",
    "OptimConfig",
    "Optimizer",
    "Ordering",
    "PostCurriculum",
    "Precision",
    "Pruner",
    "Range",
    "Schedule",
    "Scheduler",
    "Section",
    "ShotGroups",
    "SpectrumConfig",
    "Statistic",
    "SweepConfig",
    "SweepSpace",
    "TrackingConfig",
    "TrainConfig",
    "apply_override",
    "build",
    "deep_merge",
    "explain",
    "find_experiment",
    "flatten",
    "list_experiments",
    "load_config",
    "parse_override",
    "shipped_experiments",
    "stable_hash",
    "validate",
]
