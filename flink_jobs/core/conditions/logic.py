"""``all``, ``any`` and ``not``: conditions made of other conditions.

    all:                    any:                    not:
      - segment: a            - segment: a            segment: suspected_bot
      - count: purchase       - segment: b
        ...

A list where one condition goes (``when: [...]``) means ``all``; several comparisons in one
condition are an ``all`` of one leaf each (``leaves``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from yaml.nodes import SequenceNode

from ..features import Feature, TimerBook
from ..model import Comparison, Condition, SourceRef
from ..state import CustomerState
from ..syntax.nodes import is_null, shape
from ..syntax.reader import Cond, RuleReader
from .base import Node
from .builder import Builder
from .construct import Construct, Keyword


@dataclass(frozen=True, slots=True)
class AllOf(Condition):
    """Every one of ``children`` holds."""

    children: tuple[Condition, ...]
    source: SourceRef | None = field(default=None, compare=False)

    def subconditions(self) -> tuple[Condition, ...]:
        return self.children


@dataclass(frozen=True, slots=True)
class AnyOf(Condition):
    """At least one of ``children`` holds."""

    children: tuple[Condition, ...]
    source: SourceRef | None = field(default=None, compare=False)

    def subconditions(self) -> tuple[Condition, ...]:
        return self.children


@dataclass(frozen=True, slots=True)
class Not(Condition):
    child: Condition
    source: SourceRef | None = field(default=None, compare=False)

    def subconditions(self) -> tuple[Condition, ...]:
        return (self.child,)


def leaves(c: Cond, comparisons: list[Comparison], make: Callable[[Comparison], Condition]) -> Condition:
    """One leaf per comparison of the condition ``c``, all of which must hold."""
    if len(comparisons) == 1:
        return make(comparisons[0])
    return AllOf(tuple(make(cmp) for cmp in comparisons), source=c.source)


# ---- reading it ------------------------------------------------------------------------------------


def all_of(children: tuple[Condition, ...], source: SourceRef) -> Condition:
    """What a list of conditions means (for ``RuleReader.combine``)."""
    return AllOf(children, source=source)


def _any_of(children: tuple[Condition, ...], source: SourceRef) -> Condition:
    return AnyOf(children, source=source)


def check_list(r: RuleReader, c: Cond) -> Condition | None:
    make = all_of if c.name == "all" else _any_of
    value = c.construct.value
    if isinstance(value, SequenceNode):
        return r.combine(value, c.construct, make, c.source)
    if is_null(value):
        r.error(
            c.construct.key_node,
            f"'{c.name}' has no conditions",
            f"add at least one condition under '{c.name}:', each starting with '- '",
        )
        return None
    r.error(
        r.at_value(c.construct),
        f"'{c.name}' should hold a list of conditions, not {shape(value)}",
        f"start each condition under '{c.name}:' with '- '",
    )
    return None


def check_not(r: RuleReader, c: Cond) -> Condition | None:
    child = r.condition(c.construct.value, c.construct)
    return None if child is None else Not(child, source=c.source)


# ---- evaluating it ---------------------------------------------------------------------------------


class _ManyNode(Node):
    """A node made of others: it reads what they read."""

    __slots__ = ("children",)

    def __init__(self, children: tuple[Node, ...]) -> None:
        self.children = children

    def bind(self, features: Mapping[str, Feature[Any]]) -> None:
        for child in self.children:
            child.bind(features)

    def inputs(self, keys: set[str], flags: set[str]) -> None:
        for child in self.children:
            child.inputs(keys, flags)


class AllNode(_ManyNode):
    __slots__ = ()

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        for child in self.children:
            if not child.holds(state, now, book):
                return False
        return True

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        parts = []
        for child in self.children:
            ok, text = child.explain(state, now)
            if not ok:
                return False, text
            parts.append(text)
        return True, " and ".join(parts)


class AnyNode(_ManyNode):
    __slots__ = ()

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        for child in self.children:
            if child.holds(state, now, book):
                return True
        return False

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        parts = []
        for child in self.children:
            ok, text = child.explain(state, now)
            if ok:
                return True, text
            parts.append(text)
        return False, "none of: " + "; ".join(parts)


class NotNode(Node):
    __slots__ = ("child",)

    def __init__(self, child: Node) -> None:
        self.child = child

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        return not self.child.holds(state, now, book)

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        ok, text = self.child.explain(state, now)
        return (not ok), (f"not ({text})" if ok else text)

    def bind(self, features: Mapping[str, Feature[Any]]) -> None:
        self.child.bind(features)

    def inputs(self, keys: set[str], flags: set[str]) -> None:
        self.child.inputs(keys, flags)


def compile(c: Condition, b: Builder) -> Node:
    if isinstance(c, AllOf):
        return AllNode(tuple(b.node(x) for x in c.children))
    if isinstance(c, AnyOf):
        return AnyNode(tuple(b.node(x) for x in c.children))
    assert isinstance(c, Not)
    return NotNode(b.node(c.child))


CONSTRUCT = Construct(
    keywords=(Keyword("all", check_list), Keyword("any", check_list), Keyword("not", check_not)),
    models=(AllOf, AnyOf, Not),
    compile=compile,
)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from ..pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
