"""Finding experiments: a name (``experiments/NAME.yaml``, looked up in ``$HARNESS_EXPERIMENTS``, the working
directory's ``experiments/`` and the ones shipped with the harness) or a path to a YAML file."""

from __future__ import annotations

import os
from pathlib import Path

from harness.config.errors import ConfigError

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"  # in a source checkout (editable install)
EXPERIMENTS_PACKAGE = "harness_experiments"  # the same files in an installed wheel (pyproject.toml, setup.py)


def shipped_experiments() -> Path | None:
    """The folder of the experiments that come with the harness: ``experiments/`` beside the source tree when
    running from a checkout, else the installed package ``harness_experiments`` (found through importlib.resources,
    so a wheel or a non-editable ``pip install .`` finds them from any directory)."""
    if EXPERIMENTS_DIR.is_dir():
        return EXPERIMENTS_DIR
    from importlib import resources

    try:
        folder = resources.files(EXPERIMENTS_PACKAGE)  # a namespace package (no __init__.py): a MultiplexedPath
    except ModuleNotFoundError:
        return None
    yamls = [f for f in folder.iterdir() if f.name.endswith(".yaml")] if folder.is_dir() else []
    return Path(str(yamls[0])).parent if yamls else None


def find_experiment(name: str) -> Path:
    """An experiment name (``experiments/NAME.yaml``) or a path to a YAML file."""
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else []
    dirs = [Path(d) for d in os.environ.get("HARNESS_EXPERIMENTS", "").split(os.pathsep) if d]
    dirs += [Path.cwd() / "experiments", *filter(None, [shipped_experiments()])]
    candidates += [d / f"{name}.yaml" for d in dirs]
    for path in candidates:
        if path.is_file():
            return path
    known = ", ".join(list_experiments()) or "none found"
    raise ConfigError(f"no experiment {name!r} (looked in {', '.join(str(d) for d in dirs)}; known: {known})")


def list_experiments() -> list[str]:
    dirs = [Path.cwd() / "experiments", *filter(None, [shipped_experiments()])]
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
