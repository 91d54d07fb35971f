"""The state cache: decoded customer states kept within a memory budget, and the size estimate
it is kept by (``state_memory``) against what Python allocates for decoded states."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.loader import load_rules
from flink_jobs.core.model import Event
from flink_jobs.core.runner import LocalRunner
from flink_jobs.core.scoring import FixedScorer
from flink_jobs.core.state import CustomerState, decode_state, encode_state, state_memory
from flink_jobs.runtime.state_cache import FIRST_GUESS, MAX_EVICTIONS_PER_ADD, StateCache
from flink_jobs.synthetic import FeedConfig, generate_feed

RULES = Path(__file__).resolve().parents[3] / "rules"


@pytest.fixture(scope="module")
def stored_states() -> list[bytes]:
    """States of every rule in rules/ over the synthetic feed, encoded as Flink keeps them."""
    feed = FeedConfig(customers=400, events=12_000, journeys_per_second=10, seed=3)
    events = []
    for record in generate_feed(feed):
        if record.kind != "malformed":
            d = json.loads(record.value)
            events.append(Event(d["event_id"], d["customer_id"], d["event_type"], d["event_time"], d["properties"]))
    scorer = FixedScorer(default={"purchase_propensity": 0.5, "anomaly_score": 0.1})
    runner = LocalRunner(SegmentEngine(load_rules([str(RULES)]), EngineConfig(), scorer=scorer), out_of_orderness=5000)
    runner.feed_all(events)
    runner.advance(events[-1].event_time + 10_000)
    return [encode_state(state) for state in runner.states.values()]


def test_state_memory_is_close_to_what_decoding_allocates(stored_states):
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        decoded = [decode_state(data) for data in stored_states]
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    allocated -= len(decoded) * 8  # the list's own pointers
    estimated = sum(map(state_memory, decoded))
    assert len(decoded) > 300
    assert 0.9 < estimated / allocated < 1.1, (estimated, allocated)
    # States differ in size several times over: why the cache's budget is bytes, not states.
    sizes = sorted(map(state_memory, decoded))
    assert sizes[-1] > 2 * sizes[len(sizes) // 2]


def test_state_memory_counts_what_a_state_owns_and_skips_what_it_shares():
    small, big = CustomerState("c1"), CustomerState("c1")
    big.members = {"segment_a": 1_700_000_000_000}
    big.timers = {1_700_000_000_000 + i: 1 for i in range(50)}
    assert state_memory(big) > state_memory(small) + 50 * 32  # timers: ints and the dict's table
    shared = CustomerState("c1")
    shared.eligible_since = {"segment_a": 1}  # a small int: preallocated, like the interned key
    assert 0 < state_memory(shared) - state_memory(small) < 400  # the dict alone


def _state(customer_id: str, timers: int = 0) -> CustomerState:
    state = CustomerState(customer_id)
    state.timers = {10**15 + i: 1 for i in range(timers)}
    return state


def test_holds_as_many_states_as_its_budget_takes_at_their_measured_size():
    one = state_memory(_state("c0"))
    cache = StateCache(100 * one, sample_every=1)
    assert cache.capacity == 100 * one // FIRST_GUESS  # before any sample: the first guess
    for i in range(300):
        cache.add(f"c{i}", _state(f"c{i}"), new=False)
    assert cache.state_bytes == pytest.approx(one, rel=0.01)  # ids of 2-4 characters
    assert len(cache) == cache.capacity and 99 <= cache.capacity <= 100
    assert cache.bytes == pytest.approx(100 * one, rel=0.02)
    assert "c199" not in cache and "c201" in cache and "c299" in cache  # the least recent left
    assert (cache.misses, cache.new, cache.hits) == (300, 0, 0)
    assert cache.evictions == 300 - len(cache)


def test_a_lookup_keeps_a_state_and_counts_a_hit():
    one = state_memory(_state("c0"))
    cache = StateCache(10 * one, sample_every=1)
    for i in range(10):
        cache.add(f"c{i}", _state(f"c{i}"), new=False)
    assert cache.misses == 10 and cache.capacity == 10 and len(cache) == 10
    assert cache.get("c0") is not None and cache.hits == 1  # now the most recent
    assert cache.get("nobody") is None and cache.hits == 1  # the caller brings it with add
    assert cache.peek("c1") is not None and cache.hits == 1  # not a lookup
    cache.add("cx", _state("cx"), new=True)
    assert cache.new == 1
    assert "c0" in cache and "c1" not in cache  # c1 was the least recent, peeked or not
    cache.hit()  # found elsewhere (a changed state not written yet)
    assert cache.hits == 2


def test_grown_states_shrink_the_cache_a_few_at_a_time():
    small = state_memory(_state("c000"))
    cache = StateCache(200 * small, sample_every=1, window=1)  # each sample replaces the estimate
    for i in range(200):  # ids of one length: states of one size
        cache.add(f"c{i:03}", _state(f"c{i:03}"), new=False)
    assert len(cache) == 200
    big = _state("big", timers=40)
    cache.add("big", big, new=False)  # the estimate jumps: capacity falls
    assert cache.capacity == 200 * small // state_memory(big) < 100
    assert len(cache) == 201 - MAX_EVICTIONS_PER_ADD  # not all at once
    for i in range(200):
        cache.add(f"d{i}", big, new=False)
    assert len(cache) == cache.capacity


def test_samples_one_state_in_so_many():
    cache = StateCache(1000 * FIRST_GUESS, sample_every=50)
    big = _state("big", timers=40)
    cache.add("first", big, new=False)  # the first one found is measured
    assert cache.state_bytes == state_memory(big)
    for i in range(49):
        cache.add(f"c{i}", _state(f"c{i}"), new=False)
    assert cache.state_bytes == state_memory(big)  # 49 not measured
    cache.get("c0")  # the 50th
    assert cache.state_bytes < state_memory(big)


def test_a_zero_budget_keeps_nothing_but_counts():
    cache = StateCache(0)
    cache.add("c1", _state("c1"), new=True)
    cache.add("c2", _state("c2"), new=False)
    assert len(cache) == 0 and cache.get("c1") is None
    assert (cache.new, cache.misses, cache.evictions) == (1, 1, 0)
    with pytest.raises(ValueError):
        StateCache(-1)
