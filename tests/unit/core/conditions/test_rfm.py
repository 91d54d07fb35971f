"""``rfm``: read as the conditions it stands for, evaluated as those."""

from __future__ import annotations

from flink_jobs.core.conditions import Aggregate, AllOf, SinceLast
from flink_jobs.core.durations import DAY
from flink_jobs.core.model import Comparison

from ..helpers import changes, ev, rules, run, seg, sel
from ..helpers import condition as _condition
from ..helpers import selector as _sel

# ---- reading it -----------------------------------------------------------------------------------


def test_rfm_is_an_all_of_its_parts_and_one_part_is_just_that_leaf():
    purchases = _sel("purchase")
    assert _condition(
        "rfm:\n"
        "  recency: {at_most: 30d}\n"
        "  frequency: {at_least: 3}\n"
        "  monetary: {at_least: 300}\n"
        "within: 365d"
    ) == AllOf(
        (
            SinceLast(purchases, Comparison("at_most", 30 * DAY)),
            Aggregate("count", purchases, None, 365 * DAY, Comparison("at_least", 3)),
            Aggregate("sum", purchases, "revenue", 365 * DAY, Comparison("at_least", 300)),
        )
    )
    assert _condition("rfm: {recency: {at_most: 30d}}") == SinceLast(
        purchases, Comparison("at_most", 30 * DAY)
    )


# ---- evaluating it --------------------------------------------------------------------------------


def test_rfm_high_value_customer():
    high_value = seg(
        "high_value",
        AllOf((
            SinceLast(sel("purchase"), Comparison("at_most", 30 * DAY)),
            Aggregate("count", sel("purchase"), None, 365 * DAY, Comparison("at_least", 3)),
            Aggregate("sum", sel("purchase"), "revenue", 365 * DAY, Comparison("at_least", 300)),
        )),
    )
    events = [ev(i, "purchase", i * DAY, revenue=120) for i in range(3)]
    r = run(rules(high_value), events, until=100 * DAY)
    # "at most 30d" holds through last + 30d exactly and fails one millisecond later.
    assert changes(r) == [("c1", "high_value", "enter", 2 * DAY), ("c1", "high_value", "exit", 32 * DAY + 1)]
