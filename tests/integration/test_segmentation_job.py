"""The segmentation job end to end: real Kafka, real Redis, Flink's local mini-cluster.

Bounded runs end with Flink's final watermark (Long.MAX_VALUE), which fires every pending timer:
windows empty, deadlines pass, ``keep`` periods end. So a windowed or absence membership that
begins in a test also ends in it, and the expected change lists below include those exits; only
timer-free memberships (a profile field) are still in Redis at the end.
"""

from __future__ import annotations

import json
import time

import pytest

from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.loader import load_rules
from flink_jobs.core.runner import LocalRunner
from flink_jobs.ml.serving import OnnxScorer
from flink_jobs.runtime.serde import EventSchema, ParseLimits, encode_change, parse_event

from .conftest import HOUR, MINUTE, RULES, T0, Scenario, event, model_versions_of

pytestmark = pytest.mark.integration

MAX_WATERMARK = 2**63 - 1


def _changes(records):
    return [(k, v["segment"], v["kind"], v["event_time"] - T0) for k, v in records]


def _simulated(produced_values, out_of_orderness=5 * MINUTE, models=True):
    """What core/runner.py (the pure simulation of the Flink function) says the change topic must
    hold: with the shipped models, as the job runs by default (their scores travel in the records)."""
    rules = load_rules([str(RULES)])
    scorer = OnnxScorer(known_scores=rules.catalog.scores) if models else None
    runner = LocalRunner(SegmentEngine(rules, EngineConfig(), scorer=scorer), out_of_orderness=out_of_orderness)
    schema = EventSchema(rules.catalog)
    for raw in produced_values:
        parsed = parse_event(json.dumps(raw).encode(), now_ms=T0 + 365 * 24 * HOUR, schema=schema, limits=ParseLimits())
        runner.feed(parsed)
    runner.advance(MAX_WATERMARK)
    return [(c.customer_id, json.loads(encode_change(c, model_versions_of(runner)))) for c in runner.changes]


def _by_customer(records):
    out: dict[str, list] = {}
    for key, value in records:
        out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("generic", ["true", "false"])
def test_product_viewed_more_than_twice_in_ten_minutes(scenario: Scenario, generic: str):
    """With the generic aggregates (the default) or without: the same changes."""
    events = [
        event("v1", "c-views", "product_view", 0, product_id="p1"),
        event("w1", "c-two", "product_view", 0, product_id="p1"),
        event("p1", "c-profile", "identify", 0, country="DE"),
        event("v2", "c-views", "product_view", 1 * MINUTE, product_id="p2"),
        event("v3", "c-views", "product_view", 2 * MINUTE, product_id="p3"),
        event("w2", "c-two", "product_view", 5 * MINUTE, product_id="p2"),
    ]
    scenario.produce(events)
    scenario.run_bounded(**{"job.generic_aggregates": generic, "job.models": generic})

    changes = scenario.read("changes")
    assert sorted(_changes(changes)) == [
        ("c-profile", "german_speaker", "enter", 0),
        ("c-views", "repeat_product_viewer", "enter", 2 * MINUTE),
        ("c-views", "repeat_product_viewer", "exit", 10 * MINUTE),  # v1 leaves the 10m window
    ]
    # Exactly the records the pure simulation of the function predicts (reasons, versions), in order
    # per customer.
    assert _by_customer(changes) == _by_customer(_simulated(events, models=generic == "true"))
    state = scenario.redis_state()
    # Why the job put each current member where it is, next to the membership (explain --live).
    assert state.pop("why:c-profile")["german_speaker"]["reason"] == "profile country = DE"
    assert state == {
        "cust:c-profile": {"german_speaker": T0},
        "members:german_speaker": [("c-profile", T0)],
        "ver:c-profile": {"german_speaker": T0},
        "ver:c-views": {"repeat_product_viewer": T0 + 10 * MINUTE},
    }
    ttl = scenario.redis().pttl(f"{scenario.prefix}cust:c-profile")
    assert 0 < ttl <= HOUR  # redis.default_ttl: the segment has no ttl of its own
    assert scenario.read("dlq") == [] and scenario.read("late") == []


