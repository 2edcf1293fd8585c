"""The package list, which pyproject.toml cannot express: ``experiments/`` (kept at the top of the repository)
ships as the package ``harness_experiments``, so an installed harness finds its experiments through
importlib.resources (``harness.config.shipped_experiments``). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["harness", "harness.*", "baselines", "baselines.*", "reports", "reports.*"]),
        "harness_experiments",
    ],
    package_dir={"harness_experiments": "experiments"},
)
