"""Hypothesis strategies: random rule trees and random customer histories."""

from __future__ import annotations

from hypothesis import strategies as st

from flink_jobs.core.conditions import (
    Absence,
    Aggregate,
    AllOf,
    AnyOf,
    InSegment,
    Not,
    ProfileField,
    Score,
    Sequence,
    Sessions,
    SinceLast,
)
from flink_jobs.core.durations import DAY, HOUR, MINUTE, SECOND
from flink_jobs.core.model import Comparison, Event, EventSelector, PropertyFilter, RuleSet, Segment

from .helpers import CATALOG

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

PROPS = {
    "page_view": {},
    "product_view": {"product_id": ["p1", "p2"], "category": ["shoes", "bags"], "price": [5, 20, 60]},
    "cart_add": {"cart_id": ["c1", "c2"], "product_id": ["p1", "p2"], "cart_value": [10, 40, 60.5], "price": [5, 20]},
    "checkout": {"cart_id": ["c1", "c2"], "cart_value": [10, 60.5]},
    "purchase": {"cart_id": ["c1", "c2"], "revenue": [10, 100, 250.5]},
    "identify": {"country": ["DE", "FR"], "email_opt_in": [True, False]},
}
TYPES = list(PROPS)
NUMERIC = {t: [p for p, vs in PROPS[t].items() if isinstance(vs[0], (int, float)) and not isinstance(vs[0], bool)] for t in PROPS}
WINDOWS = [1 * SECOND, 30 * SECOND, 10 * MINUTE, 1 * HOUR, 2 * HOUR, 1 * DAY, 3 * DAY, 40 * DAY]
WITHIN = [1 * SECOND, 15 * MINUTE, 1 * HOUR]
KEEP = [1 * SECOND, 30 * MINUTE, 1 * DAY]
# 30 days: the generic aggregates' records age from minutes into hours and days.
GAPS = [0, 0, 0, 1, 500, 1 * SECOND, 30 * SECOND, 5 * MINUTE, 20 * MINUTE, 2 * HOUR, 1 * DAY, 30 * DAY]


# ---- rules -------------------------------------------------------------------------------------


@st.composite
def selectors(draw, types=None):
    event_types = tuple(sorted(draw(st.sets(st.sampled_from(types or TYPES), min_size=1, max_size=2))))
    where: tuple[PropertyFilter, ...] = ()
    if len(event_types) == 1 and PROPS[event_types[0]] and draw(st.booleans()):
        prop = draw(st.sampled_from(sorted(PROPS[event_types[0]])))
        values = PROPS[event_types[0]][prop]
        if isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            cmp = Comparison(draw(st.sampled_from(["greater_than", "at_most", "equals"])), draw(st.sampled_from(values)))
        else:
            op = draw(st.sampled_from(["equals", "not_equals", "in"]))
            if op == "in":
                cmp = Comparison("in", tuple(draw(st.sets(st.sampled_from(values), min_size=1))))
            else:
                cmp = Comparison(op, draw(st.sampled_from(values)))
        where = (PropertyFilter(prop, cmp),)
    return EventSelector(event_types, where)


@st.composite
def aggregates(draw):
    kind = draw(st.sampled_from(["count", "count", "sum", "avg", "min", "max", "distinct"]))
    window = draw(st.sampled_from(WINDOWS))
    if kind == "count":
        sel = draw(selectors())
        return Aggregate("count", sel, None, window, Comparison(draw(st.sampled_from(["greater_than", "at_least", "less_than", "equals"])), draw(st.integers(0, 3))))
    typed = [t for t in TYPES if (NUMERIC[t] if kind != "distinct" else PROPS[t])]
    event_type = draw(st.sampled_from(typed))
    sel = draw(selectors([event_type]))
    prop = draw(st.sampled_from(NUMERIC[event_type] if kind != "distinct" else sorted(PROPS[event_type])))
    if kind == "distinct":
        cmp = Comparison(draw(st.sampled_from(["at_least", "less_than"])), draw(st.integers(0, 2)))
    else:
        cmp = Comparison(draw(st.sampled_from(["greater_than", "at_least", "at_most"])), draw(st.sampled_from([0, 10, 50, 100])))
    return Aggregate(kind, sel, prop, window, cmp)


@st.composite
def absences(draw):
    first_type = draw(st.sampled_from(["product_view", "cart_add", "checkout"]))
    then_types = tuple(sorted(draw(st.sets(st.sampled_from([t for t in ["cart_add", "checkout", "purchase"] if t != first_type]), min_size=1))))
    match_on = None
    if first_type != "product_view" and draw(st.booleans()):
        match_on = "cart_id"
    first = draw(selectors([first_type]))
    return Absence(first, EventSelector(then_types), draw(st.sampled_from(WITHIN)), draw(st.sampled_from(KEEP)), match_on)