def test_abandoned_cart_and_an_out_of_order_purchase_that_cancels_it(scenario: Scenario):
    events = [
        event("a1", "c-abandon", "cart_add", 0, cart_id="k1", cart_value=30),
        event("b1", "c-bought", "cart_add", 0, cart_id="k2", cart_value=30),
        event("f1", "c-after", "cart_add", 0, cart_id="k3", cart_value=30),
        event("o1", "c-other", "cart_add", 0, cart_id="k4", cart_value=30),
        event("o2", "c-other", "purchase", 5 * MINUTE, cart_id="k5", revenue=10),  # another cart
        event("b2", "c-bought", "page_view", 8 * MINUTE, url="/home"),
        # Arrives after the page view at 8m but happened at 5m, before the 15m deadline: cancels.
        event("b3", "c-bought", "purchase", 5 * MINUTE, cart_id="k2", revenue=30),
        event("f2", "c-after", "purchase", 20 * MINUTE, cart_id="k3", revenue=30),  # after the deadline
    ]
    scenario.produce(events)
    scenario.run_bounded()

    changes = scenario.read("changes")
    deadline = 15 * MINUTE
    assert sorted(_changes(changes)) == [
        ("c-abandon", "abandoned_cart", "enter", deadline),
        ("c-abandon", "abandoned_cart", "exit", deadline + 24 * HOUR),  # keep: 24h, ended by the final watermark
        ("c-after", "abandoned_cart", "enter", deadline),
        ("c-after", "abandoned_cart", "exit", 20 * MINUTE),  # the purchase ends the match
        ("c-other", "abandoned_cart", "enter", deadline),
        ("c-other", "abandoned_cart", "exit", deadline + 24 * HOUR),
    ]
    assert "c-bought" not in {k for k, _ in changes}
    assert _by_customer(changes) == _by_customer(_simulated(events))
    assert scenario.redis_state() == {
        "ver:c-abandon": {"abandoned_cart": T0 + deadline + 24 * HOUR},
        "ver:c-after": {"abandoned_cart": T0 + 20 * MINUTE},
        "ver:c-other": {"abandoned_cart": T0 + deadline + 24 * HOUR},
    }
    assert scenario.read("late") == []


def test_a_watermark_releasing_more_than_one_batch_makes_nothing_late(scenario: Scenario):
    """The JVM batcher releases held events when the watermark passes them. A batch that carried
    the new watermark before all of its batch key's released events were in it would make the
    segment function process instants that events still in the queue belong to, and find those
    late. One record per batch (which bounds the batches of records sent as they come, not a
    release), and the final watermark releasing everything at once, make that certain."""
    events = [
        event("a1", "c-abandon", "cart_add", 0, cart_id="k1", cart_value=30),
        event("v1", "c-abandon", "product_view", 1 * MINUTE, product_id="p1"),
        event("b1", "c-bought", "cart_add", 0, cart_id="k2", cart_value=30),
        event("b2", "c-bought", "page_view", 8 * MINUTE, url="/home"),
        event("b3", "c-bought", "purchase", 5 * MINUTE, cart_id="k2", revenue=30),
        event("v2", "c-abandon", "product_view", 2 * MINUTE, product_id="p2"),
        event("v3", "c-abandon", "product_view", 3 * MINUTE, product_id="p3"),
    ]
    scenario.produce(events)
    scenario.run_bounded(**{"job.batch_max_records": "1"})

    assert scenario.read("late") == []
    assert _by_customer(scenario.read("changes")) == _by_customer(_simulated(events))


