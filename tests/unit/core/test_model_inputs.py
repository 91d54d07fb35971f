"""The model inputs the engine hands to the scorer (core/model_inputs.py)."""

from __future__ import annotations

from flink_jobs.core.durations import DAY, MINUTE, SECOND
from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.model import Event, RuleSet
from flink_jobs.core.model_inputs import MODEL_INPUT_NAMES
from flink_jobs.core.runner import LocalRunner

from .helpers import CATALOG

T0 = 1_000 * DAY  # a UTC midnight


def replay(events: list[Event], *, generic: bool = True) -> tuple[SegmentEngine, LocalRunner]:
    engine = SegmentEngine(RuleSet((), "empty", CATALOG), EngineConfig(generic_aggregates=generic))
    runner = LocalRunner(engine)
    runner.feed_all(events)
    runner.advance(max(e.event_time for e in events))  # apply the last instant too
    return engine, runner


def ev(n: int, event_type: str, t: int, **props) -> Event:
    return Event(f"e{n}", "c1", event_type, t, props)


def test_value_inputs_read_purchase_days():
    events = [
        ev(1, "purchase", T0 - 400 * DAY, revenue=999.0),  # beyond 365 days: ignored
        ev(2, "purchase", T0 - 100 * DAY, revenue=10.0),
        ev(3, "purchase", T0 - 20 * DAY, revenue=30.0),
        ev(4, "purchase", T0 - 20 * DAY + 1, revenue=20.0),
        ev(5, "purchase", T0 - 2 * DAY),  # no revenue: counted, not priced
    ]
    engine, runner = replay(events)
    now = T0 + 12 * 3600 * SECOND
    got = engine.model_features(runner.states["c1"], now)
    assert {k: got[k] for k in MODEL_INPUT_NAMES[:7]} == {
        "recency_days": 2.0,
        "tenure_days": 100.0,
        "purchases_30d": 3.0,
        "purchases_90d": 3.0,
        "purchases_365d": 4.0,
        "revenue_365d": 60.0,
        "avg_order_value_365d": 20.0,
    }


def test_no_purchase_reads_as_capped_recency():
    engine, runner = replay([ev(1, "page_view", T0)])
    got = engine.model_features(runner.states["c1"], T0)
    assert (got["recency_days"], got["tenure_days"], got["purchases_365d"], got["avg_order_value_365d"]) == (365.0, 0.0, 0.0, 0.0)


def test_behaviour_inputs_count_minutes():
    events = [ev(1, "session_start", T0)]
    events += [ev(10 + i, "page_view", T0 + i * SECOND) for i in range(30)]  # minute 0
    events += [ev(100, "product_view", T0 + 50 * MINUTE)]
    events += [ev(101, "product_view", T0 + 58 * MINUTE)]
    engine, runner = replay(events)
    got = engine.model_features(runner.states["c1"], T0 + 59 * MINUTE)
    assert {k: got[k] for k in MODEL_INPUT_NAMES[7:]} == {
        "events_5m": 1.0,
        "events_1h": 33.0,
        "active_minutes_1h": 3.0,
        "page_view_share_1h": 30 / 33,
        "product_views_1h": 2.0,
        "sessions_1h": 1.0,
    }
    # One minute later minute 0 has left the hour.
    later = engine.model_features(runner.states["c1"], T0 + 60 * MINUTE)
    assert (later["events_1h"], later["active_minutes_1h"], later["page_view_share_1h"]) == (2.0, 2.0, 0.0)


def test_busy_customer_probes_the_same_minutes_as_a_scan():
    # More than 60 minute buckets in state: the reader probes the hour instead of scanning.
    events = [ev(i, "page_view", T0 + i * MINUTE) for i in range(200)]
    engine, runner = replay(events)
    got = engine.model_features(runner.states["c1"], T0 + 199 * MINUTE)
    assert (got["events_5m"], got["events_1h"], got["active_minutes_1h"], got["page_view_share_1h"]) == (5.0, 60.0, 60.0, 1.0)


def test_without_generic_aggregates_there_are_no_inputs():
    engine, runner = replay([ev(1, "purchase", T0, revenue=5.0)], generic=False)
    assert engine.model_features(runner.states["c1"], T0) == {}


def test_behaviour_inputs_are_their_definitions_over_the_events():
    # A customer with many minutes of some types and few of others, read at instants within the
    # last hour of its activity, before its last events and after it: each input is what its
    # definition (MODEL_INPUTS) gives over the events themselves.
    import random

    rng = random.Random(11)
    types = ["page_view", "product_view", "cart_add", "session_start"]
    times = sorted(T0 + rng.randrange(0, 150 * MINUTE) for _ in range(600))
    events = [ev(i, rng.choice(types), t) for i, t in enumerate(times)]
    engine, runner = replay(events)
    state = runner.states["c1"]
    instants = [T0 + m * MINUTE + rng.randrange(MINUTE) for m in (90, 95, 120, 146, 149, 150, 170, 209, 220)]
    for now in instants:
        minute = now - now % MINUTE
        hour = [e for e in events if minute - 59 * MINUTE <= e.event_time < minute + MINUTE]
        n = len(hour)
        expected = {
            "events_5m": float(sum(1 for e in hour if e.event_time >= minute - 4 * MINUTE)),
            "events_1h": float(n),
            "active_minutes_1h": float(len({e.event_time // MINUTE for e in hour})),
            "page_view_share_1h": sum(1 for e in hour if e.event_type == "page_view") / n if n else 0.0,
            "product_views_1h": float(sum(1 for e in hour if e.event_type == "product_view")),
            "sessions_1h": float(sum(1 for e in hour if e.event_type == "session_start")),
        }
        got = engine.model_features(state, now)
        assert {k: got[k] for k in expected} == expected, now
    assert engine.model_features(state, instants[4])["active_minutes_1h"] > 30  # many minutes were read
