"""``count``, ``sum``, ``avg``, ``min``, ``max``, ``distinct``: how they are read, and windows sliding."""

from __future__ import annotations

from flink_jobs.core.conditions import Aggregate
from flink_jobs.core.durations import DAY, HOUR, MINUTE
from flink_jobs.core.model import Comparison, PropertyFilter

from ..helpers import VIEWED_TWICE, changes, ev, rules, run
from ..helpers import condition as _condition
from ..helpers import selector as _sel

# ---- reading it -----------------------------------------------------------------------------------


def test_count():
    assert _condition("count: product_view\nwithin: 10m\ngreater_than: 2") == Aggregate(
        "count", _sel("product_view"), None, 10 * MINUTE, Comparison("greater_than", 2)
    )


def test_selector_forms():
    assert _condition("count: [product_view, page_view]\nwithin: 1h\nat_least: 1") == Aggregate(
        "count", _sel("product_view", "page_view"), None, HOUR, Comparison("at_least", 1)
    )
    big_carts = _sel(
        "cart_add", where=(PropertyFilter("cart_value", Comparison("greater_than", 50)),)
    )
    assert _condition(
        "count: {event: cart_add, where: {cart_value: {greater_than: 50}}}\n"
        "within: 24h\nat_least: 1"
    ) == Aggregate("count", big_carts, None, DAY, Comparison("at_least", 1))


def test_where_plain_value_means_equals_and_operators_are_typed():
    condition = _condition(
        "count:\n"
        "  event: product_view\n"
        "  where:\n"
        "    category: shoes\n"
        "    price: {at_least: 10, less_than: 99.5}\n"
        "    channel: {in: [email, push]}\n"
        "    device: {exists: false}\n"
        "within: 1d\n"
        "at_least: 1"
    )
    assert condition.selector.where == (
        PropertyFilter("category", Comparison("equals", "shoes")),
        PropertyFilter("price", Comparison("at_least", 10)),
        PropertyFilter("price", Comparison("less_than", 99.5)),
        PropertyFilter("channel", Comparison("in", ("email", "push"))),
        PropertyFilter("device", Comparison("exists", False)),
    )


def test_sum_avg_min_max_and_distinct():
    assert _condition(
        "sum: cart_value\nof: {event: cart_add}\nwithin: 24h\ngreater_than: 50"
    ) == Aggregate("sum", _sel("cart_add"), "cart_value", DAY, Comparison("greater_than", 50))
    for kind in ("avg", "min", "max"):
        assert _condition(f"{kind}: price\nof: product_view\nwithin: 1d\nat_most: 20") == Aggregate(
            kind, _sel("product_view"), "price", DAY, Comparison("at_most", 20)
        )
    assert _condition(
        "distinct: category\nof: product_view\nwithin: 1d\nat_least: 3"
    ) == Aggregate("distinct", _sel("product_view"), "category", DAY, Comparison("at_least", 3))


def test_a_window_of_36h30m_is_a_whole_number_of_its_one_minute_step():
    condition = _condition("count: page_view\nwithin: 36h30m\nat_least: 1")
    assert condition.window == 36 * HOUR + 30 * MINUTE


# ---- evaluating it --------------------------------------------------------------------------------


def test_product_viewed_more_than_twice_enters_and_exits_when_the_window_slides():
    r = run(rules(VIEWED_TWICE), [ev(1, "product_view", 0), ev(2, "product_view", 60_000), ev(3, "product_view", 120_000)], until=HOUR)
    assert changes(r) == [
        ("c1", "product_viewed_repeatedly", "enter", 120_000),
        # The first view leaves the 10-minute window (1 s steps) 10 minutes after it happened.
        ("c1", "product_viewed_repeatedly", "exit", 600_000),
    ]
    assert r.changes[0].reason == "count(product_view, 10m) = 3 > 2"
    assert r.changes[1].reason == "count(product_view, 10m) = 2, needs > 2"