def test_a_watermark_release_goes_to_python_with_that_watermark(scenario: Scenario):
    """Every event in a batch is at or before the watermark the batch carries, however many
    records a release holds: so the segment function applies them in the call that gets them.
    (Releases split into batches of job.batch_max_records once carried the previous watermark in
    all but the last; the segment function buffered those events in customer state and applied
    them in a second call, from a timer: 650k such calls over the 1M-event bench.)"""
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction
    from pyflink.table import StreamTableEnvironment

    from flink_jobs.core.loader import load_catalog
    from flink_jobs.flink.batcher import build_batches
    from flink_jobs.flink.segmentation_job import create_environment
    from flink_jobs.flink.sources import build_event_source, event_gate
    from flink_jobs.runtime.batching import decode_batch

    events = [event(f"e{i}", f"c-{i % 7}", "page_view", i * 1_000, url="/") for i in range(60)]
    scenario.produce(events)
    config = scenario.config(**{"job.batch_max_records": "1", "events.out_of_orderness": "5s"})
    env = create_environment(config)
    t_env = StreamTableEnvironment.create(env)

    class Inspect(KeyedProcessFunction):
        def process_element(self, value, ctx):
            if value[1]:  # not a marker
                times = [json.loads(r.value)["event_time"] for r in decode_batch(value[1])]
                yield value[0], value[2], json.dumps(times)

    gate = event_gate(config, load_catalog(RULES / "catalog.yaml"))
    batches = build_batches(build_event_source(t_env, config, gate), config, gate)
    out = batches.process(Inspect(), output_type=Types.TUPLE([Types.INT(), Types.LONG(), Types.STRING()]))
    with out.execute_and_collect() as rows:
        got = [(key, mark, json.loads(times)) for key, mark, times in rows]

    assert sorted(t for _, _, times in got for t in times) == sorted(e["event_time"] for e in events)
    ahead = [(mark, t) for _, mark, times in got for t in times if t > mark]
    assert ahead == [], f"{len(ahead)} events came in batches whose watermark is behind them"


def test_duplicates_are_ignored(scenario: Scenario):
    events = [
        event("d1", "c-dup", "product_view", 0),
        event("d1", "c-dup", "product_view", 0),
        event("d2", "c-dup", "product_view", 1 * MINUTE),
        event("d2", "c-dup", "product_view", 1 * MINUTE),  # without dedup: 4 views, a member
        event("x1", "c-three", "product_view", 0),
        event("x2", "c-three", "product_view", 1 * MINUTE),
        event("x3", "c-three", "product_view", 2 * MINUTE),
        event("x3", "c-three", "product_view", 2 * MINUTE),
        event("g1", "c-three", "page_view", 30 * MINUTE),
        event("x1", "c-three", "product_view", 0),  # a duplicate long after: still recognised
        event("p1", "c-de", "identify", 0, country="DE"),
        event("p1", "c-de", "identify", 0, country="DE"),
    ]
    scenario.produce(events)
    scenario.run_bounded()

    changes = scenario.read("changes")
    assert sorted(_changes(changes)) == [
        ("c-de", "german_speaker", "enter", 0),
        ("c-three", "repeat_product_viewer", "enter", 2 * MINUTE),
        ("c-three", "repeat_product_viewer", "exit", 10 * MINUTE),
    ]
    state = scenario.redis_state()
    # Why the job put each current member where it is, next to the membership (explain --live).
    assert state.pop("why:c-de")["german_speaker"]["reason"] == "profile country = DE"
    assert state == {
        "cust:c-de": {"german_speaker": T0},
        "members:german_speaker": [("c-de", T0)],
        "ver:c-de": {"german_speaker": T0},
        "ver:c-three": {"repeat_product_viewer": T0 + 10 * MINUTE},
    }
    # Duplicates are not late and not invalid: they are dropped, nothing else.
    assert scenario.read("late") == [] and scenario.read("dlq") == []


