"""``segment``: another segment's membership."""

from __future__ import annotations

from flink_jobs.core.conditions import Aggregate, AllOf, InSegment, Not
from flink_jobs.core.durations import HOUR, MINUTE
from flink_jobs.core.model import Comparison

from ..helpers import changes, ev, rules, run, seg, sel

# ---- evaluating it --------------------------------------------------------------------------------


def test_segment_reference_and_not():
    a = seg("viewers", Aggregate("count", sel("product_view"), None, HOUR, Comparison("at_least", 1)))
    b = seg("viewers_not_buyers", AllOf((InSegment("viewers"), Not(Aggregate("count", sel("purchase"), None, HOUR, Comparison("at_least", 1))))))
    r = run(rules(a, b), [ev(1, "product_view", 0), ev(2, "purchase", MINUTE, revenue=5)], until=30 * MINUTE)
    assert changes(r) == [
        ("c1", "viewers", "enter", 0),
        ("c1", "viewers_not_buyers", "enter", 0),
        ("c1", "viewers_not_buyers", "exit", MINUTE),
    ]
