"""YAML with positions: what a rule file's nodes hold, read the way a rule author means them.

PyYAML's composed nodes keep their start and end marks; these helpers read values from them
without losing the text as written (YAML would read ``no`` as false and dates as dates).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..diagnostics import Diagnostic
from ..durations import parse_duration
from ..model import Scalar

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Stateless use only (scalar conversion), so one instance can be shared.
_SCALARS = SafeConstructor()
_TAG = "tag:yaml.org,2002:"


class Entry(NamedTuple):
    """One ``key: value`` of a mapping, with both nodes."""

    key: str
    key_node: ScalarNode
    value: Node


@dataclass(frozen=True, slots=True)
class Place:
    """Where a problem is: file, 1-based line and column, and how many characters to underline."""

    file: str
    line: int
    column: int
    length: int

    def diagnostic(self, message: str, help: str | None) -> Diagnostic:
        return Diagnostic(message, self.file, self.line, self.column, self.length, help)


def scalar(node: Node) -> Scalar | None:
    """A scalar node's value as YAML means it; None for nulls and for lists or mappings.

    Dates stay text: YAML's own date type would lose the text a person wrote.
    """
    if not isinstance(node, ScalarNode):
        return None
    tag = node.tag
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "bool":
        return bool(_SCALARS.construct_yaml_bool(node))
    if tag == _TAG + "int":
        return int(_SCALARS.construct_yaml_int(node))
    if tag == _TAG + "float":
        return float(_SCALARS.construct_yaml_float(node))
    return str(node.value)


def word(node: Node) -> str | None:
    """A name (segment id, event type, property...) as written: YAML would read ``no`` or
    ``on`` as booleans, but as names they are words. None for empty values, lists, mappings."""
    if not isinstance(node, ScalarNode) or is_null(node):
        return None
    return str(node.value)


def item_named(node: Node, name: str) -> Node | None:
    """Where ``name`` is written in a selector (a type, a list of types or ``{event: ...}``)."""
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.value == "event":
                return item_named(value, name)
        return None
    items = node.value if isinstance(node, SequenceNode) else [node]
    return next((i for i in items if isinstance(i, ScalarNode) and i.value == name), None)


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


def text(node: Node) -> str:
    """A scalar as written; ``...`` for lists and mappings."""
    return str(node.value) if isinstance(node, ScalarNode) else "..."


def shape(node: Node) -> str:
    """How a node looks, in words: for "should be ..., not <shape>"."""
    if isinstance(node, MappingNode):
        return "'key: value' lines"
    if isinstance(node, SequenceNode):
        return "a list"
    if is_null(node):
        return "nothing"
    value = scalar(node)
    if isinstance(value, bool):
        return f"{node.value} (true or false)"
    if isinstance(value, (int, float)):
        return f"the number {node.value}"
    return f"the text '{node.value}'"


def is_number_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def is_duration_text(value: str) -> bool:
    try:
        parse_duration(value)
    except ValueError:
        return False
    return True


def epoch_ms(value: str) -> int | None:
    """ISO-8601 text as epoch milliseconds (UTC when no time zone is given); None if it is not."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(milliseconds=1)
