"""Loading untrusted YAML with bounds, so no file can stall or crash its reader.

ruamel.yaml keeps an alias as a reference to its anchor's node, so a "billion laughs" file is
small once composed; it explodes only when the document is walked as plain data. Before
anything is constructed, the composed node graph is therefore measured as if every alias were
expanded (one pass, each node measured once), and refused when it is over `MAX_VALUES` values,
nests deeper than `MAX_DEPTH` levels, holds more than `MAX_ALIASES` aliases or refers to
itself. Nesting is also counted while composing, since the composer recurses: 10 000 ``[``
give a one-line error instead of a `RecursionError` (and the scanner stops at the bound too).

Used for Compose files (`carte.stack.parse`) and carte.yaml (`carte.engine.config`); a module
of its own so that both layers may import it. Imports ruamel.yaml only.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.scanner import RoundTripScanner

MAX_DEPTH = 100
"""Levels of nesting (mappings and lists), aliases expanded; Compose files need about ten."""
MAX_VALUES = 250_000
"""Values (scalars, lists, mappings) once aliases are expanded."""
MAX_ALIASES = 10_000
"""``*name`` references in one document."""


class YamlLimitError(ValueError):
    """The document is over a bound; `line` is 1-based, the message says which bound."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_bounded(text: str) -> Any:
    """`text` loaded with ruamel's round-trip loader (line numbers kept) within the bounds.

    Raises `YamlLimitError` over a bound and ruamel's `YAMLError` (a `MarkedYAMLError` when it
    knows the place) for malformed YAML. Runs in the caller's thread; CPU-bound, not
    interruptible, but bounded by the limits above and the length of `text`.
    """
    yaml = YAML(typ="rt")
    yaml.Scanner = _BoundedScanner
    yaml.Composer = _BoundedComposer
    try:
        return yaml.load(text)
    except _OverLimit as over:
        raise YamlLimitError(over.line, over.message) from None


class _OverLimit(YAMLError):
    # A YAMLError, so ruamel's own handlers on the way out leave it alone.
    def __init__(self, node_or_mark: Any, message: str) -> None:
        super().__init__(message)
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        self.line = mark.line + 1 if mark is not None else 1
        self.message = message


def _too_deep() -> str:
    return f"the YAML nests deeper than {MAX_DEPTH} levels; flatten it"


class _BoundedScanner(RoundTripScanner):
    # The scanner looks ahead over every open ``[``/``{`` (quadratic): stop it at the bound.
    def fetch_flow_collection_start(self, *args: Any, **kwargs: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise _OverLimit(self.reader.get_mark(), _too_deep())
        super().fetch_flow_collection_start(*args, **kwargs)


class _BoundedComposer(Composer):
    _nesting = 0
    _aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._nesting += 1
        try:
            if self._nesting > MAX_DEPTH:
                raise _OverLimit(self.parser.peek_event().start_mark, _too_deep())
            return super().compose_node(parent, index)
        finally:
            self._nesting -= 1

    def return_alias(self, a: Any) -> Any:
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise _OverLimit(
                a,
                f"the YAML uses more than {MAX_ALIASES} aliases (*name); "
                "write the values out or use fewer aliases",
            )
        return super().return_alias(a)

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _measure(node)
        return node


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _measure(root: Node) -> None:
    """Raise `_OverLimit` if `root`, aliases expanded, is too big, too deep or recursive.

    Iterative depth-first walk, each node measured once: (values, depth) of a node is known
    when its children's are, so aliases cost nothing however often they are repeated."""
    measured: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    pending: list[tuple[Node, bool]] = [(root, False)]
    while pending:
        node, children_done = pending.pop()
        key = id(node)
        if children_done:
            children = [measured[id(child)] for child in _children(node)]
            values = 1 + sum(count for count, _depth in children)
            depth = 1 + max((d for _count, d in children), default=0)
            open_nodes.discard(key)
            if values > MAX_VALUES:
                raise _OverLimit(
                    node,
                    f"the YAML expands to more than {MAX_VALUES} values through its aliases "
                    "(&anchor, *name); write it without nesting aliases in aliases",
                )
            if depth > MAX_DEPTH:
                raise _OverLimit(node, _too_deep())
            measured[key] = (values, depth)
            continue
        if key in measured:
            continue
        if key in open_nodes:
            raise _OverLimit(
                node,
                "an alias refers to itself (a *name inside the &name it names); "
                "YAML values cannot contain themselves",
            )
        open_nodes.add(key)
        pending.append((node, True))
        pending.extend((child, False) for child in _children(node))
