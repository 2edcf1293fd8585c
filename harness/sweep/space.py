"""The search space: what a trial samples, the experiment's config with it applied, and back to ``--set`` lines."""

from __future__ import annotations

import copy
from typing import Any

import optuna

from harness.config import Config, ConfigError, Range, validate

ORDERING_METHODS = {
    "diverse_to_specific": "discl_diverse_to_specific",
    "specific_to_diverse": "discl_specific_to_diverse",
    "random": "discl_random",
    "adaptive": "discl_adaptive",
}
NO_SYNTHETIC_METHOD = "plain_rebalanced"  # an empty λ subset: the same schedule with real images only
SCHEDULE_FIELDS = (
    "methods",
    "curriculum.levels",
    "curriculum.adaptive_levels",
    "train.curriculum_epochs",
    "train.synthetic_scale",
    "train.undersample",
    "train.loss",
    "filter.threshold",
    "curriculum.adaptive.statistic",
)


def objective_names(cfg: Config) -> list[str]:
    if cfg.sweep.multi_objective:
        return list(cfg.sweep.multi_objective)
    if cfg.sweep.objective:
        return [cfg.sweep.objective]
    return ["val/f1_macro" if "iwildcam" in cfg.data.name else "val/acc_few"]


def searched_losses(cfg: Config) -> list[str]:
    """``sweep.space.losses``, or none when the model trains with its own loss (``Classifier.own_loss``, FLYP):
    a dimension with no effect is left out of the space."""
    from harness.core.registry import get_model

    return [] if get_model(cfg.model.name).own_loss else list(cfg.sweep.space.losses)


def sweep_methods(cfg: Config) -> list[str]:
    return [ORDERING_METHODS[o] for o in cfg.sweep.space.orderings] or ["discl_diverse_to_specific"]


def candidate_levels(cfg: Config) -> list[float]:
    levels = cfg.sweep.space.levels if cfg.sweep.space.levels is not None else cfg.spectrum.levels
    for lam in levels:
        if not any(abs(lam - g) < 1e-9 for g in cfg.spectrum.levels):
            raise ConfigError(
                f"sweep.space.levels: {lam} is not among the generated spectrum.levels {cfg.spectrum.levels}"
            )
    return list(levels)


def level_param(lam: float) -> str:
    return f"lambda_{lam:g}"


def suggest_range(trial: optuna.Trial, name: str, r: Range) -> float | int:
    whole = r.step is not None and all(float(v).is_integer() for v in (r.low, r.high, r.step))
    if whole:
        return trial.suggest_int(name, int(r.low), int(r.high), step=int(r.step), log=r.log)
    return trial.suggest_float(name, r.low, r.high, step=r.step, log=r.log)


def suggest_choice(trial: optuna.Trial, name: str, choices: list, default: Any) -> Any:
    if not choices:
        return default
    if len(choices) == 1:
        return choices[0]
    return trial.suggest_categorical(name, list(choices))


def own_values(cfg: Config) -> dict[str, Any]:
    """The experiment's own values of the ranged parameters."""
    train = cfg.train
    return {
        "curriculum_fraction": train.curriculum_epochs / max(1, train.epochs),
        "synthetic_scale": train.synthetic_scale,
        "undersample": train.undersample,
        "filter_threshold": cfg.filter.threshold,
    }


def fixed_by_recipe(cfg: Config) -> set[str]:
    """Ranged parameters the experiment's own settings make meaningless: with ``train.tail_share`` the tail share,
    not a synthetic scale, decides how many synthetic images an epoch draws (and the config refuses both)."""
    return {"synthetic_scale"} if cfg.train.tail_share is not None else set()


def suggest(trial: optuna.Trial, cfg: Config) -> dict[str, Any]:
    """The sampled schedule; parameters not searched take the experiment's own values."""
    space, train = cfg.sweep.space, cfg.train
    params: dict[str, Any] = {"ordering": suggest_choice(trial, "ordering", space.orderings, "diverse_to_specific")}
    if space.levels is None or space.levels:
        params["levels"] = [
            lam for lam in candidate_levels(cfg) if trial.suggest_categorical(level_param(lam), [True, False])
        ]
    for name, default in own_values(cfg).items():
        r = None if name in fixed_by_recipe(cfg) else getattr(space, name)
        params[name] = suggest_range(trial, name, r) if r is not None else default
    if params["ordering"] == "adaptive":
        params["statistic"] = suggest_choice(trial, "statistic", space.statistics, cfg.curriculum.adaptive.statistic)
    params["loss"] = suggest_choice(trial, "loss", searched_losses(cfg), train.loss)
    return params


def paper_params(cfg: Config) -> dict[str, Any]:
    """The paper's schedule as Optuna parameters: diverse→specific over the experiment's own levels and budgets."""
    space, train = cfg.sweep.space, cfg.train
    params: dict[str, Any] = {}
    if len(space.orderings) > 1:
        params["ordering"] = "diverse_to_specific"
    if space.levels is None or space.levels:
        own = cfg.curriculum_levels
        for lam in candidate_levels(cfg):
            params[level_param(lam)] = any(abs(lam - x) < 1e-9 for x in own)
    for name, value in own_values(cfg).items():
        if getattr(space, name) is not None and name not in fixed_by_recipe(cfg):
            params[name] = value
    if len(searched_losses(cfg)) > 1:
        params["loss"] = train.loss
    return params


def trial_config(cfg: Config, params: dict[str, Any]) -> tuple[Config, str]:
    """The experiment's config with the sampled schedule applied, and the method that runs it."""
    tcfg = copy.deepcopy(cfg)
    train = tcfg.train
    if "levels" in params:
        tcfg.curriculum.levels = list(params["levels"])
        if params["ordering"] == "adaptive":
            tcfg.curriculum.adaptive_levels = list(params["levels"])
    fraction = float(params["curriculum_fraction"])
    train.curriculum_epochs = min(train.epochs, max(1, round(fraction * train.epochs))) if fraction > 0 else 0
    if params["synthetic_scale"] is not None:
        train.synthetic_scale = float(params["synthetic_scale"])
    train.undersample = float(params["undersample"])
    train.loss = params["loss"]
    tcfg.filter.threshold = float(params["filter_threshold"])
    if "statistic" in params:
        tcfg.curriculum.adaptive.statistic = params["statistic"]
    method = ORDERING_METHODS[params["ordering"]]
    levels = (
        tcfg.curriculum.adaptive_levels
        if method == "discl_adaptive" and tcfg.curriculum.adaptive_levels
        else tcfg.curriculum_levels
    )
    if not levels or train.curriculum_epochs == 0:
        method = NO_SYNTHETIC_METHOD
    tcfg.methods = [method]
    validate(tcfg, "sweep trial")
    return tcfg, method


def field(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


def trial_overrides(cfg: Config, trial_params: dict[str, Any]) -> list[str]:
    """``--set`` lines that make ``harness run`` train a finished trial's schedule (``trial_params``: Optuna's
    ``FrozenTrial.params``): rerun the best one over seeds."""
    import yaml

    tcfg, _ = trial_config(cfg, suggest(optuna.trial.FixedTrial(trial_params), cfg))
    return [
        f"{name}={yaml.safe_dump(field(tcfg, name), default_flow_style=True).strip().removesuffix('...').strip()}"
        for name in SCHEDULE_FIELDS
        if field(tcfg, name) != field(cfg, name)
    ]
