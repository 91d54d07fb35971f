"""``count``, ``sum``, ``avg``, ``min``, ``max`` and ``distinct`` of matching events in a sliding
window, compared with a number:

    count: product_view          sum: cart_value
    within: 10m                  of: cart_add
    greater_than: 2              within: 24h
                                 at_least: 100
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from yaml.nodes import ScalarNode

from ..durations import format_duration
from ..features import BucketedFeature, DistinctFeature, Feature, StatsFeature, TimerBook
from ..model import Comparison, Condition, Event, EventSelector, SourceRef
from ..state import CustomerState
from ..syntax.help import KIND_WORDS, NUMBER_RESULT_OPS, Subject, common_properties, types_text
from ..syntax.nodes import word
from ..syntax.reader import Cond, RuleReader
from .base import FeatureNode, HistoryView, Node, exit_sensitivity, verdict
from .builder import Builder
from .construct import Construct, Keyword
from .logic import leaves

AGGREGATE_KINDS: tuple[str, ...] = ("count", "sum", "avg", "min", "max", "distinct")
_METRIC_WORDS: Mapping[str, str] = {"sum": "sum", "avg": "average", "min": "minimum", "max": "maximum"}
_WHERE_HELP = "put it inside the event selector, e.g. '{event: cart_add, where: {cart_value: {greater_than: 50}}}'"


@dataclass(frozen=True, slots=True)
class Aggregate(Condition):
    """``count``/``sum``/``avg``/``min``/``max``/``distinct`` of matching events in a window."""

    kind: str
    selector: EventSelector
    prop: str | None  # None for count
    window: int
    comparison: Comparison
    source: SourceRef | None = field(default=None, compare=False)


# ---- reading it ------------------------------------------------------------------------------------


def check_count(r: RuleReader, c: Cond) -> Condition | None:
    selector = r.selector(c.construct)
    window = r.window(c, "how far back to count, e.g. 'within: 10m'")
    comparisons = r.comparisons(c, Subject("the count", "number", NUMBER_RESULT_OPS))
    if selector is None or window is None or comparisons is None:
        return None
    return leaves(c, comparisons, lambda cmp: Aggregate("count", selector, None, window, cmp, c.source))


def check_metric(r: RuleReader, c: Cond) -> Condition | None:
    """``sum``/``avg``/``min``/``max``/``distinct: <property>`` with ``of: <selector>``."""
    kind = c.name
    prop_node = c.construct.value
    prop = word(prop_node)
    if not isinstance(prop, str) or not prop:
        prop_example, of_example = ("category", "product_view") if kind == "distinct" else ("cart_value", "cart_add")
        r.error(
            r.at_value(c.construct),
            f"'{kind}' needs the name of a property",
            f"e.g. '{kind}: {prop_example}' with 'of: {of_example}'",
        )
        prop = None
    of = r.required(c, "of", f"add the events to take {prop or 'the property'} from, e.g. 'of: cart_add'")
    selector = r.selector(of) if of is not None else None
    prop_ok = False
    if selector is not None and prop is not None:
        assert isinstance(prop_node, ScalarNode)
        prop_type = r.property(prop_node, selector.event_types, kind)
        if prop_type is not None and kind != "distinct" and prop_type != "number":
            numbers = common_properties(r.catalog, selector.event_types, "number")
            hint = "; to count different values use 'distinct'" if prop_type == "string" else ""
            r.error(
                prop_node,
                f"'{prop}' is {KIND_WORDS[prop_type]}, not a number",
                f"{kind} needs a number property; number properties of "
                f"{types_text(selector.event_types)}: {', '.join(numbers) or 'none'}{hint}",
            )
        else:
            prop_ok = prop_type is not None
    window = r.window(c, "how far back to look, e.g. 'within: 24h'")
    what = "number of different values" if kind == "distinct" else _METRIC_WORDS[kind]
    comparisons = r.comparisons(c, Subject(f"the {what}", "number", NUMBER_RESULT_OPS))
    if selector is None or not prop_ok or window is None or comparisons is None:
        return None
    assert prop is not None
    return leaves(c, comparisons, lambda cmp: Aggregate(kind, selector, prop, window, cmp, c.source))


# ---- evaluating it ---------------------------------------------------------------------------------


W = TypeVar("W", StatsFeature, DistinctFeature)


class _WindowNode(FeatureNode[W]):
    """An aggregate leaf. Window exits are armed lazily: after each evaluation, a timer for the
    window's next exit is asked for only if that exit could flip the leaf (see
    ``exit_sensitivity``), so a customer far below ``count > 100`` costs no timers at all."""

    __slots__ = ("window", "kind", "prop", "cmp", "label", "sensitive_when", "bucketed")

    def __init__(self, key: str, window: int, kind: str, prop: str | None, cmp: Comparison, label: str) -> None:
        super().__init__(key)
        self.window, self.kind, self.prop, self.cmp, self.label = window, kind, prop, cmp, label
        self.sensitive_when = exit_sensitivity(kind, cmp)

    def bind(self, features: Mapping[str, Feature[Any]]) -> None:
        super().bind(features)
        # The feature again, typed as its class rather than the type variable: compiled, a call
        # through it is a native one instead of a Python method look-up (bench/HISTORY.md).
        self.bucketed: BucketedFeature = self.feature

    @abstractmethod
    def value(self, state: CustomerState, now: int) -> float | int | None:
        """The aggregate over the window ending at ``now`` (None when undefined)."""

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        ok = self.cmp.test(self.value(state, now))
        if book is not None and (self.sensitive_when is None or self.sensitive_when == ok):
            fs = state.features.get(self.key)
            if fs:
                at = self.bucketed.next_exit(fs, now, self.window)
                if at is not None:
                    book.want(at)
        return ok

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        value = self.value(state, now)
        return verdict(self.cmp.test(value), self.label, value, self.cmp)


class StatsNode(_WindowNode[StatsFeature]):
    __slots__ = ("stats",)
    feature_type = StatsFeature

    def bind(self, features: Mapping[str, Feature[Any]]) -> None:
        super().bind(features)
        self.stats: StatsFeature = self.feature  # (typed: see _WindowNode.bind)

    def value(self, state: CustomerState, now: int) -> float | int | None:
        fs = state.features.get(self.key)
        if not fs:
            return 0 if self.kind in ("count", "sum") else None
        return self.stats.value(fs, now, self.window, self.kind, self.prop)


class DistinctNode(_WindowNode[DistinctFeature]):
    __slots__ = ("distinct",)
    feature_type = DistinctFeature

    def bind(self, features: Mapping[str, Feature[Any]]) -> None:
        super().bind(features)
        self.distinct: DistinctFeature = self.feature  # (typed: see _WindowNode.bind)

    def value(self, state: CustomerState, now: int) -> float | int | None:
        fs = state.features.get(self.key)
        return self.distinct.value(fs, now, self.window) if fs else 0


def label(a: Aggregate) -> str:
    what = a.selector.describe() if a.kind == "count" else f"{a.prop} of {a.selector.describe()}"
    return f"{a.kind}({what}, {format_duration(a.window, weeks=False)})"


def compile(c: Condition, b: Builder) -> Node:
    assert isinstance(c, Aggregate)
    if c.kind == "distinct":
        return DistinctNode(b.distinct(c.selector, c.prop or "", c.window), c.window, c.kind, c.prop, c.comparison, label(c))
    return StatsNode(b.stats(c.selector, c.prop, c.window), c.window, c.kind, c.prop, c.comparison, label(c))


def qualifying(c: Condition, history: HistoryView, now: int) -> list[tuple[Event, str]]:
    assert isinstance(c, Aggregate)
    return [(e, f"<- counts for {c.kind}") for e in history.matching_in_window(c.selector, c.window, now)]


CONSTRUCT = Construct(
    keywords=(
        Keyword(
            "count",
            check_count,
            takes=("within",),
            comparisons=True,
            key_help={"where": _WHERE_HELP, "of": "count takes the events directly, e.g. 'count: cart_add'"},
        ),
        *(
            Keyword(kind, check_metric, takes=("of", "within"), comparisons=True, key_help={"where": _WHERE_HELP})
            for kind in ("sum", "avg", "min", "max", "distinct")
        ),
    ),
    models=(Aggregate,),
    compile=compile,
    qualifying=qualifying,
)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from ..pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
