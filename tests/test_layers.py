"""Imports run one way: cli → runner/sweep/reports → pipeline → phases → data/models → registry, config, io.

A module may import from its own layer or a lower one, never a higher one (function-local imports included), and
the registry imports nothing of the harness: components reach it through entry points."""

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
            "harness.plan",
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
            "harness.train",
            "harness.evaluate",
            "harness.prepared",
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
            "harness.registry",
            "harness.config",
            "harness.io",
            "harness.cache_keys",
            "harness.workdir",
            "harness.transforms",
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


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in found if n.split(".")[0] in OURS and layer_of(n) is not None}


def test_every_module_has_a_layer():
    assert [name for name, _ in modules() if layer_of(name) is None] == []


@pytest.mark.parametrize("name,path", list(modules()), ids=lambda x: x if isinstance(x, str) else "")
def test_imports_point_down(name, path):
    mine = layer_of(name)
    upward = sorted(f"{n} ({LAYERS[layer_of(n)][0]})" for n in imports(path) if layer_of(n) < mine)
    assert upward == [], f"{name} ({LAYERS[mine][0]}) imports from a higher layer"


def test_registry_is_a_leaf():
    assert imports(ROOT / "harness" / "registry.py") == set()
