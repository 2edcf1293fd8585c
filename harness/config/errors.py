"""Values into models with one-line errors: ``ConfigError``, a pydantic ValidationError worded as one line naming
the key (with a did-you-mean), and ``build``, which also checks a component's params dataclass through a strict
pydantic twin of it."""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from harness.core.errors import HarnessError


class ConfigError(HarnessError, ValueError):
    """A config problem the user can fix; the message is one line."""


def nested_section(tp: Any) -> type[BaseModel] | None:
    """The section a field's type holds, if any: ``Range | None`` → ``Range``."""
    return next((t for t in (tp, *typing.get_args(tp)) if isinstance(t, type) and issubclass(t, BaseModel)), None)


def did_you_mean(name: Any, names: typing.Iterable[str]) -> str:
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
            section = nested_section(field.annotation) if field else None
        return f"unknown key {key!r}{did_you_mean(loc[-1], section.model_fields if section else ())}"
    if kind in TYPE_NAMES:
        got = f"{type(value).__name__} {value!r}" if kind in ("list_type", "dict_type", "model_type") else repr(value)
        msg = f"expected {TYPE_NAMES[kind]}, got {got}"
    elif kind == "literal_error":  # the choices as pydantic renders the Literal: "'a', 'b' or 'c'"
        choices = re.findall(r"'([^']*)'", e["ctx"]["expected"])
        msg = f"{value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}"
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
