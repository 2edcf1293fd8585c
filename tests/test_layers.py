"""Imports run one way: cli → runner/sweep/reports → pipeline → phases → data/models → registry, config, io.

A module may import from its own layer or a lower one, never a higher one (function-local imports included), and
the registry imports nothing of the harness but harness.errors: components reach it through entry points."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [  # highest first
    ("cli", ["harness.cli"]),
    (
        "entry points",
        [
            "harness.runner",
            "harness.sweep",
            "reports",
            "harness.tracking",
            "harness.plots",
            "harness.domain",
            "harness.launcher",
            "harness.status",
            "harness.plan",
            "harness.recipe",
            "harness.run_cleanup",
        ],
    ),
    ("pipeline", ["harness.pipeline"]),
    (
        "phases",
        [
            "harness.base_model",
            "harness.hard_samples",
            "harness.spectrum",
            "harness.filter",
            "harness.curriculum",
            "harness.fine_tune",
            "harness.train",
            "harness.evaluate",
            "harness.prepared",
            "harness.pool_share",
            "baselines",
        ],
    ),
    (
        "data and models",
        [
            "harness.data",
            "harness.models",
            "harness.models_paper",
            "harness.tiny_models",
            "harness.generators",
            "harness.scorers",
            "harness.local_weights",
            "harness.distributed",
            "harness.seeding",
        ],
    ),
    (
        "core",
        [
            "harness.errors",
            "harness.applicability",
            "harness.registry",
            "harness.config",
            "harness.io",
            "harness.cache_keys",
            "harness.workdir",
            "harness.transforms",
            "harness.preempt",
            "harness.costs",
        ],
    ),
]
OURS = ("harness", "baselines", "reports")


def layer_of(module: str) -> int | None:
    matches = [
        (len(p), i)
        for i, (_, prefixes) in enumerate(LAYERS)
        for p in prefixes
        if module == p or module.startswith(p + ".")
    ]
    return max(matches)[1] if matches else None


def modules():
    for path in sorted([*ROOT.glob("harness/**/*.py"), *ROOT.glob("baselines/*.py"), *ROOT.glob("reports/*.py")]):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if name != "harness":
            yield name, path


def absolute(module: str | None, level: int, path: Path) -> str | None:
    """The absolute name of ``from <level dots><module> import ...`` in the file ``path`` (None when the dots climb
    above the top-level package)."""
    if level == 0:
        return module
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = parts[:-1]  # a module's package (for __init__.py: the package itself)
    if level - 1 > len(package) - 1:
        return None
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = absolute(node.module, node.level, path)
            if module:
                found |= {module} | {f"{module}.{a.name}" for a in node.names}
    return {n for n in found if n.split(".")[0] in OURS and layer_of(n) is not None}


def test_every_module_has_a_layer():
    assert [name for name, _ in modules() if layer_of(name) is None] == []


@pytest.mark.parametrize("name,path", list(modules()), ids=lambda x: x if isinstance(x, str) else "")
def test_imports_point_down(name, path):
    mine = layer_of(name)
    upward = sorted(f"{n} ({LAYERS[layer_of(n)][0]})" for n in imports(path) if layer_of(n) < mine)
    assert upward == [], f"{name} ({LAYERS[mine][0]}) imports from a higher layer"


def test_registry_is_a_leaf():
    assert imports(ROOT / "harness" / "registry.py") <= {"harness.errors", "harness.errors.HarnessError"}
    assert imports(ROOT / "harness" / "errors.py") == set()


def test_relative_imports_are_resolved():
    """``harness/sweep`` imports its siblings with dots; they are checked like absolute imports."""
    found = imports(ROOT / "harness" / "sweep" / "trial.py")
    assert "harness.sweep.space" in found and "harness.sweep.study.Sweep" in found
    assert absolute("study", 1, ROOT / "harness" / "sweep" / "__init__.py") == "harness.sweep.study"
    assert absolute(None, 2, ROOT / "harness" / "sweep" / "trial.py") == "harness"
