"""``sequence``: how it is read, correlation, and the time allowed."""

from __future__ import annotations

from flink_jobs.core.conditions import Sequence
from flink_jobs.core.durations import DAY, HOUR, MINUTE

from ..helpers import changes, ev, rules, run, seg, sel
from ..helpers import condition as _condition
from ..helpers import selector as _sel

# ---- reading it -----------------------------------------------------------------------------------


def test_sequence():
    assert _condition(
        "sequence: [cart_add, checkout, purchase]\nwithin: 1h\nmatch_on: cart_id\nkeep: 7d"
    ) == Sequence(
        (_sel("cart_add"), _sel("checkout"), _sel("purchase")), HOUR, 7 * DAY, "cart_id"
    )
    assert _condition("sequence: [product_view, purchase]\nwithin: 1h") == Sequence(
        (_sel("product_view"), _sel("purchase")), HOUR, 24 * HOUR, None
    )


# ---- evaluating it --------------------------------------------------------------------------------


def test_sequence_with_correlation_completes_only_for_the_same_product():
    funnel = seg("bought_viewed", Sequence((sel("product_view"), sel("cart_add")), HOUR, DAY, "product_id"))
    events = [
        ev(1, "product_view", 0, product_id="p1"),
        ev(2, "cart_add", MINUTE, product_id="p2", cart_id="k"),
        ev(3, "cart_add", 2 * MINUTE, product_id="p1", cart_id="k"),
    ]
    r = run(rules(funnel), events, until=2 * DAY)
    assert changes(r) == [("c1", "bought_viewed", "enter", 2 * MINUTE), ("c1", "bought_viewed", "exit", 2 * MINUTE + DAY)]


def test_sequence_too_slow_does_not_complete():
    funnel = seg("fast_funnel", Sequence((sel("product_view"), sel("purchase")), 15 * MINUTE, DAY, None))
    r = run(rules(funnel), [ev(1, "product_view", 0), ev(2, "purchase", 16 * MINUTE)], until=DAY)
    assert changes(r) == []
