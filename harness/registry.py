"""Name → component registries, in the style of timm's ``register_model`` / ``create_model``."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name; the message suggests the closest known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, **attrs: Any) -> Callable[[T], T]:
        """``attrs`` become attributes of the registered object (e.g. a dataset's ``val_metrics``)."""

        def decorate(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            obj.registry_name = name  # type: ignore[attr-defined]
            for key, value in attrs.items():
                setattr(obj, key, value)
            return obj

        return decorate

    def get(self, name: str) -> Any:
        self._load()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries))})"
            )
        return self._entries[name]

    def list(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def _load(self) -> None:
        """Import the modules that hold the registered entries (they register on import)."""
        import baselines  # noqa: F401
        import harness.data  # noqa: F401
        import harness.generators  # noqa: F401
        import harness.models  # noqa: F401
        import harness.models_paper  # noqa: F401
        import harness.scorers  # noqa: F401


METHODS = Registry("method")
DATASETS = Registry("dataset")
GENERATORS = Registry("generator")
SCORERS = Registry("scorer")
MODELS = Registry("model")

register_method, get_method, list_methods = METHODS.register, METHODS.get, METHODS.list
get_dataset, list_datasets = DATASETS.get, DATASETS.list
register_generator, get_generator, list_generators = GENERATORS.register, GENERATORS.get, GENERATORS.list
register_scorer, get_scorer, list_scorers = SCORERS.register, SCORERS.get, SCORERS.list
register_model, get_model, list_models = MODELS.register, MODELS.get, MODELS.list

# what ``long_tail_metrics`` (a dataset's default metrics) computes on the validation split
LONG_TAIL_METRICS = ("acc", "acc_many", "acc_medium", "acc_few")


def register_dataset(name: str, val_metrics: tuple[str, ...] | list[str] = LONG_TAIL_METRICS) -> Callable[[T], T]:
    """Register a dataset loader. ``val_metrics``: the names its metrics function returns (logged as ``val/NAME``),
    declared here so that ``train.select_on`` and sweep objectives are checked at config load, before any data is
    read (default: the long-tail metrics, what a bundle without its own ``metrics`` computes)."""
    return DATASETS.register(name, val_metrics=tuple(val_metrics))


def validation_metrics(dataset: str) -> list[str]:
    """``val/NAME`` for every metric ``dataset`` logs on its validation split."""
    return [f"val/{m}" for m in get_dataset(dataset).val_metrics]
