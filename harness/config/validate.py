"""Validating a built config against the registries: component, method and metric names, the transforms, the λ
levels each method to run needs, and (through ``harness.config.applicability``) settings nothing reads."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path

from pydantic import ValidationError

from harness.config.applicability import inapplicable
from harness.config.errors import ConfigError, build, explain
from harness.config.fields import is_among
from harness.config.schema import Config
from harness.core import registry


def validate(cfg: Config, path: Path | str = "config", methods: list[str] | tuple[str, ...] | None = None) -> None:
    """Every check, again (a config may have been changed since it was built), and those against the registries:
    names of components and methods, metric names, transforms, and the λ levels each method to run needs
    (``methods``, default ``cfg.methods``)."""

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
    check_component_params(cfg, bad)
    if cfg.train.init == "pretrained" and not registry.get_model(cfg.model.name).has_pretrained(cfg):
        bad(
            f"train.init: pretrained, but model {cfg.model.name!r} has no pretrained weights (give "
            "model.params.weights, or train.init: base)"
        )
    validate_metric_names(cfg, bad)
    check_methods(cfg, methods, bad)
    for key, why in inapplicable(cfg)[:1]:  # a setting no code path reads for the chosen components
        bad(f"{key}: {why}")


COMPONENTS = (
    ("data", registry.get_dataset),
    ("generator", registry.get_generator),
    ("scorer", registry.get_scorer),
    ("model", registry.get_model),
)


def check_component_params(cfg: Config, bad) -> None:
    """Each component's ``params`` builds its declared dataclass (``params_class`` at registration): an unknown or
    misspelt key is refused at load, not when the phase that reads it starts, hours later or never."""
    for key, get in COMPONENTS:
        section = getattr(cfg, key)
        params_class = getattr(get(section.name), "params_class", None)
        if params_class is None:  # a plugin that declares none: its own code checks its params
            continue
        try:
            build(params_class, section.params, f"{key}.params")
        except ConfigError as e:
            bad(str(e))


def fmt_lambda(levels: typing.Iterable[float]) -> str:
    return ", ".join(f"{lam:g}" for lam in levels)


def check_methods(cfg: Config, methods: list[str], bad) -> None:
    """Each method builds from its ``method_params``, and every λ level it draws on is generated: a synthetic
    method with no curriculum level or epoch, or one that needs a level missing from ``spectrum.levels``
    (``text_only``: λ 0), would train on real data only and still be logged as itself."""
    for name in dict.fromkeys([*methods, *cfg.method_params]):
        try:
            method = registry.get_method(name)(**cfg.method_params.get(name, {}))
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
        missing = [lam for lam in method.levels_needed(handed) if not is_among(lam, cfg.spectrum.levels)]
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
    known = registry.validation_metrics(cfg.data.name)
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