def test_late_event_goes_to_the_late_topic(scenario: Scenario):
    """Unbounded: the late event must arrive after the watermark has moved past it, so it is
    produced only once the job has visibly processed the earlier events."""
    first = [
        event("l1", "c-late", "product_view", 0),
        event("l2", "c-late", "product_view", 1 * MINUTE),
        event("l3", "c-late", "product_view", 2 * MINUTE),
        event("l4", "c-late", "page_view", 20 * MINUTE),  # watermark: 20m - 1m - 1ms
    ]
    late = event("l5", "c-late", "product_view", 3 * MINUTE)
    scenario.produce(first)
    job = scenario.start_unbounded(**{"events.out_of_orderness": "1m"})
    try:
        changes = scenario.read("changes", at_least=2, timeout=120)
        assert _changes(changes) == [
            ("c-late", "repeat_product_viewer", "enter", 2 * MINUTE),
            ("c-late", "repeat_product_viewer", "exit", 10 * MINUTE),
        ]
        scenario.produce([late])
        records = scenario.read("late", at_least=1, timeout=120)
    finally:
        job.cancel().result()
    assert len(records) == 1
    key, value = records[0]
    assert key == "c-late"
    assert value["event"] == late
    assert value["late_by_ms"] >= 7 * MINUTE  # the customer's time had reached at least 10m
    assert value["reason"].startswith("late: event_time 2026-01-01T10:03:00.000Z is ")
    assert value["reason"].endswith("beyond the allowed lateness of 0s")
    # Not applied: had it counted, the customer would have re-entered (3 views within 10m).
    assert len(scenario.read("changes")) == 2
    assert scenario.redis_state() == {"ver:c-late": {"repeat_product_viewer": T0 + 10 * MINUTE}}
    assert scenario.read("dlq") == []


def _first_change_without_checkpoints(scenario: Scenario, mode: str, out_of_orderness: str):
    """Runs the job unbounded with checkpoints off (so no sync marker comes) until the first
    change record; returns the change records and Redis as they are then."""
    job = scenario.start_unbounded(
        **{"events.out_of_orderness": out_of_orderness, "job.checkpoint_interval": "0", "job.python_execution_mode": mode}
    )
    try:
        changes = scenario.read("changes", at_least=1, timeout=120)
        # Redis is written before a held change is emitted, so it is there once the record is.
        return changes, scenario.redis_state()
    finally:
        job.cancel().result()


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_changes_held_while_catching_up_reach_redis_and_kafka_without_a_checkpoint(scenario: Scenario, mode: str):
    """Old event times mean the job is catching up, so changes are held for batched Redis writes
    (runtime.batch_engine.HOLD_SECONDS). With checkpoints off no sync marker comes either: the held changes
    must still go out, by the processing-time timer, Redis first and then the change topic."""
    scenario.produce([
        event("h1", "c-held", "product_view", 0),
        event("h2", "c-held", "product_view", 1 * MINUTE),
        event("h3", "c-held", "product_view", 2 * MINUTE),
        event("h4", "c-held", "page_view", 20 * MINUTE),  # moves the watermark past 2m
    ])
    changes, state = _first_change_without_checkpoints(scenario, mode, "1m")
    assert _changes(changes)[0] == ("c-held", "repeat_product_viewer", "enter", 2 * MINUTE)
    assert state["ver:c-held"]["repeat_product_viewer"] >= T0 + 2 * MINUTE


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_live_changes_reach_redis_and_kafka_without_a_checkpoint(scenario: Scenario, mode: str):
    """Event times near the clock mean the job is live: the changes of batch calls are held
    until the batcher's end marker after their release, then written to Redis in one pipeline
    and emitted (runtime.batch_engine.HOLD_SECONDS, flink/jvm/KeyGroupBatcher.java). With checkpoints off no sync
    marker comes: they must go out all the same, Redis first and then the change topic."""
    now = int(time.time() * 1000)
    views = [now - 10_000, now - 9_000, now - 8_000]
    scenario.produce(
        [event(f"l{i}", "c-live", "product_view", t - T0) for i, t in enumerate(views)]
        + [event("l9", "c-live", "page_view", now - T0)]  # moves the watermark past the views
    )
    changes, state = _first_change_without_checkpoints(scenario, mode, "1s")
    assert _changes(changes)[0] == ("c-live", "repeat_product_viewer", "enter", views[2] - T0)
    assert state["ver:c-live"]["repeat_product_viewer"] >= views[2]


