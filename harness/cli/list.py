"""``harness list``: the experiments and the registered components."""

from __future__ import annotations

from harness.cli.options import add_common
from harness.config import list_experiments


def add_parser(sub) -> None:
    s = sub.add_parser("list", help="experiments, methods, datasets, generators")
    add_common(s)
    s.set_defaults(fn=cmd_list)


def cmd_list(args) -> int:
    from harness.core import registry

    print("experiments:", ", ".join(list_experiments()))
    print("methods:    ", ", ".join(registry.list_methods()))
    print("datasets:   ", ", ".join(registry.list_datasets()))
    print("generators: ", ", ".join(registry.list_generators()))
    print("scorers:    ", ", ".join(registry.list_scorers()))
    print("models:     ", ", ".join(registry.list_models()))
    return 0
