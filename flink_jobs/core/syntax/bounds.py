"""What reading one rule or catalogue file may cost: its size, its nesting, its aliases.

Rule files come from people and from a Kafka topic the job reads while it runs, so a careless or
hostile file must be refused quickly, with a located message, and never stall or crash whoever
reads it. PyYAML composes nested nodes recursively (a deep file ended in a ``RecursionError``),
and an alias is one node shared wherever it is used, so a few nested anchors stand for millions
of nodes once the checker walks them. ``compose`` checks the bounds on PyYAML's event stream
(read without recursion) before it composes, then the composed graph's size as the checker would
walk it, counting each shared node once per use but computing each node's size once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_FILE_BYTES = 256 * 1024  # the shipped rules are a few KB each
MAX_DEPTH = 40  # nested mappings and lists; the deepest shipped condition nests 7
MAX_ALIASES = 200  # uses of anchors (*name) in one file
MAX_NODES = 50_000  # the file's nodes with every alias expanded where it is used
MAX_SEGMENTS = 2_000  # segments in one rule set

# LibYAML's parser when PyYAML was built with it: 10-20 times faster on a large file (0.07 s
# against 1.1 s for 200 KB of segments here), which is what keeps a refusal within a second.
# Its error messages differ, so a file that is not YAML is parsed again by PyYAML's own for them.
_FAST = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class BoundExceeded(Exception):
    """A file over one of the bounds: where, and what to do."""

    message: str
    line: int  # 1-based; 0: the whole file
    column: int
    help: str


def compose(text: str) -> Node | None:
    """``yaml.compose(text)`` within the bounds: ``BoundExceeded`` for a file over one of them,
    ``yaml.YAMLError`` for one that is not YAML."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_FILE_BYTES:
        raise BoundExceeded(
            f"the file is {size:,} bytes, more than the {MAX_FILE_BYTES:,} a rule file may have",
            0,
            0,
            "split it into several files (every *.yaml of the folder is read), or remove what repeats",
        )
    try:
        return _compose(text, _FAST)
    except yaml.YAMLError:
        if _FAST is yaml.SafeLoader:
            raise
        return _compose(text, yaml.SafeLoader)  # raises, with PyYAML's own messages


def _compose(text: str, loader: type) -> Node | None:
    depth = aliases = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise BoundExceeded(
                    f"nested more than {MAX_DEPTH} levels deep",
                    *_at(event.start_mark),
                    "a condition this deep is not readable: combine with 'all'/'any' lists, or move a part into a "
                    "segment of its own and refer to it with 'segment:'",
                )
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
        elif isinstance(event, AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise BoundExceeded(
                    f"more than {MAX_ALIASES} uses of YAML anchors (*{event.anchor})",
                    *_at(event.start_mark),
                    "write the repeated part out, or move it into a segment of its own and refer to it with 'segment:'",
                )
    root: Node | None = yaml.compose(text, Loader=loader)
    if root is not None and aliases:
        _check_expanded(root)
    return root


def _check_expanded(root: Node) -> None:
    """Refuse a graph that expands to more than ``MAX_NODES`` nodes. Sizes are computed once per
    node (children before parents, without recursion), so a bomb costs its unique nodes only."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if not children_done:
            if key in visiting:  # an anchor used inside itself
                raise BoundExceeded(
                    "a YAML anchor is used inside itself",
                    *_at(node.start_mark),
                    "an anchor (&name) can only be used (*name) after its value ends",
                )
            visiting.add(key)
        children = _children(node)
        if children_done:
            total = 1 + sum(sizes[id(child)] for child in children)
            if total > MAX_NODES:
                raise BoundExceeded(
                    f"through its YAML anchors the file stands for more than {MAX_NODES:,} values",
                    *_at(node.start_mark),
                    "anchors (&name) used inside anchors multiply: write the repeated part out once",
                )
            sizes[key] = total
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)


def _at(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []
