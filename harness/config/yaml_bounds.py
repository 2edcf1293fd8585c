"""YAML read with bounds, for files that may come from someone else: PyYAML's safe loader, plus a cap on the
size of the document with every alias expanded (an alias bomb of a few hundred bytes stands for billions of nodes,
which everything downstream would walk), a cap on nesting depth, and duplicate keys refused (PyYAML keeps the last
one silently). Anchors and aliases within the caps keep working."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_NODES = 100_000  # the document's nodes with every alias expanded; an experiment has a few hundred
MAX_DEPTH = 32  # nested sequences and mappings; an experiment nests five or six
MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLLimitError(yaml.MarkedYAMLError):
    """A document over a bound, or with a duplicate key; ``problem`` says which, ``problem_mark`` where."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that measures each node as it is composed (an alias counts as the whole node it names)
    and refuses a document over ``MAX_NODES`` or ``MAX_DEPTH`` before anything is constructed from it."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(node) → its size with aliases expanded

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise YAMLLimitError(
                    problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=self.peek_event().start_mark
                )
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if id(node) not in self.sizes:
            self.sizes[id(node)] = 1 + sum(self.sizes.get(id(child), 1) for child in children(node))
        if self.sizes[id(node)] > MAX_NODES:
            raise YAMLLimitError(
                problem=f"more than {MAX_NODES} values once its aliases are expanded (an alias bomb?)",
                problem_mark=node.start_mark,
            )
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            refuse_duplicate_keys(node)
        return super().construct_mapping(node, deep=deep)


def children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def refuse_duplicate_keys(node: MappingNode) -> None:
    """A key written twice in one mapping (merge keys ``<<`` aside: a key of one's own overrides a merged one)."""
    first: dict[tuple[str, str], Any] = {}
    for key, _ in node.value:
        if not isinstance(key, ScalarNode) or key.tag == MERGE_TAG:
            continue
        seen = first.setdefault((key.tag, key.value), key.start_mark)
        if seen is not key.start_mark:
            raise YAMLLimitError(
                problem=f"duplicate key {key.value!r} (first on line {seen.line + 1}); keep one",
                problem_mark=key.start_mark,
            )


def load_bounded(text: str) -> Any:
    """``yaml.safe_load`` within the bounds above; a document over them raises ``YAMLLimitError``."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
