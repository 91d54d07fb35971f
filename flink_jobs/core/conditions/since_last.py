"""``since_last``: the time since the last matching event, compared as a duration.

    since_last: purchase
    greater_than: 30d
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..features import LastTimeFeature, TimerBook
from ..model import Comparison, Condition, Event, EventSelector, SourceRef
from ..state import CustomerState
from ..syntax.help import ORDERING, Subject
from ..syntax.reader import Cond, RuleReader
from .base import FeatureNode, HistoryView, Node, duration_text, verdict
from .builder import Builder
from .construct import Construct, Keyword
from .logic import leaves


@dataclass(frozen=True, slots=True)
class SinceLast(Condition):
    """Time since the last matching event (e.g. recency of purchase), compared as a duration."""

    selector: EventSelector
    comparison: Comparison
    source: SourceRef | None = field(default=None, compare=False)


def check(r: RuleReader, c: Cond) -> Condition | None:
    selector = r.selector(c.construct)
    subject = Subject("the time since the last event", "duration", ORDERING, r.horizon)
    comparisons = r.comparisons(c, subject)
    if selector is None or comparisons is None:
        return None
    return leaves(c, comparisons, lambda cmp: SinceLast(selector, cmp, c.source))


class SinceLastNode(FeatureNode[LastTimeFeature]):
    __slots__ = ("cmp", "label")
    feature_type = LastTimeFeature

    def __init__(self, key: str, cmp: Comparison, label: str) -> None:
        super().__init__(key)
        self.cmp, self.label = cmp, label

    def value(self, state: CustomerState, now: int) -> int | None:
        last = state.features.get(self.key)
        return None if last is None else now - last

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        return self.cmp.test(self.value(state, now))

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        value = self.value(state, now)
        if value is None:
            return False, f"{self.label}: never"
        return verdict(self.cmp.test(value), self.label, value, self.cmp, duration_text)


def compile(c: Condition, b: Builder) -> Node:
    assert isinstance(c, SinceLast)
    return SinceLastNode(b.last(c.selector, c.comparison), c.comparison, f"time since last {c.selector.describe()}")


def qualifying(c: Condition, history: HistoryView, now: int) -> list[tuple[Event, str]]:
    assert isinstance(c, SinceLast)
    matching = [e for e in history.upto(now) if c.selector.matches(e)]
    return [(matching[-1], "<- last one")] if matching else []


CONSTRUCT = Construct(
    keywords=(
        Keyword(
            "since_last",
            check,
            comparisons=True,
            key_help={
                "where": "put it inside the event selector, e.g. "
                "'{event: cart_add, where: {cart_value: {greater_than: 50}}}'"
            },
        ),
    ),
    models=(SinceLast,),
    compile=compile,
    qualifying=qualifying,
)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from ..pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
