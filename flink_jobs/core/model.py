"""The rule and event model: frozen dataclasses produced by the loader, consumed by the compiler.

Times are integers in milliseconds since the epoch (event time); durations are milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Mapping, Union

from .catalog import Catalog

Scalar = Union[str, int, float, bool]
PropertyValue = Union[str, int, float, bool]

COMPARISON_OPS: tuple[str, ...] = (
    "equals",
    "not_equals",
    "less_than",
    "at_most",
    "greater_than",
    "at_least",
    "in",
    "not_in",
    "exists",
    "contains",
    "starts_with",
)
# Symbols accepted as aliases for the worded operators.
OP_ALIASES: Mapping[str, str] = {
    "=": "equals",
    "==": "equals",
    "!=": "not_equals",
    "<": "less_than",
    "<=": "at_most",
    ">": "greater_than",
    ">=": "at_least",
}
ORDERING_OPS = frozenset({"less_than", "at_most", "greater_than", "at_least"})
OP_SYMBOLS: Mapping[str, str] = {
    "equals": "=",
    "not_equals": "!=",
    "less_than": "<",
    "at_most": "<=",
    "greater_than": ">",
    "at_least": ">=",
    "in": "in",
    "not_in": "not in",
    "exists": "exists",
    "contains": "contains",
    "starts_with": "starts with",
}


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a rule element was written, for messages that point at it."""

    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Event:
    """A validated customer event. ``properties`` holds typed values (timestamps as epoch ms)."""

    event_id: str
    customer_id: str
    event_type: str
    event_time: int
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    # When the event entered the pipeline (epoch ms), for ingestion-to-segment latency; not part
    # of the semantics.
    ingest_time: int | None = None

    def sort_key(self) -> tuple[int, str]:
        """Total order used everywhere events of one customer are replayed."""
        return (self.event_time, self.event_id)


@dataclass(frozen=True, slots=True)
class Comparison:
    """``<op> <value>``: one test on a value (a property, an aggregate, a score, a duration)."""

    op: str
    value: Scalar | tuple[Scalar, ...]

    def test(self, actual: object) -> bool:
        """True when ``actual`` passes; a missing value (None) passes only ``exists: false``."""
        op, value = self.op, self.value
        if op == "exists":
            return (actual is not None) == value
        if actual is None:
            return False
        if op == "equals":
            return _same_kind(actual, value) and actual == value
        if op == "not_equals":
            return not (_same_kind(actual, value) and actual == value)
        if op in ("in", "not_in"):
            hit = any(_same_kind(actual, v) and actual == v for v in value)  # type: ignore[union-attr]
            return hit if op == "in" else not hit
        if op == "contains":
            return isinstance(actual, str) and str(value) in actual
        if op == "starts_with":
            return isinstance(actual, str) and actual.startswith(str(value))
        # Ordering: numbers (and timestamps, held as numbers) only.
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return False
        if op == "less_than":
            return actual < value  # type: ignore[operator]
        if op == "at_most":
            return actual <= value  # type: ignore[operator]
        if op == "greater_than":
            return actual > value  # type: ignore[operator]
        if op == "at_least":
            return actual >= value  # type: ignore[operator]
        raise ValueError(f"unknown comparison operator {op!r}")

    def describe(self, render: Callable[[object], str] | None = None) -> str:
        shown = render or _render_value
        if isinstance(self.value, tuple):
            inner = ", ".join(shown(v) for v in self.value)
            return f"{OP_SYMBOLS[self.op]} [{inner}]"
        if self.op == "exists":
            return "exists" if self.value else "is missing"
        return f"{OP_SYMBOLS[self.op]} {shown(self.value)}"


def _same_kind(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return True
    return type(a) is type(b)


def _render_value(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True, slots=True)
class PropertyFilter:
    prop: str
    comparison: Comparison

    def matches(self, properties: Mapping[str, PropertyValue]) -> bool:
        return self.comparison.test(properties.get(self.prop))


@dataclass(frozen=True, slots=True)
class EventSelector:
    """Which events a construct looks at: one or more event types and optional property filters."""

    event_types: tuple[str, ...]
    where: tuple[PropertyFilter, ...] = ()

    def matches(self, event: Event) -> bool:
        if event.event_type not in self.event_types:
            return False
        props = event.properties
        for f in self.where:
            if not f.comparison.test(props.get(f.prop)):
                return False
        return True

    def key(self) -> str:
        """A stable text key: selectors with equal keys select the same events."""
        types = "+".join(sorted(self.event_types))
        if not self.where:
            return types
        parts = sorted(f"{f.prop} {f.comparison.op} {f.comparison.value!r}" for f in self.where)
        return f"{types}[{'; '.join(parts)}]"

    def describe(self) -> str:
        types = self.event_types[0] if len(self.event_types) == 1 else "/".join(self.event_types)
        if not self.where:
            return types
        conds = ", ".join(f"{f.prop} {f.comparison.describe()}" for f in self.where)
        return f"{types} where {conds}"


# ---- conditions ---------------------------------------------------------------------------------


class Condition:
    """Base of every rule construct's model: a frozen dataclass defined with its construct in
    ``core/conditions/`` (one module each), whose ``source`` says where it was written."""

    __slots__ = ()
    source: SourceRef | None

    def subconditions(self) -> tuple[Condition, ...]:
        """The conditions directly below this one (``all``, ``any``, ``not``)."""
        return ()

    def references(self) -> tuple[str, ...]:
        """Ids of the segments this condition itself reads (``segment:``)."""
        return ()


@dataclass(frozen=True, slots=True)
class Segment:
    id: str
    description: str
    owner: str
    condition: Condition
    ttl: int | None = None
    exclude: tuple[str, ...] = ()
    source: SourceRef | None = field(default=None, compare=False)
    # Stay a member this long after the condition stopped holding (a quarantine), unless it holds
    # again before: the exit waits, the entry does not.
    hold: int | None = None


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every segment of a rules folder and the event catalogue they are written against, with a
    version that changes whenever any rule or the catalogue changes."""

    segments: tuple[Segment, ...]
    version: str
    catalog: Catalog

    def by_id(self) -> dict[str, Segment]:
        return {s.id: s for s in self.segments}


def walk(condition: Condition) -> Iterator[Condition]:
    """Yield the condition and all conditions below it, depth first."""
    yield condition
    for child in condition.subconditions():
        yield from walk(child)


def segment_references(segment: Segment) -> tuple[str, ...]:
    """Segment ids this segment depends on (``segment:`` conditions and ``exclude``)."""
    refs = [ref for c in walk(segment.condition) for ref in c.references()]
    return tuple(dict.fromkeys([*refs, *segment.exclude]))


# ---- what the engine emits ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """A membership change: the customer entered or left a segment at an event-time instant."""

    customer_id: str
    segment_id: str
    kind: Literal["enter", "exit"]
    event_time: int
    rule_version: str
    reason: str
    # The model scores the decision was made with (the customer's at this instant): activation
    # systems rank by them. Not part of what the change is.
    scores: Mapping[str, float] = field(default_factory=dict, compare=False)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from .pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
