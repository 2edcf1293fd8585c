"""The options several subcommands share: the workdir and output flags, the experiment and its overrides, and
the methods and seeds to act on."""

from __future__ import annotations

import argparse


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workdir",
        help="folder for mlflow.db, mlartifacts/, optuna.db and cache/ "
        "(default: $HARNESS_WORKDIR or ./harness-workdir)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", "-e", required=True, help="name in experiments/ or a path to a YAML file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )


def add_methods(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", "-m", action="append", help="only this method (repeatable)")


def add_seeds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", "-s", action="append", type=int, help="only this seed (repeatable)")