def test_malformed_records_go_to_the_dead_letter_topic_with_their_reason(scenario: Scenario):
    records = [
        event("ok1", "c-ok", "identify", 0, country="DE"),
        b"not json",
        json.dumps({"event_id": "e", "customer_id": "", "event_type": "page_view", "event_time": T0}).encode(),
        json.dumps({"event_id": "e", "customer_id": "c", "event_type": "page_viewed", "event_time": T0}).encode(),
        json.dumps({"event_id": "e", "customer_id": "c", "event_type": "page_view", "event_time": 1_767_261_600}).encode(),
        json.dumps(
            {"event_id": "e", "customer_id": "c", "event_type": "page_view", "event_time": T0, "properties": {"url": "x" * 600}}
        ).encode(),
        b"\xff\xfe",
        json.dumps(
            {"event_id": "e", "customer_id": "c", "event_type": "cart_add", "event_time": T0, "properties": {"price": "9.99"}}
        ).encode(),
    ]
    scenario.produce(records, key=b"k")
    scenario.run_bounded(**{"events.max_event_bytes": "512"})

    # Dead letters of different customers need not keep the source order (records are batched
    # by customer): compare them in source order.
    dlq = sorted(scenario.read("dlq"), key=lambda kv: kv[1]["source"]["offset"])
    assert [(k, v["code"], v["reason"]) for k, v in dlq] == [
        ("k", "not_json", "not JSON: Expecting value at line 1 column 1"),
        ("k", "schema", "customer_id is empty"),
        (
            "k",
            "schema",
            "unknown event_type 'page_viewed'; expected one of: page_view, product_view, cart_add, cart_remove, "
            "checkout, purchase, session_start, identify",
        ),
        (
            "k",
            "event_time",
            "event_time 1970-01-21T10:54:21.600Z is before 2000-01-01 (looks like seconds since the epoch; send milliseconds)",
        ),
        ("k", "oversized", f"record is {len(records[5])} bytes, more than the limit of 512 bytes"),
        ("k", "encoding", "not UTF-8 text: invalid start byte at byte 0"),
        ("k", "schema", 'properties.price must be number or null (got a string: "9.99")'),
    ]
    topic = scenario.topics["events"]
    for (_, value), meta, raw in zip(dlq, scenario.produced[1:], records[1:]):
        assert value["source"] == {
            "topic": topic,
            "partition": 0,
            "offset": meta.offset,
            "timestamp": meta.timestamp,
            "key": "k",
        }
        assert value["payload_size"] == len(raw)
    assert [v.get("payload") for _, v in dlq[:4]] == [r.decode() for r in records[1:5]]
    assert dlq[4][1]["payload"] == records[5][:512].decode() and dlq[4][1]["payload_truncated"] is True
    assert dlq[5][1]["payload_base64"] == "//4="
    # The valid record around them went through.
    assert _changes(scenario.read("changes")) == [("c-ok", "german_speaker", "enter", 0)]
    assert scenario.redis_state()["cust:c-ok"] == {"german_speaker": T0}


def test_exactly_once_delivery_commits_the_change_records(scenario: Scenario):
    """Transactional Kafka sinks: records become visible (read_committed) when checkpoints
    complete, including the final checkpoint at the end of a bounded input."""
    events = [
        event("v1", "c-views", "product_view", 0),
        event("v2", "c-views", "product_view", 1 * MINUTE),
        event("v3", "c-views", "product_view", 2 * MINUTE),
    ]
    scenario.produce(events)
    scenario.produce([b"[]"], key=b"c-x")
    scenario.run_bounded(**{"job.delivery_guarantee": "exactly-once", "job.transactional_id_prefix": f"it-{scenario.name}"})
    assert _changes(scenario.read("changes")) == [
        ("c-views", "repeat_product_viewer", "enter", 2 * MINUTE),
        ("c-views", "repeat_product_viewer", "exit", 10 * MINUTE),
    ]
    assert [(k, v["code"]) for k, v in scenario.read("dlq")] == [("c-x", "not_object")]
