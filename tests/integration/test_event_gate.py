"""On the real job: a record bound for the dead-letter topic moves no event time. Before the JVM
judged records by the catalogue (jvm/EventGate.java), an undeclared event type with a time ahead
advanced the watermark: deadlines fired early and valid events behind them were late. The gate
follows the catalogue the job takes live (jvm/GateFollower.java)."""

from __future__ import annotations

import time

import pytest

from flink_jobs.core.loader import load_rules_from_texts

from .conftest import HOUR, MINUTE, RULES, SECOND, Scenario, event

pytestmark = pytest.mark.integration


def test_records_the_parser_rejects_move_no_event_time(scenario: Scenario):
    # c-a's cart is abandoned at 10:15 unless a checkout or purchase of it comes first.
    scenario.produce([event("a1", "c-a", "cart_add", 0, cart_id="k1", product_id="p1", price=20)])
    job = scenario.start_unbounded(**{"events.out_of_orderness": "1s"})
    try:
        # Ahead in time, and each of them rejected by the parser.
        scenario.produce(
            [
                event("x1", "c-x", "undeclared_type", 10 * HOUR),
                event("x2", "c-x", "cart_add", 11 * HOUR, cart_id=5, product_id="p2"),
                {**event("x3", "c-x", "page_view", 12 * HOUR, url="/"), "event_id": " "},
            ]
        )
        time.sleep(5)  # many watermark intervals (200 ms) after the source has read them

        # The purchase of 10:10 closes the cart in time: nothing has moved the clock past 10:10.
        scenario.produce([event("a2", "c-a", "purchase", 10 * MINUTE, order_id="o1", cart_id="k1", revenue=20)])
        # Then valid events move time on: c-t views three products (a member of
        # repeat_product_viewer) and a later event lets the watermark pass them and the deadline.
        views = [event(f"t{i}", "c-t", "product_view", HOUR + i * SECOND, product_id=f"p{i}") for i in range(3)]
        scenario.produce([*views, event("tick", "c-tick", "page_view", HOUR + 20 * SECOND, url="/")])
        changes = scenario.read("changes", at_least=1, timeout=120)
        time.sleep(2)  # for anything after it
        changes = scenario.read("changes")
        assert [(k, v["segment"], v["kind"]) for k, v in changes] == [("c-t", "repeat_product_viewer", "enter")]
        assert scenario.read("late") == []
        dead = scenario.read("dlq", at_least=3, timeout=30)
        assert [d["reason"] for _, d in dead] == [
            "unknown event_type 'undeclared_type'; expected one of: page_view, product_view, cart_add, "
            "cart_remove, checkout, purchase, session_start, identify",
            "properties.cart_id must be string or null (got a number: 5)",
            "event_id is empty",
        ]
    finally:
        job.cancel().result()


def _publish(scenario: Scenario, name: str, text: str) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=scenario.stack.bootstrap, acks="all")
    producer.send(scenario.topics["rules"], key=name.encode(), value=text.encode())
    producer.flush()
    producer.close()


NEWSLETTER = """    newsletter_signup:
      description: Signed up for the newsletter (added live).
"""


def test_the_gate_follows_the_catalogue_published_live(scenario: Scenario):
    """A catalogue published on the rules topic reaches the sources' gate: a type it removes no
    longer moves event time, a type it adds does."""
    shipped = (RULES / "catalog.yaml").read_text()
    removed = shipped.index("    cart_remove:")
    end = shipped.index("    checkout:")
    catalog = shipped[:removed] + NEWSLETTER + shipped[end:]
    texts = {"catalog.yaml": catalog, "scenarios.yaml": (RULES / "scenarios.yaml").read_text()}
    version = load_rules_from_texts(texts).catalog.version

    scenario.produce([event("a1", "c-a", "cart_add", 0, cart_id="k1", product_id="p1", price=20)])
    job = scenario.start_unbounded(**{"events.out_of_orderness": "1s"})
    try:
        # Once the topic holds any file, its files are the set: the rules, then their catalogue.
        _publish(scenario, "scenarios.yaml", texts["scenarios.yaml"])
        _publish(scenario, "catalog.yaml", catalog)
        deadline = time.monotonic() + 120
        while not any(v.get("catalog_version") == version for _, v in scenario.read("status")):
            assert time.monotonic() < deadline, f"the job did not announce catalogue {version}: {scenario.read('status')}"
            time.sleep(0.5)
        time.sleep(3)  # the sources' follower polls the status topic every 200 ms

        # cart_remove is no longer declared: to the dead-letter topic, and no time moves.
        scenario.produce([event("x1", "c-x", "cart_remove", 10 * HOUR, cart_id="k9", product_id="p9")])
        time.sleep(5)
        scenario.produce([event("a2", "c-a", "purchase", 10 * MINUTE, order_id="o1", cart_id="k1", revenue=20)])
        # newsletter_signup is: it moves the watermark past c-b's deadline (20:15), so c-b's cart
        # is abandoned.
        scenario.produce(
            [
                event("b1", "c-b", "cart_add", 20 * HOUR, cart_id="k2", product_id="p2", price=20),
                event("n1", "c-n", "newsletter_signup", 21 * HOUR),
            ]
        )
        changes = scenario.read("changes", at_least=1, timeout=120)
        time.sleep(2)
        changes = scenario.read("changes")
        assert [(k, v["segment"], v["kind"]) for k, v in changes] == [("c-b", "abandoned_cart", "enter")]
        assert scenario.read("late") == []
        dead = scenario.read("dlq", at_least=1, timeout=30)
        assert [d["reason"].split(";")[0] for _, d in dead] == ["unknown event_type 'cart_remove'"]
    finally:
        job.cancel().result()