@st.composite
def sequences(draw):
    n = draw(st.integers(2, 3))
    steps = tuple(draw(selectors(["product_view", "cart_add", "checkout", "purchase"])) for _ in range(n))
    match_on = None
    carts = {"cart_add", "checkout", "purchase"}
    if all(set(s.event_types) <= carts for s in steps) and draw(st.booleans()):
        match_on = "cart_id"
    return Sequence(steps, draw(st.sampled_from(WITHIN)), draw(st.sampled_from(KEEP)), match_on)


@st.composite
def sessions(draw):
    measure = draw(st.sampled_from(["count", "avg_duration", "total_duration"]))
    if measure == "count":
        cmp = Comparison(draw(st.sampled_from(["greater_than", "at_least"])), draw(st.integers(0, 3)))
    else:
        cmp = Comparison(draw(st.sampled_from(["greater_than", "at_most"])), draw(st.sampled_from([0, 1 * SECOND, 4 * MINUTE])))
    return Sessions(measure, draw(st.sampled_from(WINDOWS)), draw(st.sampled_from([5 * MINUTE, 30 * MINUTE])), cmp)


@st.composite
def since_lasts(draw):
    op = draw(st.sampled_from(["less_than", "at_most", "greater_than", "at_least"]))
    return SinceLast(draw(selectors()), Comparison(op, draw(st.sampled_from([1 * SECOND, 1 * HOUR, 1 * DAY, 3 * DAY]))))


def leaves(earlier: list[str]):
    options = [
        aggregates(),
        aggregates(),
        absences(),
        sequences(),
        sessions(),
        since_lasts(),
        st.builds(ProfileField, st.just("country"), st.sampled_from([Comparison("equals", "DE"), Comparison("in", ("DE", "FR"))])),
        st.builds(Score, st.just("purchase_propensity"), st.sampled_from([Comparison("at_least", 0.8), Comparison("less_than", 0.5)])),
    ]
    if earlier:
        options.append(st.builds(InSegment, st.sampled_from(earlier)))
    return st.one_of(options)


def conditions(earlier: list[str]):
    return st.recursive(
        leaves(earlier),
        lambda inner: st.one_of(
            st.builds(lambda cs: AllOf(tuple(cs)), st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda cs: AnyOf(tuple(cs)), st.lists(inner, min_size=1, max_size=3)),
            st.builds(Not, inner),
        ),
        max_leaves=4,
    )


@st.composite
def rule_sets(draw, max_segments: int = 4):
    n = draw(st.integers(1, max_segments))
    segments = []
    for i in range(n):
        earlier = [s.id for s in segments]
        condition = draw(conditions(earlier))
        ttl = draw(st.sampled_from([None, None, 10 * MINUTE, 1 * DAY]))
        # A segment takes a ttl or a hold (the loader refuses both).
        hold = draw(st.sampled_from([None, None, 5 * MINUTE, 1 * HOUR])) if ttl is None else None
        exclude = tuple(draw(st.sets(st.sampled_from(earlier), max_size=1))) if earlier else ()
        segments.append(Segment(f"s{i}", "generated", "tests", condition, ttl, exclude, hold=hold))
    return RuleSet(tuple(segments), "rs-test", CATALOG)


# ---- events ------------------------------------------------------------------------------------


@st.composite
def histories(draw, customers=("alice", "bob"), max_events: int = 25):
    events = []
    n = 0
    for cid in draw(st.lists(st.sampled_from(customers), min_size=1, max_size=len(customers), unique=True)):
        t = T0 + draw(st.integers(0, 5 * SECOND))
        for _ in range(draw(st.integers(0, max_events))):
            t += draw(st.sampled_from(GAPS))
            event_type = draw(st.sampled_from(TYPES))
            props = {p: draw(st.sampled_from(vs)) for p, vs in PROPS[event_type].items() if draw(st.integers(0, 5))}
            events.append(Event(f"{cid}-{n}", cid, event_type, t, props))
            n += 1
    return events


@st.composite
def arrivals(draw, events: list[Event], bound: int):
    """The events in an arrival order where each is at most ``bound`` late, plus duplicates."""
    delays = [draw(st.integers(0, bound)) for _ in events]
    order = sorted(range(len(events)), key=lambda i: (events[i].event_time + delays[i], i))
    out = [events[i] for i in order]
    for _ in range(draw(st.integers(0, 3)) if events else 0):
        original = draw(st.integers(0, len(out) - 1))
        at = draw(st.integers(original + 1, len(out)))
        out.insert(at, out[original])
    return out
