"""``since_last``: how it is read, and a recency that flips with time alone."""

from __future__ import annotations

from flink_jobs.core.conditions import SinceLast
from flink_jobs.core.durations import DAY
from flink_jobs.core.model import Comparison

from ..helpers import changes, ev, rules, run, seg, sel
from ..helpers import condition as _condition
from ..helpers import selector as _sel

# ---- reading it -----------------------------------------------------------------------------------


def test_since_last():
    assert _condition("since_last: purchase\nat_least: 60d") == SinceLast(
        _sel("purchase"), Comparison("at_least", 60 * DAY)
    )


# ---- evaluating it --------------------------------------------------------------------------------


def test_dormant_customer_by_time_since_last_purchase():
    dormant = seg("dormant", SinceLast(sel("purchase"), Comparison("at_least", 60 * DAY)))
    events = [ev(1, "purchase", 0, revenue=10), ev(2, "page_view", 30 * DAY)]
    r = run(rules(dormant), events, until=100 * DAY)
    assert changes(r) == [("c1", "dormant", "enter", 60 * DAY)]
