"""Name → component registries, in the style of timm's ``register_model`` / ``create_model``.

A leaf module: it imports nothing of the harness but its error base (``harness.core.errors``). Components come from
entry points, the built-in ones from this package's own (``pyproject.toml``) and a plugin's from its package, e.g.::

    [project.entry-points."discl_harness.methods"]
    my_schedule = "my_plugin.schedule:MySchedule"

Loading an entry point imports its module; a component registered there with the decorator keeps its decorator's
attributes, one that is not is registered under the entry point's name.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, distributions
from typing import Any, TypeVar

from harness.core.errors import HarnessError

T = TypeVar("T")


class UnknownNameError(HarnessError, KeyError):
    """An unknown registry name; the message suggests the closest known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class PluginError(HarnessError, RuntimeError):
    """An entry point that cannot be loaded (a broken plugin, or the harness not installed)."""


class RegistrationError(HarnessError, TypeError):
    """A component that does not derive from its kind's base class (which declares its capabilities)."""


class Registry:
    def __init__(self, kind: str, group: str, base: str | None = None):
        self.kind, self.group = kind, group  # group: the entry-point group its components come from
        # base: "module:Class" every component must subclass; imported at the first registration (this module stays
        # a leaf: the base lives in a module that imports the registry)
        self.base = base
        self._entries: dict[str, Any] = {}
        self._loaded = False

    def check_base(self, name: str, obj: Any) -> None:
        if self.base is None:
            return
        module, _, attr = self.base.partition(":")
        base = getattr(importlib.import_module(module), attr)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            what = f"{obj.__module__}.{obj.__qualname__}" if isinstance(obj, type) else repr(obj)
            raise RegistrationError(
                f"{self.kind} {name!r} ({what}) does not inherit {module}.{attr}, which declares what the harness "
                f"reads off a {self.kind}: derive it from {module}.{attr} (or a subclass)"
            )

    def register(self, name: str, **attrs: Any) -> Callable[[T], T]:
        """``attrs`` become attributes of the registered object (e.g. a dataset's ``val_metrics``, a component's
        ``params_class``: the dataclass its ``params`` section builds, checked when a config is loaded)."""

        def decorate(obj: T) -> T:
            self.check_base(name, obj)
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
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries))})")
        return self._entries[name]

    def list(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def _load(self) -> None:
        """Import every component of this kind named by an installed package's entry points (once)."""
        if self._loaded:
            return
        found = component_entry_points(self.group)
        if not any(dist == "discl-harness" for _, dist in found):
            raise PluginError(
                f"no built-in {self.kind}s: discl-harness is not installed (run `pip install -e .` "
                "in the repository), so its entry points are missing"
            )
        for ep, dist in found:
            try:
                obj = ep.load()
            except Exception as e:
                raise PluginError(
                    f"{self.kind} {ep.name!r} = {ep.value} (package {dist}) failed to load: {type(e).__name__}: {e}"
                ) from e
            registered = getattr(obj, "registry_name", None)
            if registered in (None, ep.name):  # again on a retry: a module imported before does not decorate again
                self.register(ep.name)(obj)
            else:
                raise PluginError(
                    f"{self.kind} entry point {ep.name!r} ({ep.value}) is registered as {registered!r}: use one name"
                )
        self._loaded = True  # only now: after a failed load the next lookup fails the same way, not "unknown name"


def component_entry_points(group: str) -> list[tuple[EntryPoint, str]]:
    """(entry point, package name) of every installed package, the first of each name. Read per distribution:
    ``importlib.metadata.entry_points`` keeps only the first copy of a package on the path, which may be a
    stale ``*.egg-info`` left in the working directory by a build."""
    found: dict[str, tuple[EntryPoint, str]] = {}
    for dist in distributions():
        for ep in dist.entry_points.select(group=group):
            found.setdefault(ep.name, (ep, dist.metadata["Name"]))
    return list(found.values())


METHODS = Registry("method", "discl_harness.methods")
DATASETS = Registry("dataset", "discl_harness.datasets")
GENERATORS = Registry("generator", "discl_harness.generators")
SCORERS = Registry("scorer", "discl_harness.scorers")
MODELS = Registry("model", "discl_harness.models", base="harness.models.base:HarnessModel")

register_method, get_method, list_methods = METHODS.register, METHODS.get, METHODS.list
get_dataset, list_datasets = DATASETS.get, DATASETS.list
register_generator, get_generator, list_generators = GENERATORS.register, GENERATORS.get, GENERATORS.list
register_scorer, get_scorer, list_scorers = SCORERS.register, SCORERS.get, SCORERS.list
register_model, get_model, list_models = MODELS.register, MODELS.get, MODELS.list

# what ``long_tail_metrics`` (a dataset's default metrics) computes on the validation split
LONG_TAIL_METRICS = ("acc", "acc_many", "acc_medium", "acc_few")


def register_dataset(
    name: str, val_metrics: tuple[str, ...] | list[str] = LONG_TAIL_METRICS, params_class: type | None = None
) -> Callable[[T], T]:
    """Register a dataset loader. ``val_metrics``: the names its metrics function returns (logged as ``val/NAME``),
    declared here so that ``train.select_on`` and sweep objectives are checked at config load, before any data is
    read (default: the long-tail metrics, what a bundle without its own ``metrics`` computes). ``params_class``: the
    dataclass ``data.params`` builds (as for every kind: ``register(name, params_class=...)``), checked at load."""
    return DATASETS.register(name, val_metrics=tuple(val_metrics), params_class=params_class)


def validation_metrics(dataset: str) -> list[str]:
    """``val/NAME`` for every metric ``dataset`` logs on its validation split."""
    return [f"val/{m}" for m in get_dataset(dataset).val_metrics]
