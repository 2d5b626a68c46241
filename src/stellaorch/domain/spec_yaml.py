"""A bounded YAML loader for specs: no duplicate keys, bounded depth and alias expansion.

PyYAML's safe loader builds any document it can parse: nine aliases of nine aliases of …
("billion laughs") expand a 1 KB file to gigabytes, a repeated key silently replaces the
first, and deep nesting recurses until Python's limit. This loader refuses all three with a
`yaml.YAMLError` that names the line, before anything is built.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

from stellaorch.domain.limits import MAX_JSON_DEPTH, MAX_YAML_NODES

_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_yaml(text: str) -> Any:
    """The one document in `text`, built only if it passes the bounds of this module."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with a depth bound while composing, an expansion bound, unique keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Compose one node, counting how deep the document nests (an alias adds nothing)."""
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_JSON_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ComposerError(None, None, f"nested deeper than {MAX_JSON_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Node) -> Any:
        """Build the document once its aliases are known to expand to a bounded size."""
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose explicit keys are unique (`<<` merges may still be overridden)."""
        if isinstance(node, MappingNode):
            self._refuse_duplicate_keys(node)
        return super().construct_mapping(node, deep=deep)

    def _refuse_duplicate_keys(self, node: MappingNode) -> None:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            if not isinstance(key, Hashable):
                continue  # PyYAML reports unhashable keys itself
            if key in seen:
                raise ConstructorError(
                    None, None, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)


def _children(node: Node) -> Iterator[Node]:
    """The nodes directly inside `node` (keys and values of a mapping)."""
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _check_expansion(root: Node) -> None:
    """Refuse a node graph that expands past MAX_YAML_NODES or contains itself.

    Aliases make the composed document a graph whose shared nodes the constructor would
    copy out in full; count that size without building it, depth-first and iteratively,
    each shared node once.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                message = f"aliases expand the document past {MAX_YAML_NODES} nodes"
                raise ComposerError(None, None, message, node.start_mark)
        elif key in open_nodes:
            raise ComposerError(None, None, "an alias refers to its own anchor", node.start_mark)
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
