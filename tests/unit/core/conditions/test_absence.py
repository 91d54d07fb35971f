"""``event`` + ``not_followed_by``: how it is read, deadlines, follow-ups in and out of order."""

from __future__ import annotations

from flink_jobs.core.conditions import Absence
from flink_jobs.core.durations import DAY, HOUR, MINUTE, SECOND
from flink_jobs.core.engine import SegmentEngine
from flink_jobs.core.model import Comparison, PropertyFilter

from ..helpers import ABANDONED, T0, changes, ev, rules, run
from ..helpers import condition as _condition
from ..helpers import selector as _sel

# ---- reading it -----------------------------------------------------------------------------------


def test_not_followed_by_with_where_beside_event_and_default_keep():
    condition = _condition(
        "event: cart_add\n"
        "where: {cart_value: {greater_than: 50}}\n"
        "not_followed_by: [checkout, purchase]\n"
        "within: 15m\n"
        "match_on: cart_id"
    )
    assert condition == Absence(
        first=_sel(
            "cart_add", where=(PropertyFilter("cart_value", Comparison("greater_than", 50)),)
        ),
        then=_sel("checkout", "purchase"),
        within=15 * MINUTE,
        keep=24 * HOUR,
        match_on="cart_id",
    )


# ---- evaluating it --------------------------------------------------------------------------------


def test_abandoned_cart_enters_at_the_deadline_and_leaves_after_keep():
    r = run(rules(ABANDONED), [ev(1, "cart_add", 0, cart_id="k1")], until=2 * DAY)
    assert changes(r) == [
        ("c1", "abandoned_cart", "enter", 15 * MINUTE),
        ("c1", "abandoned_cart", "exit", 15 * MINUTE + DAY),
    ]
    assert r.changes[0].reason == "cart_add not followed by checkout/purchase within 15m (cart_id=k1) since 0s ago"


def test_purchase_arriving_out_of_order_before_the_deadline_cancels_the_abandoned_cart():
    # The purchase happened 10 minutes after the cart add but arrives after a later page view.
    events = [
        ev(1, "cart_add", 0, cart_id="k1"),
        ev(2, "page_view", 10 * MINUTE + 3 * SECOND),
        ev(3, "purchase", 10 * MINUTE, cart_id="k1", revenue=80),
    ]
    r = run(rules(ABANDONED), events, until=2 * DAY)
    assert changes(r) == []
    assert r.stats.late == 0


def test_follow_up_for_another_cart_does_not_cancel():
    events = [ev(1, "cart_add", 0, cart_id="k1"), ev(2, "checkout", MINUTE, cart_id="k2")]
    r = run(rules(ABANDONED), events, until=HOUR)
    assert changes(r) == [("c1", "abandoned_cart", "enter", 15 * MINUTE)]


def test_follow_up_at_the_same_millisecond_cancels_whatever_the_arrival_order():
    for order in ([0, 1], [1, 0]):
        events = [ev(1, "cart_add", 0, cart_id="k1"), ev(2, "checkout", 0, cart_id="k1")]
        r = run(rules(ABANDONED), [events[i] for i in order], until=HOUR)
        assert changes(r) == []


def test_purchase_after_the_deadline_ends_the_abandonment():
    events = [ev(1, "cart_add", 0, cart_id="k1"), ev(2, "purchase", 20 * MINUTE, cart_id="k1")]
    r = run(rules(ABANDONED), events, until=DAY)
    assert changes(r) == [
        ("c1", "abandoned_cart", "enter", 15 * MINUTE),
        ("c1", "abandoned_cart", "exit", 20 * MINUTE),
    ]


def test_cancelled_deadline_timers_are_deleted():
    engine = SegmentEngine(rules(ABANDONED))
    state = engine.new_state("c1")
    first = engine.step(state, ev(1, "cart_add", 0, cart_id="k1"), watermark=T0 + 1)
    assert T0 + 15 * MINUTE in first.timers_to_register
    second = engine.step(state, ev(2, "checkout", MINUTE, cart_id="k1"), watermark=T0 + MINUTE + 1)
    assert second.timers_to_delete == [T0 + 15 * MINUTE, T0 + 15 * MINUTE + DAY]
    assert T0 + 15 * MINUTE not in state.timers


def test_a_follow_up_at_exactly_the_deadline_cancels_and_one_after_it_ends_the_match():
    # rules/README.md, "Late and repeated events": the deadline is inclusive.
    on_time = [ev(1, "cart_add", 0, cart_id="k1"), ev(2, "purchase", 15 * MINUTE, cart_id="k1")]
    assert changes(run(rules(ABANDONED), on_time, until=HOUR)) == []
    after = [ev(1, "cart_add", 0, cart_id="k1"), ev(2, "purchase", 15 * MINUTE + 1, cart_id="k1")]
    assert changes(run(rules(ABANDONED), after, until=HOUR)) == [
        ("c1", "abandoned_cart", "enter", 15 * MINUTE),
        ("c1", "abandoned_cart", "exit", 15 * MINUTE + 1),
    ]


def test_duplicates_are_found_per_customer():
    # The same event id sent for two customers is two events.
    events = [ev(1, "cart_add", 0, cart_id="k1"), ev(1, "cart_add", 0, customer="c2", cart_id="k1")]
    assert sorted(changes(run(rules(ABANDONED), events, until=HOUR))) == [
        ("c1", "abandoned_cart", "enter", 15 * MINUTE),
        ("c2", "abandoned_cart", "enter", 15 * MINUTE),
    ]
