"""Imports run one way, as the layers in pyproject.toml's import-linter contracts say, and never in a circle."""

import subprocess
import sys
from pathlib import Path

import grimp
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def graph():
    return grimp.build_graph("harness", "reports", "baselines")


def cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in imports[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_in_a_circle():
    g = graph()
    assert cycles({m: g.find_modules_directly_imported_by(m) for m in g.modules}) == []


def test_every_harness_module_has_a_layer():
    layers = next(c for c in CONTRACTS if c["type"] == "layers")["layers"]
    names = [n.strip() for layer in layers for n in layer.split("|")]
    homeless = [
        m
        for m in graph().modules
        if m.startswith("harness.") and not any(m == n or m.startswith(n + ".") or n.startswith(m + ".") for n in names)
    ]
    assert homeless == []


def test_the_registry_imports_only_the_errors():
    assert graph().find_modules_directly_imported_by("harness.core.registry") == {"harness.core.errors"}
    assert graph().find_modules_directly_imported_by("harness.core.errors") == set()


def test_lint_imports_keeps_every_contract():
    """The contracts themselves (also run by .ci/run): a module importing from a layer above it breaks them."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in out.stdout
