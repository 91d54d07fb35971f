"""Training features == streaming features for the same history.

The training pipeline takes its rows from ``flink_jobs.ml.datasets`` (a tidy, sorted replay
through an engine without rules). The stream runs the shipped rules, receives events out of order
within the bound and with duplicates, and hands ``model_features`` to the scorer at each instant.
Both must see the same numbers.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from flink_jobs import synthetic
from flink_jobs.core.durations import DAY, SECOND
from flink_jobs.core.engine import SegmentEngine
from flink_jobs.core.loader import load_rules
from flink_jobs.core.model import Event
from flink_jobs.core.runner import LocalRunner
from flink_jobs.ml import cdnow, datasets, replay

REPO = Path(__file__).resolve().parents[3]


def stream(events: list[Event], bound: int, seed: int) -> tuple[SegmentEngine, LocalRunner, replay.RecordingScorer]:
    """Arrival order as a producer might deliver it: shuffled within ``bound``, 5% sent twice."""
    rng = random.Random(seed)
    arrivals = []
    for e in events:
        arrivals.append((e.event_time + rng.randint(0, bound), rng.random(), e))
        if rng.random() < 0.05:
            arrivals.append((e.event_time + rng.randint(0, bound), rng.random(), e))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    scorer = replay.RecordingScorer()
    engine = SegmentEngine(load_rules([REPO / "rules"]), scorer=scorer)
    runner = LocalRunner(engine, out_of_orderness=bound)
    runner.feed_all(e for _, _, e in arrivals)
    assert runner.stats.late == 0 and runner.stats.duplicates > 0
    return engine, runner, scorer


def test_cdnow_training_rows_equal_the_streams_features():
    pytest.importorskip("lifetimes", reason="the CDNOW data ships in the train extra's lifetimes package")
    customers = {f"cdnow-{n:05d}" for n in range(1, 23_571, 80)}  # ~300 customers across the file
    training = datasets.cdnow_rows(customers)
    assert len(training.customers) == len(customers)
    assert any(row["purchases_365d"] > 3 for row in training.features)  # not only one-off buyers

    events = [e for e in datasets.cdnow_events(customers) if e.event_time <= datasets.CDNOW_CUTOFF]
    engine, runner, scorer = stream(events, bound=2 * DAY, seed=4)
    runner.advance(datasets.CDNOW_CUTOFF)
    streamed = [engine.model_features(runner.states[c], datasets.CDNOW_CUTOFF) for c in training.customers]
    assert streamed == training.features

    # What the scorer saw at each customer's last purchase == training features at that instant.
    last_seen = {cid: features for cid, features in scorer.calls}
    by_customer: dict[str, list[Event]] = {}
    for e in events:
        by_customer.setdefault(e.customer_id, []).append(e)
    for cid in sorted(by_customer)[:40]:
        history = sorted(by_customer[cid], key=Event.sort_key)
        assert replay.features_at(history, history[-1].event_time)[cid] == last_seen[cid], cid


def test_synthetic_training_rows_equal_what_the_stream_scores():
    config = synthetic.FeedConfig(customers=150, events=6_000, seed=5, personas={"browser": 0.5, "buyer": 0.3, "bot": 0.2})
    training = datasets.synthetic_rows(config)
    events, _ = datasets.synthetic_events(config)
    _, runner, scorer = stream(events, bound=3 * SECOND, seed=6)
    runner.advance(max(e.event_time for e in events))  # the end of input: process the last instants
    # Per customer, the stream scores the same instants with the same inputs; only the
    # interleaving of customers differs.
    want: dict[str, list[dict[str, float]]] = {}
    for cid, features in zip(training.customers, training.features):
        want.setdefault(cid, []).append(features)
    got: dict[str, list[dict[str, float]]] = {}
    for cid, features in scorer.calls:
        got.setdefault(cid, []).append(features)
    assert got == want
    assert training.bots.any() and max(f["events_5m"] for f in training.features) > 100


def test_cdnow_event_times_are_noon_utc_plus_minutes():
    pytest.importorskip("lifetimes", reason="the CDNOW data ships in the train extra's lifetimes package")
    events = datasets.cdnow_events({"cdnow-00002"})
    # Customer 2 bought twice on 1997-01-12: noon and one minute past.
    assert [(e.event_id, e.event_time % DAY, e.properties) for e in events[:2]] == [
        ("cdnow-3", 12 * 3600 * SECOND, {"revenue": 12.0, "items": 1}),
        ("cdnow-4", 12 * 3600 * SECOND + 60 * SECOND, {"revenue": 77.0, "items": 5}),
    ]
    # Every purchase stays on its own UTC day, so day-resolution features see the data's days.
    transactions = [t for t in cdnow.read_transactions() if t.customer == "00002"]
    assert [e.event_time // DAY for e in events] == [cdnow.day_start_ms(t.day) // DAY for t in transactions]
